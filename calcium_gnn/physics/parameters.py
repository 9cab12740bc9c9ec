"""The fitted parameters of the consensus problem, shared by every model (CRLSM, PINN, neural ODE)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.physics.laws import feed_series, stimulus_switch


@dataclass
class FittedParameters:
    """Parameters of eqs. (1)-(3) identified by a model.

    Attributes:
        k: coupling constant (1/s), for the weights ``w = u*l / edge_weight_scale``.
        gamma: (N,) feed term per cell (1/s in intensity units); 0 for cells that are not modelled
            (border and other cells follow the data), the same value on every modelled cell when
            ``gamma_mode`` is ``"shared"``, all 0 for ``"none"``.
        edge_weight_scale: the scale ``s`` the fit used (``K_ij = k u_ij l_ij / s`` in eq. 4).
        gamma_mode: ``"none"`` (eq. 1 without feed), ``"shared"`` (eq. 2) or ``"per_cell"`` (eq. 3).
        k_bounds, gamma_bounds: the box the fit was held to (eq. 20), None for an unconstrained fit;
            the diagnostics report estimates that sit on it.
        law: the member of the model family (:mod:`calcium_gnn.physics.laws`; ``"linear"``: the paper's).
        leak: the leak rate ``delta`` (1/s) of the leak laws (0 otherwise); leak_bounds: its box.
        stimulus_feed: (N,) feeds ``s_i`` switched on at ``stimulus_time`` (s), or None.
        y0: (N,) the state at the first training frame as the fit estimated it (output-error fits with
            ``fit_initial_state``; entries outside G unused), or None: the first observed frame, noise
            and all. The training-window simulation of the report starts from it.
    """

    k: float
    gamma: Tensor
    edge_weight_scale: float
    gamma_mode: str
    k_bounds: tuple[float, float] | None = None
    gamma_bounds: tuple[float, float] | None = None
    law: str = "linear"
    leak: float = 0.0
    leak_bounds: tuple[float, float] | None = None
    stimulus_feed: Tensor | None = None
    stimulus_time: float | None = None
    y0: Tensor | None = None

    def feeds(self, t: Tensor) -> Tensor:
        """The feeds at the frame times ``t`` (T,): ``gamma`` (N,) or, with a switched feed, (N, T)
        (:func:`calcium_gnn.physics.laws.feed_series`)."""
        gamma = torch.as_tensor(self.gamma).detach().double().reshape(-1)
        switch = stimulus_switch(t, self.stimulus_time)
        feed = None if self.stimulus_feed is None else torch.as_tensor(self.stimulus_feed).double().to(gamma)
        return feed_series(gamma, feed, None if switch is None else switch.to(gamma.device))

    def k_at_scale(self, scale: float) -> float:
        """``k`` expressed for another edge-weight scale (``k / s`` is invariant)."""
        return self.k * float(scale) / self.edge_weight_scale


def identifiable_truth_feed(data: Data) -> Tensor | None:
    """The graph's true feeds as a fit can identify them: ``truth_gamma`` (N,), plus ``delta b`` for a
    culture generated with a leak back to the baseline ``b`` (``truth_leak``, ``truth_leak_baseline``:
    only ``gamma_i + delta b`` enters the law, :mod:`calcium_gnn.physics.laws`); None without truth."""
    truth = getattr(data, "truth_gamma", None)
    if truth is None:
        return None
    truth = torch.as_tensor(truth).detach().cpu().double().reshape(-1)
    leak = float(getattr(data, "truth_leak", 0.0) or 0.0)
    baseline = float(getattr(data, "truth_leak_baseline", 0.0) or 0.0)
    return truth + leak * baseline if leak else truth


def truth_errors(fitted: FittedParameters, data: Data, modelled: Tensor) -> dict[str, float]:
    """``fit/k_rel_err`` and ``fit/gamma_mae`` against the graph's ground truth (empty without it).

    ``k`` is compared at the fit's scale: ``k_true * s_fit / s_true`` (``k / s`` is invariant). Host
    values: ``data`` and ``modelled`` may sit on any device, the comparison runs on the CPU.
    """
    out: dict[str, float] = {}
    truth_k = getattr(data, "truth_k", None)
    if truth_k is not None:
        s_true = float(getattr(data, "truth_edge_weight_scale", fitted.edge_weight_scale))
        k_true = float(truth_k) * fitted.edge_weight_scale / s_true
        out["fit/k_rel_err"] = abs(fitted.k - k_true) / abs(k_true)
    truth = identifiable_truth_feed(data)
    if truth is not None:
        keep = modelled.detach().cpu().bool() & torch.isfinite(truth)
        if bool(keep.any()):
            gamma = fitted.gamma.detach().cpu().double()
            out["fit/gamma_mae"] = float((gamma[keep] - truth[keep]).abs().mean())
    return out
