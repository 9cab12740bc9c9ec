"""A quiet, log-friendly console: silence the library notices that do not concern the user.

A ``python train.py ...`` run should print what the run did (our log lines, our warnings, the
results) and nothing a user can neither act on nor needs to know. :func:`quiet_library_messages`
silences exactly the notices listed below, each by its library, its category (or logger) and the
start of its text, never by a blanket ``warnings.simplefilter("ignore")``: our own warnings, and
any other warning of the same libraries, still show.

Silenced (Lightning 2.6, torch 2.13; where and when each is emitted):

* **litlogger tip** (:data:`SILENCED_LOG_MESSAGES`): ``"💡 Tip: For seamless cloud logging ... try
  installing [litlogger] ..."``, an INFO record of the logger ``lightning.pytorch.utilities.rank_zero``
  (``lightning.fabric.utilities.rank_zero`` when only Fabric is imported) written by
  ``LoggerConnector.configure_logger`` in **the Trainer constructor**, whenever no ``LitLogger`` is
  used. An advertisement.
* **LeafSpec deprecation** (:data:`SILENCED_WARNINGS`): a ``FutureWarning`` ``"`isinstance(treespec,
  LeafSpec)` is deprecated ..."`` raised by torch when Lightning's own
  ``lightning/pytorch/utilities/_pytree.py`` builds a ``LeafSpec``, on the first logged step of
  **trainer.fit**. Lightning's code, not ours; nothing the user can change.
* **IterableDataset length** (:data:`SILENCED_WARNINGS`): a ``UserWarning`` ``"Your `IterableDataset`
  has `__len__` defined. In combination with multi-process data loading ..."`` from
  ``lightning/pytorch/utilities/data.py`` when **trainer.fit** sets up the training loader. Our
  :class:`~calcium_gnn.data.datamodule.CellGraphDataModule` serves the whole graph
  ``steps_per_epoch`` times from a sized ``IterableDataset`` in the main process
  (``num_workers=0``), so the multi-worker caveat does not apply.
* optional, **no optimiser** (:data:`NO_OPTIMIZER_WARNING`, with ``no_optimizer=True``): the
  ``UserWarning`` ``"`LightningModule.configure_optimizers` returned `None`, this fit will run with no
  optimizer"`` of **trainer.fit**. Expected for the exact solvers (CRLSM, Gauss-Newton), whose
  ``training_step`` solves the problem itself; a real mistake for a gradient model, hence off by
  default.

None of them is emitted on import: the filters must be in place before the Trainer is built. The
filters are idempotent (calling twice adds nothing) and process-wide, which is why only the command
line (:func:`calcium_gnn.train.main`) installs them, not the library functions.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

#: Module names (regex, matched at the start) of the libraries whose notices are silenced: the
#: unified ``lightning`` package and the standalone ``pytorch_lightning`` / ``lightning_fabric``.
LIGHTNING_MODULES: str = r"(lightning|pytorch_lightning|lightning_fabric)(\.|$)"

#: Loggers through which Lightning's ``rank_zero_info`` writes (which one depends on the package
#: imported last; a filter is attached to each).
LIGHTNING_RANK_ZERO_LOGGERS: tuple[str, ...] = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


@dataclass(frozen=True)
class LibraryWarning:
    """One library warning to silence.

    Attributes:
        text: the start of the warning's message, verbatim (escaped into a regex).
        category: its warning class (subclasses match too, as in :func:`warnings.filterwarnings`).
        module: regex for the emitting module, matched at the start of its name.
    """

    text: str
    category: type[Warning]
    module: str = LIGHTNING_MODULES

    def install(self) -> None:
        """Put an ``"ignore"`` filter for this warning at the front of the filter list."""
        warnings.filterwarnings("ignore", message=re.escape(self.text), category=self.category,
                                module=self.module)


#: Warnings silenced by :func:`quiet_library_messages` (module docstring).
SILENCED_WARNINGS: tuple[LibraryWarning, ...] = (
    LibraryWarning("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning),
    LibraryWarning("Your `IterableDataset` has `__len__` defined.", UserWarning),
)

#: Silenced only with ``no_optimizer=True`` (module docstring).
NO_OPTIMIZER_WARNING: LibraryWarning = LibraryWarning(
    "`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer", UserWarning
)

#: Starts of the log messages silenced on :data:`LIGHTNING_RANK_ZERO_LOGGERS`.
SILENCED_LOG_MESSAGES: tuple[str, ...] = (
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
)


class DropMessages(logging.Filter):
    """A logging filter that drops the records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless its formatted message starts with a silenced text."""
        return not record.getMessage().startswith(self.starts)


def _attach_log_filter(name: str) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(f, DropMessages) for f in logger.filters):
        logger.addFilter(DropMessages(SILENCED_LOG_MESSAGES))


def quiet_library_messages(*, no_optimizer: bool = False) -> None:
    """Silence the library notices of the module docstring, and only those.

    Call it before the Trainer is built (the litlogger tip comes from its constructor). Idempotent.

    Args:
        no_optimizer: also silence Lightning's "configure_optimizers returned None" warning, for a
            model that fits without an optimiser by design (CRLSM, Gauss-Newton).
    """
    for entry in SILENCED_WARNINGS:
        entry.install()
    if no_optimizer:
        NO_OPTIMIZER_WARNING.install()
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        _attach_log_filter(name)
