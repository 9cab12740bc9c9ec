"""Errors-in-variables correction of k for noisy border inputs (calcium_gnn.physics.border_noise)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.border_noise import (
    border_probes,
    correct_border_noise,
    correct_border_noise_weighted,
    input_noise_products,
    noise_gain,
    probe_responses,
    weighted_objective,
)
from calcium_gnn.physics.levenberg_marquardt import profile_fit
from calcium_gnn.physics.line_search import bracketed_minimum, parabola_vertex, parabolic_refinement
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.simulate import simulate_consensus


@pytest.fixture(scope="module")
def culture():
    return make_culture(seed=3, n_cells=40, size=220, n_frames=121, render=False)


def _fitted(data, **kwargs) -> OutputErrorODE:
    model = OutputErrorODE(data=data, setup=resolve_setup(data), **kwargs)
    model.fit_exact(max_iterations=30)
    return model


def test_noise_gain_with_unit_probes_is_the_projected_frobenius_norm(culture) -> None:
    """q(k) with one probe per border input value equals ||(I - Pi) F_k||_F^2 from dense matrices."""
    small = make_culture(seed=4, n_cells=25, size=180, n_frames=13, render=False)
    data = truth_graph(small, noise=0.02, seed=1, dtype=torch.float64)
    model = _fitted(data)
    theta, free = profile_fit(model.problem, model.problem.theta())
    n, t = model.problem.drive_train.shape
    border = (~model.problem.modelled).nonzero().reshape(-1)
    units = []
    for b in border.tolist():
        for j in range(t):
            z = torch.zeros(n, t, dtype=torch.float64)
            z[b, j] = 1.0
            units.append(z)
    q = noise_gain(model.problem, theta, free, units) * len(units)

    def response(xb: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(n, t, dtype=torch.float64).index_put((border,), xb)
        zero = torch.zeros(n, dtype=torch.float64)
        sim = simulate_consensus(
            x,
            model.problem.t_train,
            model.problem.edge_index,
            model.problem.edge_weight,
            model.problem.modelled,
            theta[0],
            zero,
            y0=zero,
            substeps=model.problem.substeps,
        )
        return sim[model.problem.index].reshape(-1)

    f = torch.func.jacfwd(response)(torch.zeros(border.numel(), t, dtype=torch.float64)).reshape(
        -1, border.numel() * t
    )
    jac = torch.func.jacfwd(lambda th: model.problem.residuals_theta(th).reshape(-1))(theta)[:, free]
    projected = f - jac @ torch.linalg.lstsq(jac, f).solution
    assert q == pytest.approx(float(projected.pow(2).sum()), rel=1e-6)


def test_a_profile_fit_ends_at_the_same_optimum_from_any_start(culture) -> None:
    """The border-noise search starts each profile from the previous one, so the profile at one ``k``
    must not depend on where it starts: from the fit's own feeds, from every feed on its lower or upper
    bound, or from the profiles at other ``k``, it reaches the same box-constrained optimum (a feed the
    start put on a bound is released when the gradient pulls it inside)."""
    model = _fitted(truth_graph(culture, noise=0.1, seed=1), gamma_prior="none")
    problem = model.problem
    lo, hi = problem.theta_bounds()
    feeds = problem.layout()["gamma"]
    k = float(problem.theta()[0]) * 1.2
    starts = []
    for start_feeds in (None, lo[feeds], hi[feeds]):
        start = problem.theta().clone()
        if start_feeds is not None:
            start[feeds] = start_feeds
        starts.append(start)
    for factor in (0.5, 0.8, 1.5, 2.0):
        start = problem.theta().clone()
        start[0] = k * factor
        starts.append(profile_fit(problem, start)[0])
    ends = []
    for start in starts:
        start[0] = k
        ends.append(profile_fit(problem, start)[0])
    at_bound = (ends[0][feeds] <= lo[feeds]) | (ends[0][feeds] >= hi[feeds])
    assert at_bound.any() and not at_bound.all()  # the box is active for some feeds only
    for end in ends[1:]:
        assert torch.allclose(end, ends[0], rtol=1e-7, atol=1e-10)


def test_noise_gain_grows_with_k(culture) -> None:
    model = _fitted(truth_graph(culture, noise=0.05, seed=2))
    probes = border_probes(model.problem, 4, seed=0)
    gains = []
    for k in (0.01, 0.02, 0.04):
        theta = model.problem.theta().clone()
        theta[0] = k
        theta, free = profile_fit(model.problem, theta)
        gains.append(noise_gain(model.problem, theta, free, probes))
    assert gains[0] < gains[1] < gains[2]


@pytest.mark.slow
def test_correction_removes_most_of_the_errors_in_variables_bias(culture) -> None:
    raw, corrected = [], []
    for seed in range(6):
        model = _fitted(truth_graph(culture, noise=0.1, seed=seed), gamma_prior="none")
        model.finish_fit()
        c = model.border_correction
        assert float(model.conv.k.detach()) == pytest.approx(c.k)
        raw.append((c.k_uncorrected - culture.k) / culture.k)
        corrected.append((c.k - culture.k) / culture.k)
    assert statistics.mean(raw) < -0.1  # output error alone: k biased low by the noisy border inputs
    assert abs(statistics.mean(corrected)) < 0.5 * abs(statistics.mean(raw))
    assert statistics.mean(r * r for r in corrected) < statistics.mean(r * r for r in raw)


def test_switched_off_or_without_border_nothing_changes(culture) -> None:
    data = truth_graph(culture, noise=0.05, seed=2)
    model = _fitted(data, border_noise_correction=False, gamma_prior="none")
    before = model.problem.theta().clone()
    model.finish_fit()
    assert torch.equal(model.problem.theta(), before)
    assert model.border_noise_results() == {"applied": False, "reason": "border_noise_correction=false"}


def test_probe_responses_in_the_eigenbasis_equal_one_simulation_per_probe(culture) -> None:
    data = truth_graph(culture, noise=0.05, seed=2)
    modal = OutputErrorODE(data=data)
    dense = OutputErrorODE(data=data, jacobian="dense")
    probes = border_probes(modal.problem, 3, seed=4)
    k = torch.tensor(0.021, dtype=torch.float64)
    fast = probe_responses(modal.problem, k, probes)
    slow = probe_responses(dense.problem, k, probes)
    for a, b in zip(fast, slow, strict=True):
        assert torch.allclose(a, b, atol=1e-12 * float(b.abs().max()))


def test_input_noise_products_are_how_the_fit_moves_with_its_border_inputs(culture) -> None:
    """The sandwich's term rests on ``d theta / d(border inputs) z = -(J^T J)^{-1} J^T F_k z``: nudging
    the observed border traces by ``eps z`` and refitting must move the optimum by that much (first
    order, from an exact optimum: the traces of G replaced by the fit's own simulation so that the
    residuals vanish; a wide feed box so that no feed sits on a bound)."""
    wide = {"gamma_prior": "none", "border_noise_correction": False, "gamma_bounds": (-1.0, 1.0)}
    data = truth_graph(culture, noise=0.0, seed=0, dtype=torch.float64)
    first = _fitted(data, **wide)
    residuals = first.problem.residuals_theta(first.problem.theta_unpooled())
    exact = data.clone()
    exact.x = data.x.clone()
    exact.x[first.problem.index, first.train_frames] += residuals.to(exact.x)
    model = _fitted(exact, **wide)
    problem = model.problem
    theta = problem.theta_unpooled()
    assert float(problem.residuals_theta(theta).pow(2).sum()) < 1e-20
    products = input_noise_products(problem, theta, 2, seed=5)
    assert products.shape == (theta.numel(), 2)
    jtj, _, _ = problem.normal_equations(theta)
    predicted = -torch.linalg.solve(jtj, products)
    eps = 1e-5
    feeds = problem.feed_positions
    for p, z in enumerate(border_probes(problem, 2, seed=5)):
        nudged = exact.clone()
        nudged.x = exact.x.clone()
        nudged.x[:, model.train_frames] += eps * z.to(nudged.x)
        delta = (_fitted(nudged, **wide).problem.theta_unpooled() - theta) / eps
        assert float(delta[0]) == pytest.approx(float(predicted[0, p]), rel=0.01)
        scale = float(predicted[feeds, p].abs().max())
        assert float((delta[feeds] - predicted[feeds, p]).abs().max()) < 0.01 * scale


def test_a_barely_identified_k_is_left_alone(culture) -> None:
    """One modelled cell at 5% noise: R(k) has no interior minimum, so k stays as fitted."""
    data = truth_graph(make_culture(seed=0, render=False), noise=0.05, seed=1)
    setup = resolve_setup(data, group="cells", gamma_mode="shared", cell_ids=[12])
    model = OutputErrorODE(data=data, setup=setup)
    model.fit_exact(max_iterations=30)
    before = model.problem.theta().clone()
    model.finish_fit()
    assert not model.border_correction.interior
    assert torch.equal(model.problem.theta(), before)
    block = model.border_noise_results()
    assert not block["applied"] and "barely identified" in block["reason"]


# --------------------------------------------------------------- the weighted (matrix-free) correction
def _projected(data, **kwargs) -> OutputErrorODE:
    """A variable-projection fit (its weighted stage: the correction runs next)."""
    setup = resolve_setup(data, gamma_mode=kwargs.pop("gamma_mode", "per_cell"))
    model = OutputErrorODE(data=data, setup=setup, optimizer="variable_projection", **kwargs)
    model.fit_exact(max_iterations=60)
    return model


def test_the_bracket_walks_as_far_as_the_minimum_is() -> None:
    """The bias is not bounded by a fixed factor: the search walks downhill past SEARCH_FACTOR, and a
    loss that falls all the way to the box ends there."""
    best, values = bracketed_minimum(lambda x: (x - 2.0) ** 2, 0.0, -10.0, 10.0)
    assert best == pytest.approx(2.0, abs=2e-3) and len(values) < 30
    best, _ = bracketed_minimum(lambda x: -x, 0.0, -10.0, 1.0)
    assert best == 1.0


def test_the_parabola_vertex_of_a_quadratic_is_exact_and_none_when_it_opens_downward() -> None:
    assert parabola_vertex((-1.0, 0.5, 3.0), (2.0, 1.25, 10.0)) == pytest.approx((0.0, 1.0))  # 1 + x^2
    assert parabola_vertex((-1.0, 0.0, 1.0), (0.0, 1.0, 0.0)) is None


@pytest.mark.parametrize("shape", ["cosh", "skewed"])
def test_the_value_tolerance_stops_within_the_asked_share_of_a_standard_error(shape) -> None:
    """A loss that rises by f* / D per squared standard error se (as R does near its minimum) but is not a
    parabola: with relative tolerance c^2 / D the refinement stops within about c se of the minimum, in
    a few evaluations; a finer tolerance goes closer."""
    d, se, x_star = 1e5, 0.025, 0.1335

    def loss(x: float) -> float:
        z = (x - x_star) / se
        rise = 2.0 * (math.cosh(z) - 1.0) if shape == "cosh" else z * z + 0.3 * z**3 / (1 + abs(z))
        return 2.0 * (1.0 + rise / d)

    for c in (0.1, 0.01):
        best, values = bracketed_minimum(loss, 0.0, -0.4, 0.4, step=0.2, x_tolerance=1e-6,
                                         relative_tolerance=c * c / d)
        assert abs(best - x_star) <= 1.5 * c * se
        assert len(values) <= (8 if c == 0.1 else 12)


def test_a_minimum_between_the_last_step_and_the_end_is_still_found() -> None:
    """The walk can step over the minimum onto an end of the interval (steps 0, 0.2, 0.4 for a minimum at
    0.32, as on a zoo member): the search then refines the last interval instead of reporting the end."""
    best, _ = bracketed_minimum(lambda x: (x - 0.32) ** 2 + 0.1 * x**4, 0.0, -0.4, 0.4, step=0.2,
                                relative_tolerance=1e-6)
    assert 0.25 < best < 0.35


def test_the_refinement_converges_where_parabolas_do_not_fit() -> None:
    """A kink at the minimum (|x|): the parabolas mislead, the golden-section steps still close the
    bracket to the variable's tolerance."""
    evaluated: list[float] = []

    def kink(x: float) -> float:
        evaluated.append(x)
        return abs(x - 0.37)

    best = parabolic_refinement(kink, (0.0, 0.3, 1.0), relative_tolerance=0.0, x_tolerance=1e-4)
    assert best == pytest.approx(0.37, abs=1e-4) and len(evaluated) < 40


def test_the_correction_stops_near_the_finely_searched_minimum(culture) -> None:
    """The search's stopping rule (a twentieth of a standard error of log k) leaves k where Brent to 1e-4
    (the previous release's search) does, well inside the fit's own uncertainty, with fewer profile
    fits."""
    model = _fitted(truth_graph(culture, noise=0.1, seed=1), gamma_prior="none")
    problem = model.problem
    theta = problem.theta().clone()
    coarse = correct_border_noise(problem)
    problem.set_theta(theta)
    brent = correct_border_noise(problem, se_fraction=None)
    assert coarse.interior and brent.interior
    interval = model.parameter_intervals().k_interval
    se_log_k = math.log(interval[1] / interval[0]) / (2 * 1.645)
    assert abs(math.log(coarse.k / brent.k)) < 0.2 * se_log_k
    assert coarse.evaluations < brent.evaluations


def test_the_weighted_correction_leaves_noiseless_data_at_the_truth(culture) -> None:
    model = _projected(truth_graph(culture, noise=0.0, seed=0))
    correction = correct_border_noise_weighted(model.problem)
    assert correction.interior and correction.k == pytest.approx(culture.k, rel=5e-3)


@pytest.mark.parametrize(("gamma_mode", "modal"), [("per_cell", True), ("shared", False)])
def test_the_weighted_correction_removes_most_of_the_errors_in_variables_bias(culture, gamma_mode, modal):
    """Both routes (mode by mode; conjugate gradients where a shared feed couples the modes, on a culture
    whose cells share one feed), through the model's finish_fit: k stored, the linear parameters
    refitted in the fit's own metric and box."""
    if gamma_mode == "shared":
        culture = make_culture(seed=3, n_cells=40, size=220, n_frames=121, gamma_range=(6e-4, 6e-4),
                               render=False)
    raw, corrected = [], []
    for seed in range(4):
        data = truth_graph(culture, noise=0.1, seed=seed)
        model = _projected(data, gamma_mode=gamma_mode, gamma_prior="none")
        assert (weighted_objective(model.problem, 1, 0, model.solver.settings)[1] is not None) == modal
        model.finish_fit()
        c = model.border_correction
        assert c.interior and float(model.conv.k.detach()) == pytest.approx(c.k)
        lo, hi = model.problem.theta_bounds()
        theta = model.problem.theta()
        assert bool(((theta >= lo) & (theta <= hi)).all())
        raw.append((c.k_uncorrected - culture.k) / culture.k)
        corrected.append((c.k - culture.k) / culture.k)
    assert statistics.mean(raw) < -0.1  # the weighted fit alone: k biased low by the noisy border inputs
    # the bias, not the scatter (40 cells at 10% noise: each estimate scatters by +-30%)
    assert abs(statistics.mean(corrected)) < 0.5 * abs(statistics.mean(raw))


def test_the_bootstrap_spread_of_the_corrected_k_matches_its_spread_over_noise_draws(culture) -> None:
    """The parametric bootstrap (modal route) is what gives k's interval at scale: its standard deviation
    must be the size of the corrected estimator's actual scatter over independent noise draws (the
    Gauss-Newton information, which counts border noise as information, is not)."""
    estimates, spreads = [], []
    for seed in range(6):
        model = _projected(truth_graph(culture, noise=0.1, seed=seed), gamma_prior="none")
        correction = correct_border_noise_weighted(model.problem, n_replicates=10, seed=seed)
        assert len(correction.replicates) == 10
        estimates.append(correction.k)
        spreads.append(statistics.stdev(correction.replicates))
    ratio = statistics.mean(spreads) / statistics.stdev(estimates)
    assert 0.4 < ratio < 2.5


def test_noiseless_data_have_no_bootstrap_spread(culture) -> None:
    model = _projected(truth_graph(culture, noise=0.0, seed=0))
    correction = correct_border_noise_weighted(model.problem, n_replicates=3)
    assert max(abs(r - correction.k) for r in correction.replicates) < 2e-3 * correction.k
