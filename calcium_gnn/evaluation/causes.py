"""When a fit fails: the likely cause, said in the words of the experiment, with what to try.

Run after :func:`calcium_gnn.evaluation.diagnostics.diagnose` on a fit that reports problems (``fit_ok``
false). Four causes are looked for, each from the data and the fitted simulation alone:

1. **Drivers inside the group.** A modelled cell whose activation (:func:`calcium_gnn.graphs.activation
   .activation_times` on the observed traces, timed after the setup's stimulus time when it names one,
   as its ``precedes`` rule times them) precedes every neighbour's by at least :data:`PRECEDES_FRAMES`
   frames is not pulled by its neighbours: something drives it (a stimulus, a
   pacemaker). The paper's setup models it with the law anyway. Suggestion: name such cells as drivers
   (``setup.drivers=[ids]``, ``setup.auto_drivers=precedes``, ``setup=stimulus setup.point=[x,y]``).
2. **Decay not modelled.** On the test window the data fall back while the simulation stays above them:
   the median over the modelled cells of ``mean_t (y - x)`` exceeds :data:`DECAY_NOISE` noise levels
   and the median slope of the data is negative. A law without a leak can only return to baseline by
   following its neighbours. Suggestion: ``model.law=leak`` or ``experiment=select_law``.
3. **``k`` at a bound.** The box, not the data, set ``k``: the law or the setup do not fit the
   experiment (often one of the two above).
4. **An event from outside the model in the test window.** At some frame of the test window the
   modelled cells stand above the simulation by more than :data:`EVENT_NOISE` noise levels (median over
   G of ``(x - y) / sigma_i``) while the cells that follow their data (border cells, drivers) have risen
   by more than :data:`EVENT_NOISE` noise levels against the frames just before the window (median of
   ``(x - mean_before x) / sigma_i``, ``before`` as many frames as the window). Something that reaches
   every cell (a global stimulus, a change of medium or of focus) is not in the law, and the test-window
   comparison then judges the law on it. Suggestion: end the traces before the event and refit. Only
   rises are read: a shared fall is what a missing leak looks like too (item 2).
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
#: the modelled cells off the simulation, and the data-driven cells moved, by this many noise levels
EVENT_NOISE: float = 2.0
#: at most this many cell ids are named in a suggestion
MAX_NAMED: int = 10


def early_cells(
    x: Tensor, t: Tensor, modelled: Tensor, edge_index: Tensor, after: float | None = None
) -> list[int]:
    """Node indices of modelled cells activating at least :data:`PRECEDES_FRAMES` frames before every
    neighbour that activates (cells with no activated neighbour are not counted).

    ``after`` (s) is the setup's stimulus time: activations are then timed after it, as the setup's
    ``precedes`` rule and the wave report time them, so that a cell this check names is one that rule,
    given the same time, would not have missed (a cell with an early spontaneous event before the stimulus
    is not named for it)."""
    times = activation_times(x.detach().cpu().double().numpy(), t.detach().cpu().double().numpy(),
                             after=after)
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


def shared_event(x: Tensor, sim: Tensor, modelled: Tensor, test: slice) -> dict[str, Any] | None:
    """The check for an event from outside the model (module docstring, item 4):
    ``{"frame", "modelled_off_simulation", "others_shift", "frames"}`` at the test-window frame where the
    smaller of the two (in noise levels) is largest, when it exceeds :data:`EVENT_NOISE`, else None;
    ``frames`` is the test window's first and end frame.

    Args:
        x, sim: (N, T) observed and simulated traces; modelled: (N,) bool; test: the test window.
    """
    start, stop = test.start, test.stop
    n = stop - start
    others = ~modelled
    if n < 3 or start < n or not bool(modelled.any()) or not bool(others.any()):
        return None
    x = x.double()
    sigma = noise_sigma(x).clamp_min(1e-300)[:, None]
    off = ((x - sim.double())[:, start:stop] / sigma)[modelled].median(dim=0).values  # (n,)
    before = x[:, start - n:start].mean(dim=1, keepdim=True)
    shift = ((x[:, start:stop] - before) / sigma)[others].median(dim=0).values  # (n,)
    both = torch.minimum(off, shift)
    at = int(both.argmax())
    if float(both[at]) > EVENT_NOISE:
        return {"frame": start + at, "modelled_off_simulation": float(off[at]),
                "others_shift": float(shift[at]), "frames": [int(start), int(stop)]}
    return None


def likely_causes(
    x: Tensor, t: Tensor, sim: Tensor, modelled: Tensor, edge_index: Tensor, cell_id: Tensor, test: slice,
    diagnostics: dict[str, Any], law: str = "linear", after: float | None = None,
) -> list[str]:
    """The likely causes of a failed fit, each with a suggestion (module docstring); empty when the fit
    reports no problem.

    Args:
        x, sim: (N, T) observed and simulated traces; t: (T,) times (s); modelled: (N,) bool;
        edge_index: (2, E); cell_id: (N,) labels; test: the test window; diagnostics: the block of
        :func:`~calcium_gnn.evaluation.diagnostics.diagnose`; law: the fitted law's name; after: the
        setup's stimulus time (s), when it names one (:func:`early_cells`).
    """
    if diagnostics.get("fit_ok", True):
        return []
    causes: list[str] = []
    early = early_cells(x, t, modelled, edge_index, after=after)
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
    event = shared_event(x, sim, modelled, test)
    if event is not None:
        causes.append(
            f"an event from outside the model in the test window (frame {event['frame']}): the cells "
            f"that follow their data have risen by {event['others_shift']:.1f} noise levels and the modelled "
            f"cells rise above the simulation by {event['modelled_off_simulation']:.1f}; something "
            "that reaches every cell (a global stimulus, a change of medium or focus) is not in the law, and "
            "the test window judges the law on it: end the traces before the event and refit"
        )
    bound = (diagnostics.get("bounds") or {}).get("k_on_bound")
    if bound is not None:
        causes.append(f"k at its {bound} bound: the box set k, not the data; the law or the setup may not "
                      "fit this experiment" + (" (see above)" if causes else ""))
    return causes
