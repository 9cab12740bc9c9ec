"""CRLSMModule in a real Lightning Trainer on a small synthetic culture with ground truth."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.errors import ConfigError
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.models.crlsm import CRLSMModule
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.utils.device_audit import stray_tensors


@pytest.fixture(scope="module")
def graph():
    culture = make_culture(seed=1, n_cells=30, size=200, n_frames=61, render=False)
    return truth_graph(culture, noise=0.0, dtype=torch.float64)


def _trainer():
    return L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.mark.parametrize("backend", ["fast", "scipy"])
def test_crlsm_module_fits_and_logs(graph, backend):
    setup = resolve_setup(graph)
    model = CRLSMModule(data=graph, setup=setup, backend=backend)
    with pytest.raises(ConfigError, match="not fitted"):
        model.fitted_parameters()
    trainer = _trainer()
    trainer.fit(model, datamodule=CellGraphDataModule(graph))
    metrics = trainer.callback_metrics
    for key in (
        "train/loss",
        "fit/k",
        "fit/gamma_mean",
        "fit/gamma_median",
        "fit/k_rel_err",
        "fit/gamma_mae",
    ):
        assert key in metrics, key
    fitted = model.fitted_parameters()
    direct = fit_least_squares(graph, setup, backend=backend)
    assert fitted.k == pytest.approx(direct.k, rel=1e-12)
    torch.testing.assert_close(fitted.gamma, direct.gamma)
    assert float(metrics["fit/k"]) == pytest.approx(fitted.k, rel=1e-6)
    # noise-free culture, paper settings: k within a few percent (Euler on interpolated 10 s frames)
    assert float(metrics["fit/k_rel_err"]) < 0.1
    assert float(metrics["fit/gamma_mae"]) < 5e-4


def test_crlsm_module_defaults_to_setup_one_and_validates(graph):
    model = CRLSMModule(data=graph, solver="rlsm")
    assert model.consensus_setup.gamma_mode == "per_cell"
    assert torch.equal(model.consensus_setup.modelled, ~graph.touches_edge)
    assert model.hparams.solver == "rlsm"
    with pytest.raises(ConfigError, match="model.solver"):
        CRLSMModule(data=graph, solver="nope")
    with pytest.raises(ConfigError, match="model.backend"):
        CRLSMModule(data=graph, backend="nope")
    with pytest.raises(ConfigError, match="model.train_fraction"):
        CRLSMModule(data=graph, train_fraction=0.0)
    with pytest.raises(ConfigError, match="model"):
        CRLSMModule()


def test_crlsm_module_follows_the_model_contract(graph):
    model = CRLSMModule(data=graph)
    assert isinstance(model, ConsensusModel)
    assert model.data_parallel is False and model.steps_per_epoch == 1 and model.method_name == "crlsm"
    assert stray_tensors(model) == []
    assert {"modelled", "border", "k_fit", "gamma_fit", "scale_fit"} <= set(dict(model.named_buffers()))


def test_crlsm_module_fits_on_the_device_like_on_the_cpu(graph, device):
    """Lightning moves the batch to the model's device; the solve runs there and gives the CPU answer."""
    setup = resolve_setup(graph)
    model = CRLSMModule(data=graph, setup=setup)
    x_host = graph.x
    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=CellGraphDataModule(graph))
    assert graph.x is x_host and graph.x.device.type == "cpu"  # the shared graph was not moved
    assert model.k_fit.device.type == device.type and model.modelled.device.type == device.type
    assert stray_tensors(model) == []
    fitted = model.fitted_parameters()
    assert fitted.gamma.device.type == "cpu" and fitted.gamma.dtype == torch.float64
    assert model.consensus_setup.modelled.device.type == "cpu"
    reference = fit_least_squares(graph, setup)
    assert fitted.k == pytest.approx(reference.k, rel=1e-10)
    scale = float(reference.gamma.abs().max())
    torch.testing.assert_close(fitted.gamma, reference.gamma, rtol=1e-10, atol=1e-10 * scale)
    # the solve itself, on a graph that lives on the device
    direct, objective = model.to(device).solve(graph.clone().to(device))
    assert objective.device.type == device.type and direct.gamma.device.type == "cpu"
    assert direct.k == pytest.approx(reference.k, rel=1e-10)
