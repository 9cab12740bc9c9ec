"""CRLSMModule in a real Lightning Trainer on a small synthetic culture with ground truth."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.errors import ConfigError
from calcium_gnn.models.crlsm import CRLSMModule
from calcium_gnn.physics.least_squares import fit_least_squares
from calcium_gnn.physics.setups import resolve_setup


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
