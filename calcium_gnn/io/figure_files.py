"""Writing figures: a complete PNG or none (atomic), and the figure closed afterwards."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from calcium_gnn.io.atomic import atomic_path  # noqa: E402


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (parents created) through a temporary file, then close it."""
    path = Path(path)
    try:
        with atomic_path(path, make_parents=True) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
