"""Compose the real ``configs/train.yaml`` for end-to-end runs on a small synthetic culture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from calcium_gnn.train import CONFIG_DIR

#: a culture small enough for seconds-long end-to-end runs
SMALL_DATA = ["data.synthetic.n_cells=20", "data.synthetic.size=160", "data.synthetic.n_frames=60"]
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One cache of generated cultures for the whole session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_train(tmp_path: Path, data_cache: Path) -> Callable[..., DictConfig]:
    """``compose_train(*overrides, small=True, run="run")`` -> the composed train config, writing
    into ``tmp_path/outputs/<task_name>/runs/<run>`` (where ``ckpt_path=last`` looks)."""

    def _compose(*overrides: str, small: bool = True, run: str = "run") -> DictConfig:
        base = [f"paths.root_dir={tmp_path}", f"paths.cache_dir={data_cache}", "logger=csv"]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train.yaml", overrides=base + (SMALL_DATA if small else []) + list(overrides),
                          return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "outputs" / cfg.task_name / "runs" / run)
        return cfg

    return _compose
