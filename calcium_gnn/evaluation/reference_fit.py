"""A reference for ``k``: the output-error fit of the same data, for estimators that are not it.

The PINN and the least squares identify ``k`` from a surrogate of the data (a network's derivative,
forward-Euler differences); the output-error fit (:class:`calcium_gnn.models.neural_ode.OutputErrorODE`)
chooses the ``k`` and ``gamma_i`` whose *simulation* is closest to the observations, the maximum
likelihood estimate under white observation noise, with Gauss-Newton intervals. When the two
disagree by more than the reference's interval and a tolerance, the estimator's ``k`` does not
reproduce the data as well as another ``k`` does: :func:`calcium_gnn.evaluation.diagnostics.diagnose`
flags it. The reference is fitted on the same training window and box, from the paper's CRLSM start, with
per-cell feeds kept unpooled and ``k`` corrected for the noise of the border inputs (errors in
variables: without it, noisy border traces bias ``k`` low, e.g. 34% on the zoo's dev-1 against 8.6%
with it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch_geometric.data import Data

from calcium_gnn.errors import CalciumGNNError
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.setups import Setup


@dataclass(frozen=True)
class ReferenceFit:
    """The reference's ``k`` (at the estimator's edge-weight scale), its standard error and ``level``
    interval, the seconds it took and its box ``k_bounds``. ``k_uncorrected`` is its ``k`` before the
    border-noise correction and ``k_at_search_end`` where the correction's search ended when it found no
    interior minimum (None when it found one or did not run). A reference on its box bound, or whose
    search ran to its end, vouches for no estimator
    (:func:`calcium_gnn.evaluation.diagnostics.reference_unreliable`)."""

    k: float
    k_se: float
    k_interval: tuple[float, float]
    level: float
    seconds: float
    k_bounds: tuple[float, float] | None = None
    k_uncorrected: float | None = None
    k_at_search_end: float | None = None


def reference_fit(
    data: Data,
    setup: Setup,
    *,
    train_fraction: float,
    edge_weight_scale: float,
    k_bounds: tuple[float, float],
    gamma_bounds: tuple[float, float],
    level: float = 0.9,
    max_iterations: int = 30,
    max_modelled_cells: int = 2000,
) -> ReferenceFit | str:
    """Fit the output-error reference (module docstring) on the host graph ``data``.

    Returns:
        the :class:`ReferenceFit`, or a sentence saying why there is none (too many modelled cells
        for the normal equations, or the reference fit itself failed).
    """
    n_modelled = int(setup.modelled.sum())
    if n_modelled > max_modelled_cells:
        limit = "evaluation.reference_fit.max_modelled_cells"
        return f"{n_modelled} modelled cells > {limit} ({max_modelled_cells})"
    start = time.perf_counter()
    try:
        model = OutputErrorODE(
            data=data, setup=setup, optimizer="auto", train_fraction=train_fraction,
            edge_weight_scale=edge_weight_scale, k_bounds=k_bounds, gamma_bounds=gamma_bounds,
            interval_level=level, gamma_prior="none", border_noise_correction=True, law_check=False,
        )
        unavailable = model.problem.normal_equations_unavailable()
        if unavailable:
            return f"no reference fit: {unavailable}"
        model.fit_exact(max_iterations)
        model.finish_fit()
        intervals = model.parameter_intervals(pool=False)
        correction = model.border_noise_results()
    except CalciumGNNError as err:
        return f"the reference fit failed: {err}"
    return ReferenceFit(
        k=float(intervals.k), k_se=float(intervals.k_se),
        k_interval=(float(intervals.k_interval[0]), float(intervals.k_interval[1])), level=float(level),
        seconds=time.perf_counter() - start, k_bounds=(float(k_bounds[0]), float(k_bounds[1])),
        k_uncorrected=_optional_float(correction.get("k_uncorrected")),
        k_at_search_end=_optional_float(correction.get("k_at_search_end")),
    )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
