"""GNNODEModule (model=gnn_ode): RK4 of a nonlinear field, start at the linear law, comparison."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.errors import ConfigError
from calcium_gnn.inference.anomaly import AnomalyScores
from calcium_gnn.models.gnn_ode import GNNODEModule
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.nn.coupling import CouplingConv, normalised_edge_features
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.simulate import integrate, simulate_consensus


@pytest.fixture(scope="module")
def graph():
    culture = make_culture(seed=4, n_cells=25, size=180, n_frames=41, render=False)
    return truth_graph(culture, noise=0.01, seed=3, dtype=torch.float64)


def test_stepwise_integration_of_a_zero_correction_is_the_exact_linear_propagator(graph) -> None:
    """The two paths of the one simulator: a CouplingConv at start (MLP correction 0, integrated step by
    step) and the linear ConsensusConv (exact interval propagators) give the same trajectory."""
    setup = resolve_setup(graph)
    w, _ = edge_weights(graph.edge_attr)
    gamma = torch.nan_to_num(graph.truth_gamma)
    y0 = graph.x[:, 0] + 0.01
    coupling = CouplingConv(graph.num_nodes, normalised_edge_features(graph.u, graph.l)).double()
    assert not coupling.affine_in_state and ConsensusConv.affine_in_state
    k = torch.tensor(graph.truth_k, dtype=torch.float64)
    ours = integrate(
        coupling, graph.x, graph.t, graph.edge_index, w, setup.modelled, k, gamma, y0=y0, substeps=3
    )
    ref = simulate_consensus(
        graph.x, graph.t, graph.edge_index, w, setup.modelled, k, gamma, y0=y0, substeps=3
    )
    assert torch.allclose(ours, ref, atol=1e-12)


@pytest.mark.slow
def test_gnn_starts_at_the_linear_fit_and_does_not_get_worse(graph) -> None:
    setup = resolve_setup(graph)
    model = GNNODEModule(
        data=graph,
        setup=setup,
        substeps=1,
        steps_per_epoch=1,
        lbfgs_max_iter=5,
        hidden_features=8,
        num_threads=1,
    )
    model.initialise()
    start = float(model.loss_train())
    assert bool(model.has_linear_fit)
    assert float(model.conv.k) == pytest.approx(float(model.linear_k), rel=1e-9)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=CellGraphDataModule(graph, steps_per_epoch=1))
    assert float(model.loss_train()) <= start + 1e-12
    comparison = model.compare_with_linear(graph, substeps=2)
    assert {
        "mse_test_gnn",
        "mse_test_linear",
        "mse_test_clean_gnn",
        "mse_test_clean_linear",
        "gnn_beats_linear",
    } <= set(comparison)
    extra = model.extra_results(graph)
    assert isinstance(extra["anomaly"], AnomalyScores) and "gnn_vs_linear" in extra
    # one L-BFGS step of at most 5 iterations, logged (its evaluations are the training steps' calls)
    assert len(model.fit_log) == 1 and 1 <= model.fit_log[0]["evaluations"] <= 7
    assert extra["optimizer"]["steps"] == 1 and "ran out" in extra["optimizer"]["stopped"]
    with pytest.raises(ConfigError, match="model"):
        model.parameter_intervals()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"optimizer": "gauss_newton"}, "model.optimizer"),
        ({"init": "zeros"}, "model.init"),
        ({"mlp_weight_decay": -1.0}, "model.mlp_weight_decay"),
        ({"gamma_prior": "random_effects"}, "model.gamma_prior"),
        ({"stop_tolerance": -1e-4}, "model.stop_tolerance"),
        ({"stop_tolerance": 1.0}, "model.stop_tolerance"),
        ({"message_form": "quadratic"}, "model.message_form"),
        ({"message_form": "conductance", "conductance_gain": 0.0}, "model.conductance_gain"),
        ({"autograd_budget_mb": 0.0}, "model.autograd_budget_mb"),
    ],
)
def test_bad_config(graph, kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        GNNODEModule(data=graph, **kwargs)


def test_the_fit_stops_when_a_step_no_longer_lowers_the_loss(graph) -> None:
    model = GNNODEModule(data=graph, init="constant", stop_tolerance=1e-4, validation_fraction=0.0)
    for losses, stops in (([1.0, 0.95, 0.9], False), ([0.9, 0.85], False), ([0.85, 0.84999], True)):
        model._step_losses = list(losses)
        assert model.end_step() is stops
    assert [e["evaluations"] for e in model.fit_log] == [3, 5, 7]
    assert [e["best_loss"] for e in model.fit_log] == [0.9, 0.85, 0.84999]
    assert model.stopped_early.startswith("step 3 lowered the loss by 1.18e-05 of it")
    assert model.optimizer_results()["stopped"] == model.stopped_early
    every_step = GNNODEModule(data=graph, init="constant", stop_tolerance=0.0, validation_fraction=0.0)
    for losses in ([1.0], [1.0], [1.0]):
        every_step._step_losses = losses
        assert not every_step.end_step()


def test_the_learned_law_of_an_untrained_correction_is_the_linear_fit(graph) -> None:
    """Before training the message is the linear start's: q = k Delta at every sample, summarised as
    linear, and close to the true (linear) flux of the culture."""
    import numpy as np

    model = GNNODEModule(data=graph, substeps=1, hidden_features=8, num_threads=1, source_level=True,
                         message_samples=500)
    model.initialise()
    law = model.learned_law(graph)
    s = law.samples
    assert len(s.delta) == 500 and s.true_law == "linear"
    np.testing.assert_allclose(s.learned, float(model.conv.k.detach()) * s.delta, rtol=1e-9, atol=1e-15)
    assert law.summary.law == "linear" and law.summary.explained > 1 - 1e-9
    block = law.as_results()
    assert block["learned_matches_true"] > 0.95
    assert block["learned_matches_true"] == pytest.approx(block["linear_matches_true"], abs=1e-9)


def test_shooting_windows_follow_the_frame_intervals(graph) -> None:
    assert len(GNNODEModule(data=graph, num_threads=1, shooting_segments=4).segment_frames) == 4
    uneven = graph.clone()
    uneven.t = graph.t.clone()
    uneven.t[10:] += 1.0  # a dropped-frame gap: the windows could not share one time axis
    assert GNNODEModule(data=uneven, num_threads=1).segment_frames == [0]
    with pytest.raises(ConfigError, match="shooting_segments"):
        GNNODEModule(data=graph, num_threads=1, shooting_segments=1000)


@pytest.mark.parametrize("uneven", [False, True])
def test_a_loss_within_the_autograd_budget_has_the_gradient_of_keeping_everything(graph, uneven) -> None:
    """``model.autograd_budget_mb``: the shooting windows (equal frame intervals) and the one simulation
    (unequal ones) recomputed in blocks during the backward pass give the loss and gradient of keeping
    everything."""
    data = graph.clone()
    if uneven:
        data.t = graph.t.clone()
        data.t[10:] += 1.0
    gradients = []
    for budget in (None, 0.01):  # 10 kB: blocks of one frame interval
        torch.manual_seed(0)
        model = GNNODEModule(data=data, init="constant", num_threads=1, hidden_features=8, substeps=2,
                             autograd_budget_mb=budget)
        with torch.no_grad():
            for weight in model.conv.phi.parameters():
                weight.normal_(0.0, 0.3)
        assert model.problem.autograd_budget_mb == budget
        loss = model.loss_train()
        loss.backward()
        gradients.append((float(loss.detach()), torch.cat([q.grad.reshape(-1) for q in model.parameters()
                                                  if q.grad is not None])))
    (loss_all, grad_all), (loss_blocks, grad_blocks) = gradients
    assert loss_blocks == pytest.approx(loss_all, rel=1e-12)
    assert grad_all.abs().max() > 0 and torch.allclose(grad_blocks, grad_all, rtol=1e-9, atol=1e-14)


def test_the_shooting_loss_starts_at_the_linear_fit(graph) -> None:
    """Window starts on the linear fit's trajectory and a zero correction: no continuity gap, and the
    windows' residual is that of the one simulation on the same frames (to integration rounding)."""
    model = GNNODEModule(data=graph, num_threads=1, shooting_segments=3, continuity_weight=0.0)
    model.initialise()
    with torch.no_grad():
        shooting = float(model.loss_segments())
        model.continuity_weight = 1e6
        assert float(model.loss_segments()) == pytest.approx(shooting, rel=1e-6)
        p = model.problem
        single = (p.simulate_train() - p.x_train)[p.index].pow(2)
        frames = torch.cat([torch.arange(s, s + model.n_fit - model.segment_frames[-1])
                            for s in model.segment_frames])
        assert shooting == pytest.approx(float(single[:, frames].mean()), rel=1e-6)


def test_the_fit_keeps_the_step_with_the_best_validation_mse(graph) -> None:
    """Steps that do worse than the linear start on the held-out frames are not kept: after
    ``validation_patience`` of them the fit stops and the start's parameters come back."""
    model = GNNODEModule(data=graph, num_threads=1, validation_patience=2)
    assert model.n_fit < model.problem.x_train.shape[1]
    model.initialise()
    start = model.parameter_vector().clone()
    model.best_validation_start = model.validate(0)
    with torch.no_grad():  # a step that ruins the law: five times the coupling
        model.conv.set_parameters(5 * model.conv.k.detach(), model.conv.gamma.detach())
    model._step_losses = [1.0]
    assert not model.end_step()
    model._step_losses = [0.9]
    assert model.end_step()
    assert model.stopped_early == "2 step(s) without a better validation MSE (best: the start (step 0))"
    model.keep_best()
    assert torch.equal(model.parameter_vector(), start)
    validation = model.optimizer_results()["validation"]
    assert validation["kept"] == "the start (step 0)" and validation["kept_step"] == 0
    assert validation["mse_by_step"][1] > validation["mse_by_step"][0]


def test_the_conductance_form_starts_at_the_same_linear_fit_with_standardised_levels(graph) -> None:
    """message_form="conductance": the network sees the training window's levels standardised (median,
    standard deviation), the start is the same linear fit with the same loss as the correction form's,
    and one L-BFGS step moves the conductance away from 1 without raising the loss."""
    from calcium_gnn.models.gnn_ode import level_statistics

    kwargs = {"substeps": 1, "steps_per_epoch": 1, "lbfgs_max_iter": 5, "hidden_features": 8,
              "num_threads": 1, "source_level": True, "validation_fraction": 0.0}
    correction = GNNODEModule(data=graph, **kwargs)
    model = GNNODEModule(data=graph, message_form="conductance", conductance_gain=30.0, **kwargs)
    train = graph.x[:, model.train_frames].double()
    assert float(model.conv.level_center) == pytest.approx(float(train.median()))
    assert float(model.conv.level_scale) == pytest.approx(float(train.std()))
    assert level_statistics(torch.full((3, 4), 2.0)) == (2.0, 1.0)  # a constant movie: scale 1
    correction.initialise()
    model.initialise()
    start = float(model.loss_train().detach())
    assert start == pytest.approx(float(correction.loss_train().detach()), rel=1e-12)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=CellGraphDataModule(graph, steps_per_epoch=1))
    assert float(model.loss_train().detach()) <= start + 1e-12
    law = model.learned_law(graph)
    s = law.samples
    k = float(model.conv.k.detach())
    c = s.learned / (k * s.delta)
    moving = abs(s.delta) > 1e-6
    assert bool((c[moving] > 0).all()) and float(c[moving].max() - c[moving].min()) > 1e-6


def test_steps_that_improve_the_validation_by_a_hair_do_not_reset_the_patience(graph) -> None:
    """validation_min_delta: steps lowering the best validation MSE by less than that fraction of it are
    kept as the best (the snapshot follows them) but do not keep the fit running."""
    model = GNNODEModule(data=graph, num_threads=1, validation_patience=2, validation_min_delta=1e-3,
                         stop_tolerance=0.0)
    model.initialise()
    best = model.validate(0)
    model.best_validation = (best, 0)
    steps = []
    for factor in (0.9, 0.9995, 0.9999):  # a real gain, then two hair-thin ones
        model.validation_mse = lambda f=factor: f * model.best_validation[0]  # noqa: B023 - bound by default
        model._step_losses = [1.0]
        steps.append(model.end_step())
    assert steps == [False, False, True]
    assert model.best_validation[1] == 3  # the last hair-thin step is still the best one, and kept
    assert model.stopped_early == ("2 step(s) without a better validation MSE (by more than 0.001 of it) "
                                   "(best: step 3)")
    with pytest.raises(ConfigError, match="model.validation_min_delta"):
        GNNODEModule(data=graph, validation_min_delta=1.0)


@pytest.mark.slow
def test_a_learned_node_term_finds_the_leak_of_a_leak_member() -> None:
    """On a member generated with the leak law (``- delta (y_i - b_i)``, a custom stimulus member: not the
    test split), the node term is learned as a leak at about the true rate, and the learned law then
    predicts the test window better than the linear law (which has to put the leak into ``k``)."""
    from calcium_gnn.data import zoo

    member = zoo.custom_member("stimulus", 95)
    data = zoo.member_graph(member, dtype=torch.float64)
    assert data.truth_law == "leak" and data.truth_leak > 0
    setup = resolve_setup(data, drivers="is_driver")
    model = GNNODEModule(data=data, setup=setup, source_level=True, message_form="conductance",
                         conductance_gain=30.0, node_term=True, stop_tolerance=0.0, validation_patience=3,
                         num_threads=1, message_samples=4000)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=CellGraphDataModule(data, steps_per_epoch=model.steps_per_epoch))
    assert float(model.conv.node_rate) == pytest.approx(float(model.linear_k))
    assert model.leak_started and model.start_validation["z"] > 2.326  # the leak law's fit beat the linear
    assert model.start_name() == "the leak law's fit"
    block = model.extra_results(data)
    node = block["learned_law"].as_results()["node_term"]
    assert node["law"] == "leak" and node["true_leak_rate"] == pytest.approx(data.truth_leak)
    assert abs(node["leak_rate"] / data.truth_leak - 1) < 0.5
    versus = block["gnn_vs_linear"]
    assert versus["mse_test_clean_gnn"] < 0.5 * versus["mse_test_clean_linear"]
    assert "node term" in block["law"]["terms"]


def test_on_the_paper_law_a_node_term_starts_at_the_linear_fit(graph) -> None:
    """The leak law's fit must beat the linear fit on the validation frames (paired over cells) to be
    the start; on a culture of the paper's law it does not, so the start is the linear fit, the node
    term is zero and the loss is the linear start's."""
    kwargs = {"substeps": 1, "hidden_features": 8, "num_threads": 1, "source_level": True,
              "message_form": "conductance", "conductance_gain": 30.0}
    plain = GNNODEModule(data=graph, **kwargs)
    model = GNNODEModule(data=graph, node_term=True, **kwargs)
    plain.initialise()
    model.initialise()
    assert not model.leak_started and float(model.conv.node_leak) == 0.0
    assert set(model.start_validation) >= {"linear", "leak", "z", "gain"}
    assert model.start_name() == "the linear fit"
    assert float(model.loss_train().detach()) == pytest.approx(float(plain.loss_train().detach()), rel=1e-12)
    assert float(model.conv.node_rate) == pytest.approx(float(model.linear_k))
    # without validation frames the leak law has no frames to earn its place on: not fitted, linear start
    blind = GNNODEModule(data=graph, node_term=True, validation_fraction=0.0, **kwargs)
    blind.initialise()
    assert not blind.leak_started and blind.start_validation == {} and float(blind.conv.node_leak) == 0.0
    assert blind.start_name() == "the linear fit"


def test_a_named_law_counts_its_own_parameters_only_and_starts_at_the_linear_fit(graph) -> None:
    """``message_form="rectifying"`` starts at ``r = 1`` (the linear fit, same loss) and its BIC is charged
    for the output-error parameters plus ``r``; the learned correction for its network's weights: never
    for the feeds of border cells, which are not fitted (they once inflated P by the border count)."""
    kwargs = {"substeps": 1, "num_threads": 1, "validation_fraction": 0.0, "message_samples": 500}
    correction = GNNODEModule(data=graph, hidden_features=8, **kwargs)
    named = GNNODEModule(data=graph, message_form="rectifying", conductance_gain=30.0, **kwargs)
    for model in (correction, named):
        model.initialise()
    assert float(named.loss_train().detach()) == pytest.approx(float(correction.loss_train().detach()),
                                                               rel=1e-12)
    assert int((~named.problem.modelled).sum()) > 0  # the culture has border cells
    block = named.extra_results(graph)["law"]
    assert block["name"] == "rectifying" and block["n_parameters"] == named.problem.n_parameters + 1
    assert block["parameters"] == {"r": pytest.approx(1.0)} and "r = 1" in block["formula"]
    assert "true_parameters" not in block  # a culture of the linear law: no rectifier to compare with
    weights = sum(p.numel() for p in correction.conv.phi.parameters())
    assert correction.extra_results(graph)["law"]["n_parameters"] == correction.problem.n_parameters + weights


def mean_coupling_balance(model: GNNODEModule) -> torch.Tensor:
    """(G,) each modelled cell's mean over the fitted frames of ``k D_i + gamma_i`` at the observed levels
    (the right-hand side of eq. 3 with the model's law, evaluated on the data)."""
    p = model.problem
    x = p.x_train[:, : model.n_fit]
    with torch.no_grad():
        rhs = model.conv(x, x, p.edge_index, p.edge_weight, None)
    return rhs.mean(dim=1)[p.modelled]


def test_a_law_start_keeps_each_cells_mean_balance_and_the_typical_flux_of_the_linear_fit(graph) -> None:
    """``model.law_start`` puts a named law at given parameters (level units): ``k`` is the linear fit's
    over the law's mean conductance on the visited levels, and each feed takes up the change of its
    cell's mean coupling flux, so every cell's mean right-hand side on the data is the linear fit's. At
    ``r = 1`` that is the linear fit itself."""
    kwargs = {"substeps": 1, "num_threads": 1, "validation_fraction": 0.0, "message_form": "rectifying",
              "conductance_gain": 30.0, "gamma_bounds": (-0.1, 0.1)}  # train.yaml's box: no feed clamped
    plain = GNNODEModule(data=graph, **kwargs)
    unit = GNNODEModule(data=graph, law_start={"r": 1.0}, **kwargs)
    rectified = GNNODEModule(data=graph, law_start={"r": 0.2}, **kwargs)
    for model in (plain, unit, rectified):
        model.initialise()
    assert float(unit.conv.k.detach()) == pytest.approx(float(plain.conv.k.detach()), rel=1e-12)
    assert torch.allclose(unit.conv.gamma.detach(), plain.conv.gamma.detach(), rtol=0, atol=1e-12)
    assert rectified.conv.named.parameters_in_levels(0.0, 1.0) == {"r": pytest.approx(0.2)}
    # the pairs where calcium leaves the cell now conduct 0.2 of the linear flux
    assert float(rectified.conv.k.detach()) > float(plain.conv.k.detach())
    balance = mean_coupling_balance(plain)
    assert torch.allclose(mean_coupling_balance(rectified), balance, rtol=0, atol=1e-10)
    assert "model.law_start (r = 0.2)" in rectified.start_name()
    assert plain.start_name() == "the linear fit"


@pytest.mark.parametrize("kwargs,key", [
    ({"law_start": {"r": 0.5}}, "model.law_start"),  # the learned correction has no named law
    ({"message_form": "rectifying", "law_start": {"sigma": 0.5}}, "model.law_start.sigma"),
    ({"message_form": "threshold", "law_start": {"a": 2.0, "theta": 0.5}}, "model.law_start"),  # no epsilon
    ({"message_form": "saturating", "law_start": {"sigma": -1.0}}, "model.law_start"),
    ({"message_form": "saturating", "law_start": [0.5]}, "model.law_start"),
])
def test_a_law_start_that_does_not_fit_the_law_is_refused_by_name(graph, kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        GNNODEModule(data=graph, substeps=1, **kwargs)


def test_a_multi_start_goes_on_from_the_start_with_the_lowest_loss_after_one_step(graph) -> None:
    """``model.law_starts``: the law's own start and each further start take one L-BFGS step from the
    linear fit; the fit goes on from the best of them (its parameters after that step), and results.json
    ``optimizer.start_screen`` lists them all."""
    model = GNNODEModule(data=graph, substeps=1, num_threads=1, validation_fraction=0.0, lbfgs_max_iter=3,
                         message_form="saturating", conductance_gain=30.0, gamma_bounds=(-0.1, 0.1),
                         law_starts=[{"sigma": 0.05}, {"sigma": 1.0}])
    model.initialise()
    screen = model.start_screen
    assert [row["start"] for row in screen] == ["the law's own start", {"sigma": 0.05}, {"sigma": 1.0}]
    after = [row["loss_after_step"] for row in screen]
    assert all(row["loss_after_step"] <= row["loss_start"] for row in screen)  # a step never raises it
    best = min(range(len(after)), key=after.__getitem__)
    assert float(model.loss_train().detach()) == pytest.approx(after[best], rel=1e-12)
    assert model.law_start == (None if best == 0 else screen[best]["start"])
    assert model.optimizer_results()["start_screen"] == screen


def test_visited_starts_are_refused_for_a_learned_message_and_bad_lists_are_named(graph) -> None:
    with pytest.raises(ConfigError, match="model.law_starts"):
        GNNODEModule(data=graph, substeps=1, law_starts="visited")  # no named law
    with pytest.raises(ConfigError, match="model.law_starts"):
        GNNODEModule(data=graph, substeps=1, message_form="rectifying", law_starts="everywhere")
    with pytest.raises(ConfigError, match=r"model.law_starts\[1\]"):
        GNNODEModule(data=graph, substeps=1, message_form="rectifying", law_starts=[{"r": 0.5}, {"r": -1}])
    assert GNNODEModule(data=graph, substeps=1, message_form="rectifying", law_starts=[]).law_starts is None
