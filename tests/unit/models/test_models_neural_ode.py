"""OutputErrorODE (model=neural_ode): output-error fitting through RK4, intervals, anomaly scores."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.errors import ConfigError
from calcium_gnn.inference.anomaly import AnomalyScores
from calcium_gnn.inference.uncertainty import ParameterIntervals
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.output_error import moving_average
from calcium_gnn.physics.setups import resolve_setup


@pytest.fixture(scope="module")
def culture():
    return make_culture(seed=3, n_cells=40, size=220, n_frames=121, render=False)


def _fit(model: OutputErrorODE, steps: int = 30) -> OutputErrorODE:
    model.fit_exact(max_iterations=steps)
    return model


def _trainer(max_epochs: int = 1) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_moving_average_by_hand() -> None:
    x = torch.tensor([[0.0, 3.0, 6.0, 9.0]])
    # window 3, ends repeated: [0,0,3] [0,3,6] [3,6,9] [6,9,9]
    assert torch.allclose(moving_average(x, 3), torch.tensor([[1.0, 3.0, 6.0, 8.0]]))
    assert torch.equal(moving_average(x, 1), x)


def test_noiseless_fit_recovers_k_and_gamma_from_a_constant_start(culture) -> None:
    data = truth_graph(culture, noise=0.0)
    setup = resolve_setup(data)
    model = _fit(OutputErrorODE(data=data, setup=setup, init="constant", k_init=0.005, gamma_init=1e-4))
    fitted = model.fitted_parameters()
    assert fitted.k == pytest.approx(culture.k, rel=0.01)
    truth = torch.as_tensor(culture.gamma)[setup.modelled]
    assert float((fitted.gamma[setup.modelled] - truth).abs().max()) < 0.05 * float(truth.mean())
    assert torch.all(fitted.gamma[~setup.modelled] == 0)


def test_output_error_removes_the_noise_bias_of_crlsm(culture) -> None:
    data = truth_graph(culture, noise=0.03, seed=5)
    setup = resolve_setup(data)
    crlsm = fit_least_squares(data, setup, solver="crlsm")
    model = _fit(OutputErrorODE(data=data, setup=setup))
    err_crlsm = abs(crlsm.k - culture.k) / culture.k
    err_oe = abs(model.fitted_parameters().k - culture.k) / culture.k
    assert err_crlsm > 0.1  # errors-in-variables bias of the one-step regression
    assert err_oe < 0.05
    assert err_oe < err_crlsm / 3


def test_lightning_fit_logs_and_converges(culture) -> None:
    data = truth_graph(culture, noise=0.01, seed=2)
    model = OutputErrorODE(data=data, setup=resolve_setup(data), steps_per_epoch=8)
    trainer = _trainer()
    trainer.fit(model, datamodule=CellGraphDataModule(data, steps_per_epoch=model.steps_per_epoch))
    metrics = trainer.callback_metrics
    assert {"train/loss", "fit/k", "fit/k_rel_err", "fit/gamma_mae"} <= set(metrics)
    assert float(metrics["fit/k_rel_err"]) < 0.05
    assert bool(model.initialised)


def test_lbfgs_lowers_the_loss(culture) -> None:
    data = truth_graph(culture, noise=0.01, seed=2)
    model = OutputErrorODE(
        data=data,
        setup=resolve_setup(data),
        optimizer="lbfgs",
        steps_per_epoch=2,
        lbfgs_max_iter=10,
        init="constant",
    )
    model.initialise()
    before = float(model.loss_train())
    trainer = _trainer()
    trainer.fit(model, datamodule=CellGraphDataModule(data, steps_per_epoch=model.steps_per_epoch))
    assert float(model.loss_train()) < 0.5 * before


def test_theta_roundtrip(culture) -> None:
    data = truth_graph(culture, noise=0.0)
    model = OutputErrorODE(data=data, setup=resolve_setup(data), init="constant")
    theta = model.problem.theta().clone()
    theta[0] = 0.03
    theta[1:] += 1e-4
    model.problem.set_theta(theta)
    assert torch.allclose(model.problem.theta(), theta, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_interval_width_scales_with_noise_and_covers(culture) -> None:
    widths = []
    for noise in (0.01, 0.02):
        data = truth_graph(culture, noise=noise, seed=7)
        model = _fit(OutputErrorODE(data=data, setup=resolve_setup(data)))
        iv = model.parameter_intervals(level=0.9)
        assert iv.k_interval[0] < iv.k < iv.k_interval[1]
        widths.append(iv.k_interval[1] - iv.k_interval[0])
        k_ok, g_ok = iv.covers(culture.k, torch.as_tensor(culture.gamma))
        assert float(g_ok[model.modelled].float().mean()) > 0.6
    assert 1.6 < widths[1] / widths[0] < 2.4


def test_intervals_count_the_noise_of_the_border_inputs(culture) -> None:
    """The covariance adds the border inputs' noise (the errors-in-variables sandwich): ``k``'s standard
    error grows over the Gauss-Newton one, the estimate stays, the method says so, and the term is
    absent where it has no meaning (no border cells) or is switched off (``interval_probes=0``)."""
    data = truth_graph(culture, noise=0.05, seed=4)
    setup = resolve_setup(data)
    with_term = _fit(OutputErrorODE(data=data, setup=setup))
    with_term.finish_fit()
    without = _fit(OutputErrorODE(data=data, setup=setup, interval_probes=0))
    without.finish_fit()
    assert with_term.input_noise.shape == (with_term.problem.n_parameters, 32)
    assert without.input_noise is None and without.input_noise_status() == "interval_probes=0"
    a, b = with_term.parameter_intervals(), without.parameter_intervals()
    assert a.k == pytest.approx(b.k, rel=1e-12)
    assert a.k_se > 1.02 * b.k_se
    assert "border inputs" in a.method and "border inputs" not in b.method
    every = resolve_setup(data, group="cells", gamma_mode="per_cell", cell_ids=data.cell_id.tolist())
    alone = _fit(OutputErrorODE(data=data, setup=every))
    alone.finish_fit()
    assert alone.input_noise is None and alone.input_noise_status() == "no border cells"


@pytest.mark.slow
def test_anomaly_flags_a_cell_that_fires_on_its_own(culture) -> None:
    data = truth_graph(culture, noise=0.01, seed=2)
    setup = resolve_setup(data)
    odd = int(setup.modelled_index[len(setup.modelled_index) // 2])
    t = data.t
    data.x[odd] = (
        data.x[odd]
        + 0.5 * torch.exp(-(((t - 300.0) / 40.0) ** 2))
        + 0.5 * torch.exp(-(((t - 800.0) / 40.0) ** 2))
    )
    model = _fit(OutputErrorODE(data=data, setup=setup))
    model.apply_gamma_prior()  # pooling must not hide the odd cell: scores use the per-cell fit
    scores = model.anomaly_scores()
    assert bool(scores.flagged[odd])
    assert int(scores.flagged.sum()) <= 3
    extra = model.extra_results(data)
    assert isinstance(extra["anomaly"], AnomalyScores) and bool(extra["anomaly"].flagged[odd])
    assert isinstance(extra["intervals"], ParameterIntervals)
    block = extra["intervals"].as_results(data.cell_id, setup.modelled)
    assert len(block["gamma_interval"]) == setup.num_modelled
    assert {"applied", "method"} <= set(extra["gamma_prior"])
    assert "applied" in extra["border_noise_correction"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"optimizer": "sgd"}, "model.optimizer"),
        ({"init": "random"}, "model.init"),
        ({"border_smoothing": 4}, "model.border_smoothing"),
        ({"substeps": 0}, "model.substeps"),
        ({"interval_level": 1.5}, "model.interval_level"),
        ({"k_bounds": (0.1, 0.01)}, "model.k_bounds"),
        ({"train_fraction": 0.001}, "model.train_fraction"),
        ({"damping_factor": 1.0}, "model.damping_factor"),
        ({"gamma_prior": "hierarchical"}, "model.gamma_prior"),
        ({"jacobian": "sparse"}, "model.jacobian"),
        ({"interval_probes": -1}, "model.interval_probes"),
    ],
)
def test_bad_config_is_a_config_error(culture, kwargs, key) -> None:
    data = truth_graph(culture, noise=0.0)
    with pytest.raises(ConfigError, match=key):
        OutputErrorODE(data=data, **kwargs)


def test_needs_data() -> None:
    with pytest.raises(ConfigError, match="model"):
        OutputErrorODE()


def test_auto_optimizer_switches_to_lbfgs_above_the_jacobian_limit(culture) -> None:
    data = truth_graph(culture, noise=0.0)
    small = OutputErrorODE(data=data)
    assert small.optimizer_name == "gauss_newton"
    limited = OutputErrorODE(data=data, max_jacobian_parameters=10, jacobian="dense")
    assert limited.optimizer_name == "lbfgs" and limited.problem.n_parameters > 10
    with pytest.raises(ConfigError, match="model.max_jacobian_parameters"):
        limited.parameter_intervals()
    # the modal normal equations need no Jacobian: Gauss-Newton and intervals at any size
    modal = OutputErrorODE(data=data, max_jacobian_parameters=10)
    assert modal.optimizer_name == "gauss_newton"
    assert modal.parameter_intervals().k_se > 0


def test_feeds_are_pooled_as_random_effects_when_the_fit_ends(culture) -> None:
    data = truth_graph(culture, noise=0.05, seed=11)
    setup = resolve_setup(data)
    model = OutputErrorODE(data=data, setup=setup, steps_per_epoch=15)
    _trainer().fit(model, datamodule=CellGraphDataModule(data, steps_per_epoch=model.steps_per_epoch))
    assert bool(model.problem.pooled)
    per_cell = model.problem.theta_unpooled()
    fitted = model.fitted_parameters()
    cells = setup.modelled
    truth = torch.as_tensor(culture.gamma, dtype=torch.float64)[cells]
    g_pooled = fitted.gamma.double()[cells]
    g_cell = per_cell[model.problem.feed_positions]
    assert fitted.k == float(per_cell[0])  # k is a fixed effect: pooling leaves it alone
    assert float((g_pooled - truth).pow(2).mean()) < 0.8 * float((g_cell - truth).pow(2).mean())
    assert float(g_pooled.std()) < float(g_cell.std())
    block = model.gamma_prior_results()
    assert block["applied"] and 0 < block["mean_shrinkage"] < 1
    assert block["gamma_unpooled"] == {
        str(int(data.cell_id[i])): pytest.approx(float(v))
        for i, v in zip(setup.modelled_index, g_cell, strict=True)
    }
    intervals = model.parameter_intervals()
    assert torch.allclose(intervals.gamma[cells], g_pooled, rtol=1e-9)
    # idempotent, and undone for further training
    model.apply_gamma_prior()
    assert torch.allclose(model.fitted_parameters().gamma, fitted.gamma, rtol=1e-12)
    model.problem.restore_unpooled()
    assert not bool(model.problem.pooled)
    assert torch.allclose(model.problem.theta(), per_cell, rtol=1e-12)


def test_gamma_prior_none_keeps_the_per_cell_fit(culture) -> None:
    data = truth_graph(culture, noise=0.05, seed=11)
    model = OutputErrorODE(data=data, gamma_prior="none")
    _trainer().fit(model, datamodule=CellGraphDataModule(data, steps_per_epoch=model.steps_per_epoch))
    assert not bool(model.problem.pooled)
    assert torch.equal(model.problem.theta_unpooled(), model.problem.theta())
    assert model.gamma_prior_results() == {"method": "none", "applied": False, "reason": "gamma_prior=none"}
    iv = model.parameter_intervals()
    assert torch.allclose(iv.gamma[model.modelled], model.problem.theta()[model.problem.feed_positions])


def test_a_fit_on_any_device_gives_the_cpu_result_on_the_host(culture, device) -> None:
    data = truth_graph(culture, noise=0.03, seed=5)
    setup = resolve_setup(data)
    on_cpu = _fit(OutputErrorODE(data=data, setup=setup))
    on_cpu.finish_fit()
    moved = OutputErrorODE(data=data, setup=setup).to(device)
    _fit(moved).finish_fit()
    fitted, reference = moved.fitted_parameters(), on_cpu.fitted_parameters()
    assert fitted.gamma.device.type == "cpu"
    assert fitted.k == pytest.approx(reference.k, rel=1e-9)
    assert torch.allclose(fitted.gamma, reference.gamma, rtol=1e-7, atol=1e-12)
    extra = moved.extra_results(data)
    assert extra["intervals"].gamma.device.type == "cpu"
    assert extra["anomaly"].score.device.type == "cpu"


def test_too_many_parameters_for_normal_equations_switch_to_variable_projection(culture) -> None:
    """Above max_normal_parameters the fit is matrix-free variable projection: the same optimum as
    Levenberg-Marquardt, k's interval from its Schur complement, and every statistic that needs the
    P x P normal equations says it is not there, and why, instead of filling memory."""
    data = truth_graph(culture, noise=0.02, seed=2)
    model = OutputErrorODE(data=data, max_normal_parameters=10, border_noise_correction=False)
    assert model.optimizer_name == "variable_projection" and not model.problem.normal_equations_available
    assert not model.solver.weighted_only  # no correction: the fit runs to its own optimum
    with pytest.raises(ConfigError, match="model.max_normal_parameters"):
        model.problem.normal_equations(model.problem.theta())
    model.fit_exact(60)
    model.finish_fit()
    reference = _fit(OutputErrorODE(data=data))
    intervals = reference.parameter_intervals(pool=False)
    extra = model.extra_results(data)
    assert abs(extra["intervals"].k - intervals.k) < 0.02 * intervals.k_se
    assert extra["intervals"].k_se == pytest.approx(intervals.k_se, rel=1e-3)
    assert "max_normal_parameters=10" in extra["intervals_unavailable"]
    assert torch.isnan(extra["intervals"].gamma_se).all()
    assert not extra["gamma_prior"]["applied"] and "max_normal_parameters" in extra["gamma_prior"]["reason"]
    assert not extra["border_noise_correction"]["applied"]
    assert extra["anomaly"].score.shape == (data.num_nodes,)
    assert extra["optimizer"]["name"] == "variable_projection" and extra["optimizer"]["converged"]
    assert "max_normal_parameters" in extra["optimizer"]["fallback_from_gauss_newton"]


def test_variable_projection_corrects_k_for_border_noise_in_the_weighted_metric(culture) -> None:
    """With the correction on, variable projection stops after its degree-weighted stage, the correction
    searches k in that metric, and k's interval comes from the Schur complement at the corrected k."""
    data = truth_graph(culture, noise=0.1, seed=1)
    model = OutputErrorODE(data=data, max_normal_parameters=10, gamma_prior="none")
    assert model.solver.weighted_only
    model.fit_exact(60)
    assert model.projection_schur() is None  # the weighted stage's information is not the fit's
    k_weighted = float(model.conv.k.detach())
    model.finish_fit()
    extra = model.extra_results(data)
    block = extra["border_noise_correction"]
    assert block["applied"] and "degree-weighted" in block["rule"]
    assert block["k_uncorrected"] == pytest.approx(k_weighted)
    assert block["k"] > k_weighted  # noisy border inputs bias k low; the correction raises it
    intervals = extra["intervals"]
    assert intervals.k == pytest.approx(block["k"]) and "bootstrap" in intervals.method
    bias, sd = model.k_bootstrap()
    assert block["bootstrap"] == {"replicates": 10, "k_bias": bias, "k_sd": sd}
    assert intervals.k_se == pytest.approx(sd) and sd > 0
    assert sum(intervals.k_interval) / 2 == pytest.approx(block["k"] - bias, rel=1e-9)
    assert extra["optimizer"]["converged"]
    # the Schur complement at the corrected k came from the correction's own profile solution: the
    # same as solving that profile again
    schur = model.projection_schur().clone()
    model.solver.refresh_schur(model.problem)
    assert torch.allclose(model.projection_schur(), schur, rtol=1e-6)
    assert model.correct_border_noise().solution is None  # its O(G^2) operator is not handed out


def test_variable_projection_without_an_interior_correction_fits_its_own_optimum(culture) -> None:
    """When the noise-normalised loss falls all the way to the box of k (here an upper bound just above the
    weighted fit's k, 0.0243, below the corrected one, 0.0267), the correction is reported and not
    applied, and the fit's unweighted stage runs after all: the same k as without the correction."""
    data = truth_graph(culture, noise=0.1, seed=1)
    kwargs = {"max_normal_parameters": 10, "gamma_prior": "none", "k_bounds": (1e-3, 0.025)}
    model = OutputErrorODE(data=data, **kwargs)
    model.fit_exact(60)
    model.finish_fit()
    block = model.border_noise_results()
    assert not block["applied"] and "box of k" in block["reason"]
    plain = OutputErrorODE(data=data, border_noise_correction=False, **kwargs)
    plain.fit_exact(60)
    assert float(model.conv.k.detach()) == pytest.approx(float(plain.conv.k.detach()), rel=1e-4)
    assert bool(model.solver.converged) and not model.solver.weighted_only
    assert model.projection_schur() is not None  # the unweighted optimum's information: an interval


def test_without_an_eigenbasis_too_many_parameters_fall_back_to_lbfgs_and_say_so(culture) -> None:
    data = truth_graph(culture, noise=0.02, seed=2)
    model = OutputErrorODE(data=data, max_normal_parameters=10, jacobian="dense")
    assert model.optimizer_name == "lbfgs"
    model.initialise()
    model.finish_fit()
    extra = model.extra_results(data)
    assert "intervals" not in extra and "max_normal_parameters=10" in extra["intervals_unavailable"]
    assert "max_normal_parameters" in extra["optimizer"]["fallback_from_gauss_newton"]
    with pytest.raises(ConfigError, match="model.optimizer"):
        OutputErrorODE(data=data, optimizer="variable_projection", jacobian="dense")


def test_the_report_simulates_the_training_window_from_the_fitted_initial_state(culture) -> None:
    """One noisy frame as the start puts about a noise sigma on every modelled cell for as long as the
    coupling takes to forget it; the fitted ``y0`` is the trajectory the fit chose."""
    from calcium_gnn.evaluation.report import simulate_windows
    from calcium_gnn.physics.edge_weights import edge_weights
    from calcium_gnn.physics.interpolation import time_split

    data = truth_graph(culture, noise=0.03, seed=5)
    clean = truth_graph(culture, noise=0.0).x.double()
    setup = resolve_setup(data)
    model = _fit(OutputErrorODE(data=data, setup=setup))
    fitted = model.fitted_parameters()
    assert fitted.y0 is not None and fitted.y0.dtype == torch.float64 and fitted.y0.shape == (data.num_nodes,)
    train, test = time_split(data.x.shape[1], model.train_fraction)
    w, _ = edge_weights(data.edge_attr.double(), scale=fitted.edge_weight_scale)
    g = setup.modelled
    from_fit = simulate_windows(data, g, fitted.k, fitted.gamma, w, train, test, y0=fitted.y0)
    from_frame = simulate_windows(data, g, fitted.k, fitted.gamma, w, train, test)
    assert torch.equal(from_fit[g, 0], fitted.y0[g])
    assert torch.equal(from_fit[:, test], from_frame[:, test])  # the test window starts from its data
    assert torch.equal(from_fit[~g], data.x.double()[~g])
    early = slice(0, 20)
    err_fit = (from_fit[g, early] - clean[g, early]).pow(2).mean().sqrt()
    err_frame = (from_frame[g, early] - clean[g, early]).pow(2).mean().sqrt()
    sigma = float((data.x.double() - clean).std())
    assert float(err_frame) > 0.3 * sigma  # the noisy start shows in the first frames
    assert float(err_fit) < 0.7 * float(err_frame)  # measured: 0.53
    from calcium_gnn.evaluation.report import evaluate_fit

    res = evaluate_fit(data, setup, fitted, method_name="neural_ode", fit_seconds=0.0,
                       train_fraction=model.train_fraction)
    assert res["simulation"]["scored"].startswith("the training window is simulated from the fit's own")
