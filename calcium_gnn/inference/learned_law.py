"""What a learned coupling learned: its message over the states the data visit, in closed form.

The learned coupling (:class:`calcium_gnn.nn.coupling.CouplingConv`) sends, along an edge ``j -> i``,
``k [w_ij Delta + phi(Delta, [z_j,] u~, l~) - phi(0, [z_j,] u~, l~)]``. Per unit weight that is the
flux

.. math::
    q_{ij} = k \\Big(\\Delta_{ij} + \\frac{\\phi(\\Delta_{ij}, \\dots) - \\phi(0, \\dots)}{w_{ij}}\\Big)
    \\quad (\\text{1/s} \\times \\text{calcium}),

comparable with a true law's ``k f(Delta, z_j)`` (:mod:`calcium_gnn.data.zoo_laws`) whatever the split
between ``k`` and the network. :class:`MessageSamples` holds ``q`` at (edge, frame) pairs the fitted
simulation visits; :func:`symbolic_summary` fits it over a small library of terms of ``Delta`` and
``z_j``:

===============  ==============================================  ======================================
term             column                                           law it stands for
===============  ==============================================  ======================================
``linear``       ``Delta``                                        the paper's eq. (3)
``saturating``   ``sigma tanh(Delta / sigma)``, best ``sigma``    a saturating junction flux
``threshold``    ``Delta S((z_j - theta) / epsilon)``, best       calcium-induced release above
                 ``theta``, ``epsilon`` (``S`` the logistic)     ``theta``
``rectifying``   ``min(Delta, 0)``                                a rectifying junction
``product``      ``Delta z_j``                                    a conductance growing with the level
``cubic``        ``Delta^3``                                      a smooth odd nonlinearity
===============  ==============================================  ======================================

The fit is a best-subset regression of at most :data:`MAX_TERMS` terms (sparse by construction, like
SINDy's thresholded least squares but exhaustive over so small a library). It starts from the linear
term alone; the best nonlinear single term replaces it, and then the best pair replaces what was
chosen, only when it removes at least :data:`MIN_GAIN` of what the choice left unexplained (relative)
and :data:`MIN_EXPLAINED_GAIN` of the whole (absolute): a message the linear law explains stays
linear. The *leading term* is the nonlinear term of the chosen subset with the largest contribution
(RMS of coefficient x column), or ``linear`` when the subset is the linear term alone; it names the
law (:data:`TERM_LAWS`). ``explained`` is the fraction of the message's variance about zero
(``1 - RSS / sum q^2``) the summary accounts for.

A learned node term ``nu(y_i)`` (``model.node_term``) is summarised apart
(:func:`node_term_summary`): its line ``nu ~ a - delta (y - c)`` gives a leak rate
``delta``, and the term names a leak when ``delta > 0`` and the line explains at least :data:`MIN_GAIN` of
``nu``. A term smaller (RMS) than a leak at :data:`LEAK_MIN_SHARE` of the effective coupling
names nothing: its law is ``"none"``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from calcium_gnn.errors import ConfigError

#: library term -> the law it names
TERM_LAWS: dict[str, str] = {
    "linear": "linear",
    "saturating": "saturating",
    "threshold": "threshold",
    "rectifying": "rectifying",
    "product": "level-dependent conductance",
    "cubic": "odd nonlinearity",
}
#: formula of each term, for reports
TERM_FORMULAS: dict[str, str] = {
    "linear": "Delta",
    "saturating": "sigma tanh(Delta/sigma)",
    "threshold": "Delta S((z_j - theta)/epsilon)",
    "rectifying": "min(Delta, 0)",
    "product": "Delta z_j",
    "cubic": "Delta^3",
}
MAX_TERMS: int = 2
#: a second term must remove this fraction of what the best single term left unexplained...
MIN_GAIN: float = 0.5
#: ...and this fraction of the whole message
MIN_EXPLAINED_GAIN: float = 0.01
#: ``sigma`` candidates, as fractions of the 95th percentile of ``|Delta|``
SIGMA_GRID: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
#: ``theta`` candidates: these quantiles of the visited ``z_j``; ``epsilon`` a fraction of their range
THETA_QUANTILES: tuple[float, ...] = tuple(np.round(np.linspace(0.05, 0.95, 19), 2))
THRESHOLD_WIDTHS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
#: a node term names a leak only when its rate is at least this fraction of the effective coupling
#: (per unit weight; the weights have mean 1): the law check's materiality share
#: (``evaluation.diagnostics.law_rejection_share``)
LEAK_MIN_SHARE: float = 0.02


@dataclass
class MessageSamples:
    """The learned flux per unit weight at visited states (module docstring); all arrays (S,).

    Attributes:
        delta: ``Delta = z_j - y_i``; source: ``z_j``; learned: ``q``.
        true: ``k f(Delta, z_j)`` of the generating law where known, else None; true_law: its name.
        linear_k: ``k`` of the linear fit the learned law started from (NaN if none): its flux is
            ``linear_k Delta``.
        weight: the sampled edges' ``w_ij`` (None: all 1); the summary and the comparisons weigh each
            sample by ``w^2``, that is, they compare messages ``w q``, not fluxes per unit weight.
    """

    delta: np.ndarray
    source: np.ndarray
    learned: np.ndarray
    true: np.ndarray | None = None
    true_law: str | None = None
    linear_k: float = float("nan")
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.delta)
        arrays = [self.source, self.learned] + [a for a in (self.true, self.weight) if a is not None]
        if any(len(a) != n for a in arrays):
            raise ConfigError("message samples",
                              "delta, source, learned (and true, weight) must have one length")


def _explained(target: np.ndarray, fitted: np.ndarray, weight: np.ndarray | None = None) -> float:
    w2 = 1.0 if weight is None else weight**2
    total = float(np.sum(w2 * target**2))
    return 1.0 - float(np.sum(w2 * (target - fitted) ** 2)) / total if total > 0 else 0.0


def _fit(columns: list[np.ndarray], target: np.ndarray, weight: np.ndarray | None = None
         ) -> tuple[np.ndarray, float]:
    design = np.stack(columns, axis=1)
    w = np.ones_like(target) if weight is None else weight
    coef, *_ = np.linalg.lstsq(design * w[:, None], target * w, rcond=None)
    return coef, _explained(target, design @ coef, weight)


def library(delta: np.ndarray, source: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None
            ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The library's columns (module table) at the samples, with ``sigma`` and ``theta`` chosen by a grid
    search (each with the linear term beside it, on ``target``).

    Returns:
        ``(columns, constants)``: name -> (S,) column; ``{"sigma", "theta", "epsilon"}``.
    """
    delta, source = np.asarray(delta, dtype=float), np.asarray(source, dtype=float)
    scale = float(np.quantile(np.abs(delta), 0.95)) or 1.0
    low, high = float(np.quantile(source, 0.01)), float(np.quantile(source, 0.99))

    def best(term: str, candidates: list[dict[str, float]]) -> dict[str, float]:
        return max(candidates, key=lambda c: _fit([delta, term_columns(delta, source, c)[term]], target,
                                                  weight)[1])

    neutral = {"sigma": 1.0, "theta": 0.0, "epsilon": 1.0}
    sigma = best("saturating", [{**neutral, "sigma": f * scale} for f in SIGMA_GRID])["sigma"]
    gate = best("threshold", [{**neutral, "theta": float(np.quantile(source, q)),
                               "epsilon": f * max(high - low, 1e-12)}
                              for q in THETA_QUANTILES for f in THRESHOLD_WIDTHS])
    constants = {"sigma": sigma, "theta": gate["theta"], "epsilon": gate["epsilon"]}
    return term_columns(delta, source, constants), constants


def term_columns(delta: np.ndarray, source: np.ndarray, constants: dict[str, float]) -> dict[str, np.ndarray]:
    """The library's columns (module table) at ``(Delta, z_j)`` for given ``sigma``, ``theta``,
    ``epsilon``."""
    delta, source = np.asarray(delta, dtype=float), np.asarray(source, dtype=float)
    sigma, theta, epsilon = constants["sigma"], constants["theta"], constants["epsilon"]
    return {
        "linear": delta,
        "saturating": sigma * np.tanh(delta / sigma),
        "threshold": delta * 0.5 * (1.0 + np.tanh(0.5 * (source - theta) / epsilon)),
        "rectifying": np.minimum(delta, 0.0),
        "product": delta * source,
        "cubic": delta**3,
    }


@dataclass
class SymbolicSummary:
    """A sparse closed form of a learned message (module docstring).

    Attributes:
        terms: chosen term -> coefficient (the formula is ``sum_t c_t column_t``).
        explained: fraction of the message's variance about zero it explains.
        leading: the leading term's name; law: the law it names (:data:`TERM_LAWS`).
        constants: ``sigma``, ``theta``, ``epsilon`` of the parametrised terms.
        single_term: each term alone -> its explained fraction (the evidence for the choice).
    """

    terms: dict[str, float]
    explained: float
    leading: str
    law: str
    constants: dict[str, float]
    single_term: dict[str, float]

    def formula(self) -> str:
        """``q ~ c1 term1 + c2 term2`` with the constants of parametrised terms."""
        parts = [f"{c:+.4g} {TERM_FORMULAS[name]}" for name, c in self.terms.items()]
        extra = [f"{n}={v:.3g}" for n, v in self.constants.items()
                 if (n == "sigma" and "saturating" in self.terms)
                 or (n in ("theta", "epsilon") and "threshold" in self.terms)]
        return "q ~ " + " ".join(parts) + (f"  ({', '.join(extra)})" if extra else "")

    def predict(self, delta: np.ndarray, source: np.ndarray) -> np.ndarray:
        """The summary's message per unit weight at ``(Delta, z_j)``."""
        columns = term_columns(delta, source, self.constants)
        return sum((c * columns[name] for name, c in self.terms.items()), np.zeros(np.shape(delta)))

    def as_results(self) -> dict[str, Any]:
        """The ``results.json`` form."""
        return {"terms": dict(self.terms), "formula": self.formula(), "explained": self.explained,
                "leading_term": self.leading, "law": self.law, "constants": dict(self.constants),
                "single_term_explained": dict(self.single_term)}


def symbolic_summary(delta: np.ndarray, source: np.ndarray, message: np.ndarray,
                     weight: np.ndarray | None = None) -> SymbolicSummary:
    """Best-subset fit of ``message`` (S,) over the library (module docstring).

    ``weight`` (S,): the edges' ``w_ij``. The fit is then weighted least squares with weights ``w^2``,
    i.e. ordinary least squares of the message itself, ``w q``: a learned correction divided by a
    small weight (a short shared border) would otherwise swamp the flux per unit weight.

    Raises:
        ConfigError: fewer than 10 samples, or a message that is zero everywhere.
    """
    message = np.asarray(message, dtype=float)
    if message.size < 10 or not np.any(message):
        raise ConfigError("symbolic summary", f"need >= 10 samples of a non-zero message, got {message.size}")
    columns, constants = library(delta, source, message, weight)
    single = {name: _fit([col], message, weight)[1] for name, col in columns.items()}
    chosen, explained = ("linear",), single["linear"]

    def better(value: float) -> bool:
        gain = value - explained
        return gain >= MIN_EXPLAINED_GAIN and gain >= MIN_GAIN * (1.0 - explained)

    other = max((n for n in columns if n != "linear"), key=single.get)
    if better(single[other]):
        chosen, explained = (other,), single[other]
    pairs = {pair: _fit([columns[n] for n in pair], message, weight)[1]
             for pair in itertools.combinations(columns, MAX_TERMS)}
    pair = max(pairs, key=pairs.get)
    if better(pairs[pair]):
        chosen = pair
    coef, explained = _fit([columns[n] for n in chosen], message, weight)
    terms = {name: float(c) for name, c in zip(chosen, coef, strict=True)}
    nonlinear = [n for n in chosen if n != "linear"]
    leading = max(nonlinear, key=lambda n: abs(terms[n]) * float(np.sqrt(np.mean(columns[n] ** 2)))) \
        if nonlinear else "linear"
    return SymbolicSummary(terms, float(explained), leading, TERM_LAWS[leading], constants, single)


def slope(delta: np.ndarray, flux: np.ndarray, weight: np.ndarray | None = None) -> float:
    """The effective coupling ``sum w^2 Delta q / sum w^2 Delta^2``: the ``k`` of the linear law whose
    message comes closest to the learned one at the samples. For a learned law this, not the layer's
    ``k``, is its coupling: the network can carry part of the linear flux, so the layer's ``k`` alone is
    not identified."""
    delta, flux = np.asarray(delta, dtype=float), np.asarray(flux, dtype=float)
    w2 = np.ones_like(delta) if weight is None else np.asarray(weight, dtype=float) ** 2
    denominator = float(np.sum(w2 * delta * delta))
    return float(np.sum(w2 * delta * flux)) / denominator if denominator > 0 else float("nan")


@dataclass
class NodeTermSummary:
    """What a learned node term ``nu(y)`` does at the levels the modelled cells visit (module docstring).

    Attributes:
        leak_rate: ``delta`` of the line ``nu ~ a - delta (y - c)`` (1/s; > 0 pulls a cell back toward
            lower levels).
        explained: fraction of ``nu``'s variance (about its mean) that the line explains.
        rms: root mean square of ``nu`` about its mean at the samples (level / s).
        law: ``"leak"``, ``"none"`` (``nu`` smaller than a leak at :data:`LEAK_MIN_SHARE` of the coupling
            would be: the fit did not use it) or ``"nonlinear node term"`` (a term the line does not
            describe, or one that pushes away from the centre level).
        true_leak_rate: the generating law's ``delta`` where known (0 for a law without a leak), else None.
        level, flux: the (S,) samples ``y``, ``nu(y)`` summarised (for the figure; not in results.json).
    """

    leak_rate: float
    explained: float
    rms: float
    law: str
    true_leak_rate: float | None = None
    level: np.ndarray | None = None
    flux: np.ndarray | None = None

    def as_results(self) -> dict[str, Any]:
        out = {"leak_rate": self.leak_rate, "explained": self.explained, "rms": self.rms, "law": self.law,
               "formula": f"nu ~ const {0.0 - self.leak_rate:+.4g} (y - c)"}
        if self.true_leak_rate is not None:
            out["true_leak_rate"] = self.true_leak_rate
        return out


def node_term_summary(level: np.ndarray, flux: np.ndarray, center: float, effective_k: float,
                      true_leak_rate: float | None = None) -> NodeTermSummary:
    """Summarise a learned node term from (S,) sampled levels ``y`` and its values ``nu(y)``.

    The line ``nu ~ a - delta (y - c)`` is fitted with its intercept ``a`` (a constant is a share of the
    feeds); ``explained`` and ``rms`` concern ``nu`` about its mean. ``center``: the levels' centre
    ``c``; ``effective_k``: the learned message's coupling (:func:`slope`), against which a leak must be
    :data:`LEAK_MIN_SHARE` or more.
    """
    level = np.asarray(level, dtype=float)
    offset = level - float(center)
    flux = np.asarray(flux, dtype=float)
    varying = flux - flux.mean() if flux.size else flux  # a constant is a feed's share, not the node's
    rms = float(np.sqrt(np.mean(varying**2))) if flux.size else 0.0
    if rms == 0.0 or not np.any(offset - offset.mean()):
        return NodeTermSummary(0.0, 0.0, rms, "none", true_leak_rate, level, flux)
    design = np.stack([np.ones_like(offset), offset], axis=1)
    coef, *_ = np.linalg.lstsq(design, flux, rcond=None)
    rate = -float(coef[1])
    explained = _explained(varying, design @ coef - flux.mean())
    # smaller than a leak at LEAK_MIN_SHARE of the coupling would be, at the same levels: negligible
    floor = LEAK_MIN_SHARE * abs(effective_k) * float(np.sqrt(np.mean(offset**2)))
    if not (np.isfinite(floor) and rms >= floor):
        law = "none"
    else:
        law = "leak" if rate > 0 and explained >= MIN_GAIN else "nonlinear node term"
    return NodeTermSummary(rate, float(explained), rms, law, true_leak_rate, level, flux)


@dataclass
class LearnedLaw:
    """A learned coupling's message samples and their symbolic summary (the ``learned_law`` result),
    and the summary of its node term where it has one."""

    samples: MessageSamples
    summary: SymbolicSummary
    node: NodeTermSummary | None = None

    @classmethod
    def from_samples(cls, samples: MessageSamples, node: NodeTermSummary | None = None) -> LearnedLaw:
        return cls(samples, symbolic_summary(samples.delta, samples.source, samples.learned, samples.weight),
                   node)

    def as_results(self) -> dict[str, Any]:
        """``results.json`` block ``learned_law``: the summary, the effective coupling and, with the truth,
        how close the learned and the linear fluxes come to the true one
        (``1 - sum (q - q_true)^2 / sum q_true^2``)."""
        s = self.samples
        out: dict[str, Any] = {"n_samples": int(len(s.delta)), "summary": self.summary.as_results(),
                               "effective_k": slope(s.delta, s.learned, s.weight)}
        if s.true is not None and np.any(s.true):
            out["true_law"] = s.true_law
            out["true_effective_k"] = slope(s.delta, s.true, s.weight)
            out["learned_matches_true"] = _explained(s.true, s.learned, s.weight)
            if np.isfinite(s.linear_k):
                out["linear_matches_true"] = _explained(s.true, s.linear_k * s.delta, s.weight)
        if self.node is not None:
            out["node_term"] = self.node.as_results()
        return out
