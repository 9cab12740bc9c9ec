"""Weights & Biases runs offline unless the user configured it."""

from __future__ import annotations

import os
from pathlib import Path


def wandb_configured() -> bool:
    """True when the user has told W&B how to run: ``WANDB_MODE`` or an API key (env or netrc)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def ensure_offline_unless_configured() -> str:
    """Set ``WANDB_MODE=offline`` when the user has not configured W&B; return the mode in force."""
    if not wandb_configured():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")


def finish_wandb() -> None:
    """Close the current W&B run, if any, so the next run in this process starts clean.

    Called after every run, failed or not (``train.main`` and each culture of
    :func:`calcium_gnn.batch.fit_cultures`). W&B is not imported when nothing has imported it.
    """
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
