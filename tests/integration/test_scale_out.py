"""Scale-out configs: GPU and DDP trainers, the SLURM launcher; the GPU run itself only where a GPU is."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from calcium_gnn.train import CONFIG_DIR, train


@pytest.mark.parametrize(("trainer", "strategy"), [("gpu", None), ("ddp", "ddp")])
def test_gpu_trainers_compose(compose_train, trainer: str, strategy: str | None) -> None:
    cfg = compose_train("experiment=setup1_crlsm", f"trainer={trainer}")
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.get("strategy") == strategy
    assert cfg.trainer.default_root_dir == cfg.paths.output_dir


def test_slurm_launcher_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_crlsm_fits_on_the_gpu_like_on_the_cpu(compose_train) -> None:
    on_gpu = train(compose_train("experiment=setup1_crlsm", "trainer=gpu", run="gpu"))
    on_cpu = train(compose_train("experiment=setup1_crlsm", run="cpu"))
    assert on_gpu["k"] == pytest.approx(on_cpu["k"], rel=1e-5)


def test_same_seed_same_numbers(compose_train) -> None:
    first = train(compose_train("experiment=setup1_crlsm", "seed=7", "data.synthetic.noise=0.02", run="a"))
    second = train(compose_train("experiment=setup1_crlsm", "seed=7", "data.synthetic.noise=0.02", run="b"))
    assert first["k"] == second["k"] and first["gamma"] == second["gamma"]
    assert first["mse_test"] == second["mse_test"]


@pytest.mark.parametrize(("experiment", "splits"), [("setup1_crlsm", False), ("setup1_pinn", True)])
def test_ddp_runs_a_model_that_does_not_split_its_fit_in_one_process(
    compose_train, caplog, experiment: str, splits: bool
) -> None:
    from calcium_gnn.train import _single_process_if_exact

    cfg = compose_train(f"experiment={experiment}", "trainer=ddp_cpu")

    class _Model:
        method_name = experiment
        data_parallel = splits

    with caplog.at_level("WARNING"):
        overrides = _single_process_if_exact(cfg, _Model())
    if splits:
        assert overrides == {} and not caplog.records
    else:
        assert overrides == {"strategy": "auto", "devices": 1, "num_nodes": 1}
        assert "running in one process" in caplog.text
