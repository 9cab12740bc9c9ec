"""The quiet console: exactly the listed library notices are silenced, ours still show; the progress bar
follows whether stdout is a terminal."""

from __future__ import annotations

import io
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from calcium_gnn.config import register_resolvers, stdout_is_tty
from calcium_gnn.utils.console import (
    LIGHTNING_RANK_ZERO_LOGGERS,
    NO_OPTIMIZER_WARNING,
    SILENCED_WARNINGS,
    DropMessages,
    quiet_library_messages,
)

ROOT = Path(__file__).resolve().parents[3]
TIP = ("💡 Tip: For seamless cloud logging and experiment tracking, try installing "
       "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger, which logs metrics and "
       "artifacts automatically to the Lightning Experiments platform.")
LEAFSPEC = ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
            "treespec.is_leaf()` instead.")
ITERABLE = ("Your `IterableDataset` has `__len__` defined. In combination with multi-process data loading "
            "(when num_workers > 1), `__len__` could be inaccurate if each worker is not configured "
            "independently to avoid having duplicate data.")
NO_OPTIMIZER = "`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def quiet() -> Iterator[None]:
    """Install the filters inside a warnings context, and take the log filters off afterwards."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, DropMessages)]:
            logger.removeFilter(f)


def _lightning_warning(text: str, category: type[Warning], module: str) -> list[str]:
    """Emit ``text`` as if from Lightning's ``module`` (as ``rank_zero_warn`` / torch's ``deprecated``
    do) and return what comes through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit(text, category, module.replace(".", "/") + ".py", 1, module=module)
    return [str(w.message) for w in caught]


@pytest.mark.usefixtures("quiet")
def test_each_listed_lightning_warning_is_silenced():
    quiet_library_messages()
    assert _lightning_warning(LEAFSPEC, FutureWarning, "lightning.pytorch.utilities._pytree") == []
    assert _lightning_warning(ITERABLE, UserWarning, "lightning.pytorch.utilities.data") == []
    assert _lightning_warning(ITERABLE, UserWarning, "pytorch_lightning.utilities.data") == []


@pytest.mark.usefixtures("quiet")
def test_our_warnings_and_other_lightning_warnings_still_show():
    quiet_library_messages()
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("k sits on its upper bound", UserWarning, stacklevel=1)
        warnings.warn("a future change of ours", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["k sits on its upper bound", "a future change of ours"]
    # the same text from our own code is ours: only Lightning's is silenced
    assert _lightning_warning(ITERABLE, UserWarning, "calcium_gnn.data.datamodule") == [ITERABLE]
    # another Lightning warning, and the no-optimizer one unless asked for
    other = "The number of training batches (1) is smaller than the logging interval"
    assert _lightning_warning(other, UserWarning, "lightning.pytorch.loops.fit_loop") == [other]
    assert _lightning_warning(NO_OPTIMIZER, UserWarning, "lightning.pytorch.core.optimizer") == [NO_OPTIMIZER]


@pytest.mark.usefixtures("quiet")
def test_no_optimizer_warning_is_silenced_on_request():
    quiet_library_messages(no_optimizer=True)
    assert _lightning_warning(NO_OPTIMIZER, UserWarning, "lightning.pytorch.core.optimizer") == []
    assert NO_OPTIMIZER.startswith(NO_OPTIMIZER_WARNING.text)


@pytest.mark.usefixtures("quiet")
def test_the_litlogger_tip_is_silenced_and_other_lightning_info_still_shows():
    quiet_library_messages()
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        records = _Records()
        logger.addHandler(records)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            logger.info(TIP)
            logger.info("GPU available: False, used: False")
        finally:
            logger.removeHandler(records)
            logger.setLevel(level)
        assert records.messages == ["GPU available: False, used: False"], name


@pytest.mark.usefixtures("quiet")
def test_filters_are_installed_once():
    quiet_library_messages()
    n_filters = len(warnings.filters)
    quiet_library_messages()
    assert len(warnings.filters) == n_filters
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        assert sum(isinstance(f, DropMessages) for f in logging.getLogger(name).filters) == 1


@pytest.mark.usefixtures("quiet")
def test_the_real_lightning_messages_are_silenced():
    """Against the installed Lightning: its own code emits the texts the filters expect."""
    import lightning as L
    import lightning_utilities.core.rank_zero as rank_zero
    from lightning.pytorch.strategies import SingleDeviceStrategy
    from lightning.pytorch.utilities._pytree import _tree_flatten
    from lightning.pytorch.utilities.data import has_len_all_ranks
    from torch.utils.data import DataLoader, IterableDataset

    class Sized(IterableDataset):
        def __iter__(self):  # noqa: ANN204
            yield torch.zeros(1)

        def __len__(self) -> int:
            return 1

    logger = rank_zero.log  # the logger Lightning's rank_zero_info writes to
    records = _Records()
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as loud:  # without the filters: all three appear
            warnings.simplefilter("always")
            L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
            _tree_flatten(1)
            has_len_all_ranks(DataLoader(Sized(), batch_size=None), SingleDeviceStrategy("cpu"))
        assert any(m.startswith("💡 Tip") for m in records.messages)
        assert {type(w.message) for w in loud} >= {FutureWarning, UserWarning}
        records.messages.clear()
        quiet_library_messages()
        with warnings.catch_warnings(record=True) as quiet_run:
            L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
            _tree_flatten(1)
            has_len_all_ranks(DataLoader(Sized(), batch_size=None), SingleDeviceStrategy("cpu"))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    silenced = tuple(entry.text for entry in SILENCED_WARNINGS)
    assert not any(str(w.message).startswith(silenced) for w in quiet_run)
    assert not any(m.startswith("💡 Tip") for m in records.messages)
    assert any(m.startswith("GPU available") for m in records.messages)  # Lightning's other info stays


# -- the progress bar follows the terminal ---------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stdout_is_not_a_tty_under_capture(capsys):
    register_resolvers()
    assert stdout_is_tty() is False
    assert OmegaConf.create({"bar": "${stdout_is_tty:}"}).bar is False


def test_stdout_is_a_tty_in_a_terminal(monkeypatch):
    register_resolvers()
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert OmegaConf.create({"bar": "${stdout_is_tty:}"}).bar is True
    monkeypatch.setattr(sys, "stdout", None)  # pythonw, a detached process
    assert stdout_is_tty() is False


def test_the_trainer_config_enables_the_bar_only_in_a_terminal(monkeypatch):
    register_resolvers()
    trainer = OmegaConf.load(ROOT / "configs" / "trainer" / "default.yaml")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert trainer.enable_progress_bar is False
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert trainer.enable_progress_bar is True
