"""When a fit fails: the likely cause, said in the words of the experiment, with what to try.

Run after :func:`calcium_gnn.evaluation.diagnostics.diagnose` on a fit that reports problems (``fit_ok``
false). Three causes are looked for, each from the data and the fitted simulation alone:

1. **Drivers inside the group.** A modelled cell whose activation (:func:`calcium_gnn.graphs.activation
   .activation_times` on the observed traces) precedes every neighbour's by at least
   :data:`PRECEDES_FRAMES` frames is not pulled by its neighbours: something drives it (a stimulus, a
   pacemaker). The paper's setup models it with the law anyway. Suggestion: name such cells as drivers
   (``setup.drivers=[ids]``, ``setup.auto_drivers=precedes``, ``setup=stimulus setup.point=[x,y]``).
2. **Decay not modelled.** On the test window the data fall back while the simulation stays above them:
   the median over the modelled cells of ``mean_t (y - x)`` exceeds :data:`DECAY_NOISE` noise levels
   and the median slope of the data is negative. A law without a leak can only return to baseline by
   following its neighbours. Suggestion: ``model.law=leak`` or ``experiment=select_law``.
3. **``k`` at a bound.** The box, not the data, set ``k``: the law or the setup do not fit the
   experiment (often one of the two above).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from calcium_gnn.evaluation.diagnostics import noise_sigma
from calcium_gnn.graphs.activation import activation_times, neighbour_lead

#: a modelled cell activating this many frames before every neighbour is probably driven
PRECEDES_FRAMES: float = 1.0
#: the simulation above the falling data by this many noise levels (median over G) means decay missing
DECAY_NOISE: float = 2.0
#: at most this many cell ids are named in a suggestion
MAX_NAMED: int = 10


def early_cells(x: Tensor, t: Tensor, modelled: Tensor, edge_index: Tensor) -> list[int]:
    """Node indices of modelled cells activating at least :data:`PRECEDES_FRAMES` frames before every
    neighbour that activates (cells with no activated neighbour are not counted)."""
    times = activation_times(x.detach().cpu().double().numpy(), t.detach().cpu().double().numpy())
    dt = float(np.median(np.diff(t.detach().cpu().double().numpy()))) if t.numel() > 1 else 1.0
    lead = neighbour_lead(times, edge_index.detach().cpu())  # +inf: no neighbour activates
    early = np.isfinite(lead) & (lead >= PRECEDES_FRAMES * dt)
    return np.flatnonzero(early & modelled.detach().cpu().numpy()).tolist()


def decay_missing(x: Tensor, sim: Tensor, modelled: Tensor, test: slice) -> dict[str, float] | None:
    """The decay check (module docstring, item 2): ``{"bias_over_noise", "data_slope"}`` when the data
    fall back under a simulation that stays up, else None."""
    frames = slice(test.start, test.stop)
    if frames.stop - frames.start < 3:
        return None
    xg = x[modelled].double()
    bias = (sim[modelled].double() - xg)[:, frames].mean(dim=1)
    sigma = noise_sigma(xg).clamp_min(1e-300)
    steps = torch.arange(frames.stop - frames.start, dtype=torch.float64)
    centred = steps - steps.mean()
    window = xg[:, frames]
    slope = ((window - window.mean(dim=1, keepdim=True)) * centred).sum(dim=1) / centred.pow(2).sum()
    ratio, trend = float((bias / sigma).median()), float(slope.median())
    if ratio > DECAY_NOISE and trend < 0:
        return {"bias_over_noise": ratio, "data_slope": trend}
    return None


def likely_causes(
    x: Tensor, t: Tensor, sim: Tensor, modelled: Tensor, edge_index: Tensor, cell_id: Tensor, test: slice,
    diagnostics: dict[str, Any], law: str = "linear",
) -> list[str]:
    """The likely causes of a failed fit, each with a suggestion (module docstring); empty when the fit
    reports no problem.

    Args:
        x, sim: (N, T) observed and simulated traces; t: (T,) times (s); modelled: (N,) bool;
        edge_index: (2, E); cell_id: (N,) labels; test: the test window; diagnostics: the block of
        :func:`~calcium_gnn.evaluation.diagnostics.diagnose`; law: the fitted law's name.
    """
    if diagnostics.get("fit_ok", True):
        return []
    causes: list[str] = []
    early = early_cells(x, t, modelled, edge_index)
    if early:
        ids = [int(cell_id[i]) for i in early]
        named = ", ".join(map(str, ids[:MAX_NAMED])) + (" ..." if len(ids) > MAX_NAMED else "")
        causes.append(
            f"drivers inside the group: {len(ids)} modelled cell(s) ({named}) activate at least "
            f"{PRECEDES_FRAMES:g} frame before every neighbour (a stimulus or pacemaker?); make them drivers "
            f"(setup.drivers=[...], setup.auto_drivers=precedes, or setup=stimulus setup.point=[x,y])"
        )
    decay = decay_missing(x, sim, modelled, test) if "leak" not in law else None
    if decay is not None:
        causes.append(
            f"decay not modelled: on the test window the data fall back while the simulation stays "
            f"{decay['bias_over_noise']:.1f} noise levels above them; try model.law=leak or "
            "experiment=select_law"
        )
    bound = (diagnostics.get("bounds") or {}).get("k_on_bound")
    if bound is not None:
        causes.append(f"k at its {bound} bound: the box set k, not the data; the law or the setup may not "
                      "fit this experiment" + (" (see above)" if causes else ""))
    return causes
