"""How many dishes an experiment needs: power and false-positive rate of the condition comparison.

A simulated experiment has ``n`` dishes per condition, each a culture of the zoo design ``base`` with
its own geometry, drivers, feeds and observation noise (:func:`calcium_gnn.data.zoo.dish_member`).
Cultures differ in coupling too: dish j of a condition with coupling ``k_c`` has

.. math::
    k_j = k_c \\exp(\\sigma_d z_j), \\qquad z_j \\sim \\mathcal N(0, 1), \\qquad
    \\sigma_d = \\sqrt{\\log(1 + \\mathrm{cv}_d^2)}

(``cv_d`` the between-dish coefficient of variation, ``dish_cv``). Three groups are simulated per
experiment: ``control`` (``k_c = k_0``), ``control'`` (``k_0`` again) and ``treated``
(``k_0 (1 - effect)``). Every dish is fitted as a run would fit it (the function ``fit`` given, e.g.
the output-error fit of ``experiment=setup1_neural_ode``) and the hierarchical model
(:func:`calcium_gnn.inference.conditions.compare_conditions`) compares ``control`` with ``treated``
(a rejection at ``alpha`` is a detection: the power) and ``control`` with ``control'`` (a rejection
is a false positive). The two comparisons of one experiment share its control dishes.

Reported (:func:`summarise`): power and false-positive rate with their Monte-Carlo standard errors
``sqrt(p (1 - p) / N)``, the median estimated ratio against the true ``1 - effect``, how often the
ratio's interval holds the truth, and the median per-dish error of ``k``.

**How many dishes** (:func:`resampled_power`). Fitting is the whole cost of a simulated experiment, and
a dish fit's error on the log scale, ``e_j = log k^_j - log k_j``, with its standard error ``s_j``,
does not depend on how many dishes the experiment has or how much their ``k`` differs. So once the
dishes of simulated experiments are fitted, the pairs ``(e_j, s_j)`` (:func:`dish_errors`) give the
power at any number of dishes and between-dish spread without fitting again: each resampled
experiment draws the dishes' true ``k`` as above (``k_0 = 1``: the log-scale test does not depend on
the scale), gives every dish a pair ``(e, s)`` drawn with replacement from the fitted ones (a dish
without an estimate stays without one), and compares the groups with the same hierarchical model.
This assumes a fit's relative error does not depend on ``k`` over the simulated range; the simulated
designs check it (the resampled power at their own number of dishes against the simulated one).

**The ceiling** (:func:`ceiling_power`). However good the fits, the dishes' own spread limits the
power: a two-sided two-sample t-test at ``alpha`` on the dishes' *true* ``log k`` (``n`` per condition,
``2n - 2`` degrees of freedom) detects the drop with probability

.. math::
    P(|T| > t_{1-\\alpha/2,\\,2n-2}), \\qquad T \\sim t_{2n-2}(\\lambda), \\qquad
    \\lambda = \\frac{|\\log(1 - \\text{effect})|}{\\sqrt{\\sigma_d^2 + s_e^2}\\,\\sqrt{2/n}},

with ``s_e = 0``; with ``s_e`` the spread of the dish fits' log errors (their median absolute deviation
x 1.4826, :func:`error_spread`), it is the power of the same test on fits as precise as the simulated
ones, unbiased and with normal errors. The hierarchical model's power is measured against both.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from calcium_gnn.data import zoo
from calcium_gnn.errors import ConfigError
from calcium_gnn.graphs.activation import MAD_TO_SIGMA
from calcium_gnn.inference.conditions import compare_conditions, log_k_and_se
from calcium_gnn.models.neural_ode import OutputErrorODE

__all__ = ["PlateDesign", "DishFit", "dish_couplings", "plate_members", "fit_dish", "simulate_experiment",
           "summarise", "dish_errors", "resampled_power", "ceiling_power", "error_spread", "log_spread"]

#: a dish's fit: its cell graph -> results with ``k``, ``k_interval``, ``interval_level``
DishFit = Callable[[Data], Mapping[str, Any]]
#: the groups of a simulated experiment, in dish order
GROUPS: tuple[str, ...] = ("control", "control'", "treated")
#: the random stream of the dishes' couplings is seeded by (this tag, experiment)
K_STREAM_TAG: int = 2027
#: the random stream of a resampled design is seeded by (this tag, dishes, dish_cv in 1e-6, seed)
RESAMPLE_STREAM_TAG: int = 2028


@dataclass(frozen=True)
class PlateDesign:
    """A simulated experiment (module docstring).

    Attributes:
        base: the zoo member whose design every dish follows (a dev or custom member of the
            ``border`` family: the paper's setting, border cells = the cells at the image edge).
        n_dishes: dishes per condition. effect: relative drop of ``k`` in ``treated`` (0.2 = 20%).
        noise: observation noise of every dish (fraction of the traces' range).
        dish_cv: between-dish coefficient of variation of ``k``. alpha: test level.
        k0: the control coupling (1/s); None: ``base``'s.
    """

    base: str
    n_dishes: int = 5
    effect: float = 0.2
    noise: float = 0.05
    dish_cv: float = 0.1
    alpha: float = 0.05
    k0: float | None = None

    def check(self) -> zoo.ZooMember:
        """The base member, after checking the design.

        Raises:
            ConfigError: a test-split or non-border base, fewer than 2 dishes, effect outside [0, 1),
                negative noise or dish_cv, alpha outside (0, 1).
        """
        member = zoo.member(self.base)
        if member.split == "test":
            raise ConfigError("base", f"{member.id} is in the frozen test split: use a dev or custom member")
        if member.family != "border":
            raise ConfigError("base", f"{member.id} is a {member.family} member: use a 'border' member "
                                      "(its border cells are the cells at the image edge)")
        for name, ok in (("n_dishes", self.n_dishes >= 2), ("effect", 0 <= self.effect < 1),
                         ("noise", self.noise >= 0), ("dish_cv", self.dish_cv >= 0),
                         ("alpha", 0 < self.alpha < 1), ("k0", self.k0 is None or self.k0 > 0)):
            if not ok:
                raise ConfigError(name, f"invalid value {getattr(self, name)!r}")
        return member


def log_spread(dish_cv: float) -> float:
    """``sigma_d = sqrt(log(1 + cv_d^2))``: the standard deviation of ``log k`` between dishes whose ``k`` has
    the coefficient of variation ``dish_cv`` (module docstring)."""
    return math.sqrt(math.log1p(dish_cv**2))


def dish_couplings(design: PlateDesign, k0: float, experiment: int) -> dict[str, np.ndarray]:
    """(n_dishes,) true ``k`` per group of one experiment (module docstring)."""
    rng = np.random.default_rng([K_STREAM_TAG, int(experiment)])
    sigma = log_spread(design.dish_cv)
    centre = {"control": k0, "control'": k0, "treated": k0 * (1 - design.effect)}
    return {g: centre[g] * np.exp(sigma * rng.standard_normal(design.n_dishes)) for g in GROUPS}


def plate_members(design: PlateDesign, experiment: int) -> dict[str, list[zoo.ZooMember]]:
    """The dishes of one simulated experiment, per group of :data:`GROUPS` (``n_dishes`` each; their
    true ``k`` is the member's ``k``, :func:`dish_couplings`)."""
    base = design.check()
    k0 = float(design.k0 if design.k0 is not None else base.k)
    true_k = dish_couplings(design, k0, experiment)
    return {
        group: [zoo.dish_member(base, k=float(k), noise=design.noise, experiment=experiment,
                                dish=g * design.n_dishes + d) for d, k in enumerate(true_k[group])]
        for g, group in enumerate(GROUPS)
    }


def fit_dish(model: OutputErrorODE, max_iterations: int) -> dict[str, Any]:
    """What a run of the output-error model does with one dish, without the evaluation: the exact fit,
    its end (border-noise correction, pooling) and the intervals, as ``results.json``'s ``k``,
    ``k_interval`` and ``interval_level`` (the :data:`DishFit` result)."""
    model.fit_exact(max_iterations=max_iterations)
    model.finish_fit()
    intervals = model.parameter_intervals()
    return {"k": float(model.fitted_parameters().k), "k_interval": list(intervals.k_interval),
            "interval_level": float(intervals.level)}


def simulate_experiment(design: PlateDesign, experiment: int, fit: DishFit) -> dict[str, Any]:
    """Simulate and fit one experiment; compare control with treated and with control'.

    Returns:
        ``p_effect``, ``ratio_effect``, ``covered_effect`` (the ratio's interval holds ``1 - effect``),
        ``p_null``, ``ratio_null``, ``covered_null``, ``k_rel_err`` (per dish), ``failed`` (dishes
        without an estimate), ``dishes`` (per dish: group, true ``k``, ``log k`` and its standard
        error) and ``seconds``.
    """
    start = time.perf_counter()
    dishes: list[dict[str, Any]] = []
    for group, members in plate_members(design, experiment).items():
        for member in members:
            log_k, se = log_k_and_se(fit(zoo.member_graph(member, dtype=torch.float64)))
            dishes.append({"group": group, "k_true": member.k, "log_k": log_k, "se_log_k": se})
    row = _compare_groups(design, experiment, dishes)
    row["seconds"] = time.perf_counter() - start
    return row


def _compare_groups(design: PlateDesign, experiment: int, dishes: list[dict[str, Any]]) -> dict[str, Any]:
    """One experiment's row (:func:`simulate_experiment`, without ``seconds``) from its dishes."""
    fitted = [d for d in dishes if d["log_k"] is not None]
    row: dict[str, Any] = {
        "experiment": int(experiment),
        "k_rel_err": [abs(math.exp(d["log_k"]) - d["k_true"]) / d["k_true"] for d in fitted],
        "failed": len(dishes) - len(fitted),
        "dishes": dishes,
    }
    for name, other, truth in (("effect", "treated", 1 - design.effect), ("null", "control'", 1.0)):
        pairs = [d for d in dishes if d["group"] in ("control", other)]
        values = [None if d["log_k"] is None else math.exp(d["log_k"]) for d in pairs]
        try:
            result = compare_conditions(values, [d["se_log_k"] for d in pairs], [d["group"] for d in pairs],
                                        reference="control", level=1 - design.alpha)
        except ValueError:  # fewer than two dishes with estimates, or none in control
            result = None
        if result is None or not result.contrasts:  # no comparison: no dish of ``other`` has an estimate
            row.update({f"p_{name}": None, f"ratio_{name}": None, f"covered_{name}": None})
            continue
        contrast = result.contrasts[0]
        row[f"p_{name}"] = contrast.p_value
        row[f"ratio_{name}"] = contrast.ratio
        row[f"covered_{name}"] = contrast.interval[0] <= truth <= contrast.interval[1]
    return row


def dish_errors(rows: list[dict[str, Any]]) -> list[tuple[float | None, float | None]]:
    """Every dish of the simulated experiments ``rows`` (:func:`simulate_experiment`) as its fit's
    error on the log scale, ``log k^ - log k``, and that fit's standard error of ``log k`` (module
    docstring); ``(None, None)`` for a dish without an estimate."""
    return [(None, None) if d["log_k"] is None else (d["log_k"] - math.log(d["k_true"]), d["se_log_k"])
            for row in rows for d in row["dishes"]]


def resampled_power(design: PlateDesign, errors: list[tuple[float | None, float | None]],
                    experiments: int, seed: int = 0) -> dict[str, Any]:
    """The :func:`summarise` of ``experiments`` experiments of ``design`` whose dish fits are resampled
    from ``errors`` (:func:`dish_errors`; module docstring), without fitting. Only ``n_dishes``,
    ``effect``, ``dish_cv`` and ``alpha`` of the design are used; ``seconds`` per experiment is the
    resampling's. Deterministic in (``n_dishes``, ``dish_cv``, ``seed``).

    Raises:
        ValueError: no dish in ``errors`` has an estimate, or ``experiments`` < 1.
    """
    if not any(e is not None for e, _ in errors):
        raise ValueError("no fitted dish to resample: every dish is without an estimate")
    if experiments < 1:
        raise ValueError(f"experiments must be at least 1, not {experiments}")
    rng = np.random.default_rng([RESAMPLE_STREAM_TAG, design.n_dishes, round(design.dish_cv * 1e6), seed])
    sigma = log_spread(design.dish_cv)
    centre = {"control": 1.0, "control'": 1.0, "treated": 1.0 - design.effect}
    rows = []
    for experiment in range(experiments):
        start = time.perf_counter()
        dishes = []
        for group in GROUPS:
            true_k = centre[group] * np.exp(sigma * rng.standard_normal(design.n_dishes))
            for k, pick in zip(true_k, rng.integers(len(errors), size=design.n_dishes), strict=True):
                error, se = errors[int(pick)]
                dishes.append({"group": group, "k_true": float(k), "se_log_k": se,
                               "log_k": None if error is None else math.log(float(k)) + error})
        row = _compare_groups(design, experiment, dishes)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return summarise(design, rows)


def ceiling_power(n_dishes: int, effect: float, dish_cv: float, alpha: float, error_sd: float = 0.0) -> float:
    """The power of a two-sided two-sample t-test on the dishes' ``log k`` (module docstring, "The
    ceiling"): ``error_sd`` 0 for the true ``k``, else the spread of the fits' log errors.

    With no spread at all (``dish_cv`` and ``error_sd`` 0) the limit is returned: 1 for an effect,
    ``alpha`` without one.

    Raises:
        ValueError: fewer than 2 dishes, ``effect`` outside [0, 1), ``alpha`` outside (0, 1), or a
            negative spread.
    """
    from scipy import stats

    if n_dishes < 2 or not 0 <= effect < 1 or not 0 < alpha < 1 or dish_cv < 0 or error_sd < 0:
        raise ValueError(f"invalid design: n_dishes={n_dishes}, effect={effect}, alpha={alpha}, "
                         f"dish_cv={dish_cv}, error_sd={error_sd}")
    spread = math.hypot(log_spread(dish_cv), error_sd)
    if spread == 0:
        return 1.0 if effect > 0 else alpha
    df = 2 * n_dishes - 2
    ncp = abs(math.log1p(-effect)) / (spread * math.sqrt(2.0 / n_dishes))
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp))


def error_spread(errors: list[tuple[float | None, float | None]]) -> float:
    """The spread of the dish fits' log errors ``e_j`` (:func:`dish_errors`): their median absolute
    deviation x 1.4826, a standard deviation for normal errors that a few failed fits do not set.

    Raises:
        ValueError: no dish has an estimate.
    """
    values = np.array([e for e, _ in errors if e is not None], dtype=float)
    if values.size == 0:
        raise ValueError("no fitted dish: no error spread")
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def _rate(flags: list[bool]) -> tuple[float, float]:
    n = len(flags)
    p = sum(flags) / n if n else math.nan
    return p, math.sqrt(p * (1 - p) / n) if n else math.nan


def summarise(design: PlateDesign, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Power, false-positive rate (each with its Monte-Carlo standard error), the estimated ratios,
    their interval coverage and the per-dish ``k`` error over the simulated experiments ``rows``."""
    out: dict[str, Any] = {"experiments": len(rows), "design": design.__dict__.copy()}
    for name in ("effect", "null"):
        done = [r for r in rows if r.get(f"p_{name}") is not None]
        rate, mc = _rate([r[f"p_{name}"] < design.alpha for r in done])
        key = "power" if name == "effect" else "false_positive_rate"
        out[key] = rate
        out[f"{key}_mc_se"] = mc
        out[f"ratio_{name}_median"] = statistics.median(r[f"ratio_{name}"] for r in done) if done else None
        out[f"coverage_{name}"] = _rate([bool(r[f"covered_{name}"]) for r in done])[0]
        out[f"experiments_{name}"] = len(done)
    errors = [e for r in rows for e in r["k_rel_err"]]
    out["dish_k_rel_err_median"] = statistics.median(errors) if errors else None
    out["dishes_failed"] = sum(r["failed"] for r in rows)
    out["seconds_per_experiment"] = statistics.fmean(r["seconds"] for r in rows) if rows else None
    return out
