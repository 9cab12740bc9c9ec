"""Named nonlinear coupling laws: a junction conductance of a few parameters, each with a meaning.

The learned conductance of :class:`~calcium_gnn.nn.coupling.CouplingConv` (``message_form="conductance"``)
is a network; these are the closed forms a biologist would test instead, each a hypothesis about the
junction. The message from neighbour ``j`` to cell ``i`` is ``k w_ij Delta_ij c(Delta_ij, z_j)`` with
``Delta_ij = z_j - y_i`` and

=================  ==================================================  =====================================
law                conductance ``c`` (> 0)                             flux per unit weight ``Delta c``
=================  ==================================================  =====================================
``saturating``     ``tanh(Delta / sigma) / (Delta / sigma)``           ``sigma tanh(Delta / sigma)``: a
                                                                       junction flux that saturates
``threshold``      ``1 + a S((z_j - theta) / epsilon)``, ``S`` the     calcium-induced release: the
                   logistic function                                   conductance rises ``(1 + a)``-fold
                                                                       once the sender passes ``theta``
``rectifying``     ``1`` for ``Delta > 0``, ``r`` for ``Delta < 0``    ``max(Delta, 0) + r min(Delta, 0)``:
                                                                       a junction that passes calcium into a
                                                                       cell more (``r < 1``) or less readily
                                                                       than out
=================  ==================================================  =====================================

The layer sees levels standardised by the training window's centre ``c_0`` and scale ``s``
(``hat Delta = Delta / s``, ``hat z = (z - c_0) / s``), so the parameters live on that scale and are
reported back in level units (:meth:`NamedConductance.parameters_in_levels`). Each is a raw value
``rho`` (zero at construction) through a fixed start and the conductance gain ``G``, the same
preconditioner as the network's (:class:`~calcium_gnn.nn.coupling.CouplingConv`):

- saturating: ``b = SATURATION_START + G rho_b``, ``sigma = s / |b|`` (``c`` is even in ``b``). The start
  is a mild saturation: at ``b = 0`` the gradient in ``b`` vanishes, and a fit would never leave it.
- threshold: ``a = A_START exp(G rho_a)``, ``hat theta = THETA_START + G rho_theta``,
  ``hat epsilon = EPSILON_FLOOR + (EPSILON_START - EPSILON_FLOOR) exp(G rho_epsilon)`` (a floor: a gate
  sharper than the frames can resolve leaves ``theta`` without a gradient). A small ``a`` keeps the
  start near the linear law while the gradient in ``theta`` and ``epsilon`` is not zero.
- rectifying: ``r = exp(G rho_r)``, 1 at the start: the linear law, with a gradient in ``r`` wherever
  calcium leaves a cell.

All three conductances are positive, so, as for the learned conductance, calcium flows down its
gradient and the ODE obeys a maximum principle: a fitted law cannot blow up between frames it was not
fitted on (given an integration step inside RK4's stability limit).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from calcium_gnn.errors import GraphError

#: the named laws and their parameters (level units, as :mod:`calcium_gnn.data.zoo_laws` names them)
NAMED_LAWS: dict[str, tuple[str, ...]] = {
    "saturating": ("sigma",),
    "threshold": ("a", "theta", "epsilon"),
    "rectifying": ("r",),
}
#: saturating: the start's ``b = s / sigma`` (``sigma`` = 2 standard deviations of the levels)
SATURATION_START: float = 0.5
#: threshold: the start's gain ``a``, threshold ``theta`` (standard deviations above the levels' centre)
#: and width ``epsilon`` (standard deviations)
A_START: float = 0.1
THETA_START: float = 1.0
EPSILON_START: float = 0.25
EPSILON_FLOOR: float = 0.02
#: below this ``|b Delta^|`` the saturating conductance uses its series ``1 - x^2 / 3`` (no 0 / 0)
SERIES_BELOW: float = 1e-4
#: saturating: below this ``|Delta|_99 / sigma`` the flux is within 8 % of linear (``tanh(0.5) / 0.5``)
#: wherever the data are, so ``sigma`` is not identified (only that it is large)
SATURATION_VISIBLE: float = 0.5
#: the quantiles of the visited differences and sending levels that the identification checks use
VISITED_QUANTILES: tuple[float, float] = (0.01, 0.99)

#: data-derived starts (:func:`visited_starts`): saturation at these quantiles of the visited ``|Delta|``,
#: release thresholds at these quantiles of the visited sending levels (gain ``VISITED_A``, width
#: ``EPSILON_START`` standard deviations), rectification ratios on both sides of 1
VISITED_SIGMA_QUANTILES: tuple[float, ...] = (0.5, 0.9)
VISITED_THETA_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)
VISITED_A: float = 1.0
VISITED_R: tuple[float, ...] = (0.3, 3.0)

#: above this many visited values the quantiles are taken on an evenly strided subsample
#: (``torch.quantile`` refuses inputs above 2^24 values: 10,000 cells x 6 edges x 300 frames is 18M)
QUANTILE_SAMPLE: int = 1_000_000

#: one line per law for results.json ``law.terms``
NAMED_LAW_TERMS: dict[str, str] = {
    "saturating": "eq. 3 with a saturating junction flux: w sigma tanh((z_j - y_i) / sigma)",
    "threshold": "eq. 3 with calcium-induced release: w (z_j - y_i) (1 + a S((z_j - theta) / epsilon))",
    "rectifying": "eq. 3 with a rectifying junction: w (max(z_j - y_i, 0) + r min(z_j - y_i, 0))",
}


def visited_quantiles(values: Tensor, quantiles: tuple[float, ...]) -> list[float]:
    """Quantiles of visited values (any shape), on an evenly strided subsample above
    :data:`QUANTILE_SAMPLE` values."""
    flat = values.reshape(-1).double()
    if flat.numel() > QUANTILE_SAMPLE:
        flat = flat[:: -(-flat.numel() // QUANTILE_SAMPLE)]
    q = torch.tensor(quantiles, dtype=flat.dtype, device=flat.device)
    return [float(v) for v in torch.quantile(flat, q)]


class NamedConductance(nn.Module):
    """The conductance ``c`` of a named law (module table) on standardised levels.

    Args:
        law: one of :data:`NAMED_LAWS`.
        gain: ``G`` (module docstring), > 0.

    Shapes:
        - **input:** ``delta_hat`` (E, B) standardised differences, ``source_hat`` (E, B) standardised
          sender levels (needed by ``threshold`` only).
        - **output:** ``c`` (E, B) > 0.
    """

    def __init__(self, law: str, gain: float = 1.0) -> None:
        super().__init__()
        if law not in NAMED_LAWS:
            raise GraphError("message_form", f"unknown named law {law!r} (use one of {tuple(NAMED_LAWS)})")
        if not (math.isfinite(gain) and gain > 0):
            raise GraphError("conductance_gain", f"must be finite and > 0, got {gain!r}")
        self.law = law
        self.gain = float(gain)
        #: the raw parameters ``rho`` (module docstring), zero at the start
        self.raw = nn.Parameter(torch.zeros(len(NAMED_LAWS[law]), dtype=torch.float64))

    def reset_parameters(self) -> None:
        """Back to the start (module docstring)."""
        with torch.no_grad():
            self.raw.zero_()

    def standardised(self) -> dict[str, Tensor]:
        """The parameters on the standardised scale: ``b``; ``a``, ``theta``, ``epsilon``; ``r``."""
        rho = self.gain * self.raw
        if self.law == "saturating":
            return {"b": SATURATION_START + rho[0]}
        if self.law == "threshold":
            return {"a": A_START * torch.exp(rho[0]), "theta": THETA_START + rho[1],
                    "epsilon": EPSILON_FLOOR + (EPSILON_START - EPSILON_FLOOR) * torch.exp(rho[2])}
        return {"r": torch.exp(rho[0])}

    def forward(self, delta_hat: Tensor, source_hat: Tensor | None = None) -> Tensor:
        p = {name: v.to(delta_hat.dtype) for name, v in self.standardised().items()}
        if self.law == "saturating":
            x = p["b"] * delta_hat
            small = x.abs() < SERIES_BELOW
            safe = torch.where(small, torch.ones_like(x), x)
            return torch.where(small, 1.0 - x * x / 3.0, torch.tanh(safe) / safe)
        if self.law == "threshold":
            if source_hat is None:
                raise GraphError("source", "the threshold law needs the sending cells' levels z_j")
            return 1.0 + p["a"] * torch.sigmoid((source_hat - p["theta"]) / p["epsilon"])
        return torch.where(delta_hat > 0, torch.ones_like(delta_hat), p["r"].expand_as(delta_hat))

    @torch.no_grad()
    def parameters_in_levels(self, center: float, scale: float) -> dict[str, float]:
        """The law's parameters in level units (:data:`NAMED_LAWS` names), given the standardisation's
        centre ``c_0`` and scale ``s``: ``sigma = s / |b|``; ``theta = c_0 + s theta^``,
        ``epsilon = s epsilon^``; ``a`` and ``r`` have no unit."""
        p = {name: float(v) for name, v in self.standardised().items()}
        if self.law == "saturating":
            return {"sigma": scale / abs(p["b"]) if p["b"] != 0 else math.inf}
        if self.law == "threshold":
            return {"a": p["a"], "theta": center + scale * p["theta"], "epsilon": scale * p["epsilon"]}
        return {"r": p["r"]}

    @torch.no_grad()
    def set_parameters_in_levels(self, values: dict[str, float], center: float, scale: float) -> None:
        """Set the law from its parameters in level units, the inverse of :meth:`parameters_in_levels`
        (a hypothesis to simulate, or a fit's start).

        Raises:
            GraphError: a parameter of the law is missing, or outside its range (``sigma``, ``a``,
                ``r``, ``scale`` > 0; ``epsilon`` above the floor ``EPSILON_FLOOR scale``).
        """
        missing = [name for name in NAMED_LAWS[self.law] if name not in values]
        if missing:
            raise GraphError(self.law, f"missing parameter {missing[0]!r} (the law has "
                             f"{NAMED_LAWS[self.law]})")
        v = {name: float(values[name]) for name in NAMED_LAWS[self.law]}
        if not (math.isfinite(scale) and scale > 0):
            raise GraphError("level_scale", f"must be finite and > 0, got {scale!r}")
        positive = {"sigma", "a", "r"} & set(v)
        bad = [name for name in positive if not (math.isfinite(v[name]) and v[name] > 0)]
        if "epsilon" in v and not v["epsilon"] > EPSILON_FLOOR * scale:
            bad.append("epsilon")
        if bad:
            raise GraphError(self.law, f"parameter {bad[0]!r} = {v[bad[0]]!r} is outside the law's range")
        if self.law == "saturating":
            rho = [scale / v["sigma"] - SATURATION_START]
        elif self.law == "threshold":
            rho = [math.log(v["a"] / A_START), (v["theta"] - center) / scale - THETA_START,
                   math.log((v["epsilon"] / scale - EPSILON_FLOOR) / (EPSILON_START - EPSILON_FLOOR))]
        else:
            rho = [math.log(v["r"])]
        self.raw.copy_(torch.tensor(rho, dtype=self.raw.dtype) / self.gain)

    @torch.no_grad()
    def unidentified(self, delta: Tensor, source: Tensor, center: float, scale: float) -> list[str]:
        """Why the fitted parameters say less than their values suggest, given the level differences
        ``delta`` and sending levels ``source`` the data visit (any shape, level units); empty when
        nothing is found. A fit can lower the residual with a law whose parameters the data do not pin
        down: a saturation beyond every difference (a nearly linear flux), or a release threshold outside
        the visited levels (only the gate's exponential tail, ``a exp((z - theta) / epsilon)``, is seen,
        so ``a`` and ``theta`` trade against each other). These are reported, not hidden."""
        p = self.parameters_in_levels(center, scale)
        low, high = VISITED_QUANTILES
        if self.law == "saturating":
            reach = visited_quantiles(delta.abs(), (high,))[0]
            if reach < SATURATION_VISIBLE * p["sigma"]:
                return [f"sigma = {p['sigma']:.4g} is more than {1 / SATURATION_VISIBLE:.0f}x the level "
                        f"differences the data visit ({100 * high:.0f}% of |Delta| below {reach:.3g}): the "
                        "flux is nearly linear there, and sigma is not identified"]
        if self.law == "threshold":
            z_low, z_high = visited_quantiles(source, (low, high))
            if not z_low <= p["theta"] <= z_high:
                return [f"theta = {p['theta']:.4g} lies outside the sending levels the data visit "
                        f"([{z_low:.3g}, {z_high:.3g}], {100 * low:.0f}-{100 * high:.0f}%): only the gate's "
                        "tail is fitted, and a, theta and epsilon are not identified separately"]
        return []

    def formula(self, k: float, center: float, scale: float) -> str:
        """The fitted flux per unit weight as one line, e.g. ``q = 0.0210 sigma tanh(Delta / sigma),
        sigma = 0.0312``."""
        p = self.parameters_in_levels(center, scale)
        if self.law == "saturating":
            return f"q = {k:.4g} sigma tanh(Delta / sigma), sigma = {p['sigma']:.4g}"
        if self.law == "threshold":
            return (f"q = {k:.4g} Delta (1 + a S((z_j - theta) / epsilon)), a = {p['a']:.4g}, "
                    f"theta = {p['theta']:.4g}, epsilon = {p['epsilon']:.4g}")
        return f"q = {k:.4g} (max(Delta, 0) + r min(Delta, 0)), r = {p['r']:.4g}"


@torch.no_grad()
def visited_starts(law: str, delta: Tensor, source: Tensor, scale: float) -> list[dict[str, float]]:
    """Starts of a law's parameters (level units) placed where the data are, for a multi-start fit: a
    saturation ``sigma`` at the median and the 90th percentile of the visited ``|Delta|``; a release
    threshold ``theta`` at the quartiles and the median of the visited sending levels, with gain
    ``a = 1`` (the gate doubles the conductance) and width ``epsilon`` a quarter of the levels' standard
    deviation ``scale``; a rectification ratio ``r`` of 0.3 and 3. The law's own start
    (:class:`NamedConductance`) sits outside these: a mild saturation at 2 standard deviations, a weak gate
    one standard deviation above the centre, no rectification.

    Args:
        law: one of :data:`NAMED_LAWS`.
        delta, source: the level differences ``z_j - y_i`` and sending levels ``z_j`` the data visit (any
            shape, level units).
        scale: the levels' standard deviation (> 0).

    Raises:
        GraphError: an unknown law, or no visited values.
    """
    if law not in NAMED_LAWS:
        raise GraphError("message_form", f"unknown named law {law!r} (use one of {tuple(NAMED_LAWS)})")
    if delta.numel() == 0 or source.numel() == 0:
        raise GraphError(law, "no visited level differences to place the starts at")
    if law == "saturating":
        return [{"sigma": v} for v in visited_quantiles(delta.abs(), VISITED_SIGMA_QUANTILES) if v > 0]
    if law == "threshold":
        return [{"a": VISITED_A, "theta": v, "epsilon": EPSILON_START * scale}
                for v in visited_quantiles(source, VISITED_THETA_QUANTILES)]
    return [{"r": r} for r in VISITED_R]
