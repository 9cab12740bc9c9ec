"""A paired comparison of two fits on frames neither was fitted on: is the candidate better, cell by cell?

For per-cell mean squared errors ``a_c`` (the reference) and ``b_c`` (the candidate) over the same held-out
frames of ``n`` cells, ``d_c = a_c - b_c``:

.. math::
    z = \\frac{\\bar d}{s_d / \\sqrt{n}}, \\qquad \\text{gain} = 1 - \\frac{\\sum_c b_c}{\\sum_c a_c},

and the candidate is better when ``z`` exceeds :data:`BETTER_Z` (one-sided ``p < 0.01``; the cells are
treated as independent, which neighbours are not quite) and the gain exceeds :data:`BETTER_MIN_GAIN`.
Both were set before any benchmark run, not tuned. Used by the model selection (a learned coupling
against the best law, :mod:`calcium_gnn.evaluation.model_selection`) and by the learned coupling's
choice of its start (the leak law's fit against the linear fit,
:meth:`calcium_gnn.models.gnn_ode.GNNODEModule.choose_leak_start`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: the candidate is better only with a paired z of the per-cell MSEs above this (one-sided p < 0.01) ...
BETTER_Z: float = 2.326
#: ... and an MSE lower by more than this share
BETTER_MIN_GAIN: float = 0.02


@dataclass(frozen=True)
class PairedComparison:
    """``n_cells``, ``z``, ``gain`` and ``better`` of :func:`paired_comparison` (module docstring)."""

    n_cells: int
    z: float
    gain: float
    better: bool

    def as_results(self) -> dict[str, float | int | bool]:
        return {"n_cells": self.n_cells, "z": self.z, "gain": self.gain, "better": self.better}


def paired_comparison(reference: Sequence[float], candidate: Sequence[float],
                      reference_mse: float | None = None, candidate_mse: float | None = None
                      ) -> PairedComparison | None:
    """Compare per-cell held-out MSEs (module docstring); same cells, same order.

    ``reference_mse``, ``candidate_mse``: the overall MSEs the gain compares (default: the per-cell
    means). Returns None with fewer than two cells or a reference MSE of zero.
    """
    a, b = [float(v) for v in reference], [float(v) for v in candidate]
    if len(a) != len(b):
        raise ValueError(f"per-cell MSEs of {len(a)} and {len(b)} cells: compare the same cells")
    overall_a = sum(a) / len(a) if reference_mse is None and a else reference_mse
    overall_b = sum(b) / len(b) if candidate_mse is None and b else candidate_mse
    if len(a) < 2 or not overall_a or overall_b is None:
        return None
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1))
    z = mean / (sd / math.sqrt(len(d))) if sd > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    gain = 1.0 - float(overall_b) / float(overall_a)
    return PairedComparison(len(d), z, gain, bool(z > BETTER_Z and gain > BETTER_MIN_GAIN))
