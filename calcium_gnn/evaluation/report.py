"""Evaluation by simulation: the paper's "consensus problem" with the learned parameters.

:func:`evaluate_fit` takes a cell graph, a setup and fitted parameters ``(k, gamma_i, s)``, and

1. simulates the fitted consensus ODE (eqs. 1-3, :func:`calcium_gnn.physics.simulate.simulate_consensus`)
   over the **training window** starting from the observed values at its first frame, and over the
   **test window** starting from the observed values at *its* first frame (frame ``n_train``; the test
   simulation does not inherit the error accumulated over the training window, so both windows measure
   the model's free-running prediction from a known state). Border cells follow their data;
2. scores each window with the per-cell MSE of the modelled cells over the window's frames *after*
   its first (the first is the initial condition, exact by construction), and the overall MSE as the
   mean of the per-cell MSEs (:mod:`calcium_gnn.evaluation.metrics`);
3. detects and matches calcium peaks in observed vs simulated traces per window
   (:mod:`calcium_gnn.evaluation.spikes`) and pools the counts over cells and windows;
4. sorts the modelled cells into the paper's fit-quality groups on the whole simulated trace (both
   windows) (:mod:`calcium_gnn.evaluation.quality`);
5. with ground truth on the graph (synthetic cultures) compares ``k``, ``gamma_i`` and the simulation
   against the clean traces ``truth_x``;
6. when ``out_dir`` is given writes the figures and ``results.json`` (:mod:`~.results`, :mod:`~.figures`).

The true ``k`` is converted to the fit's weight scale before comparing: the coupling
``K_ij = k u_ij l_ij / s`` is what the data determine, so ``k_true`` in scale ``s`` is
``truth_k * s / truth_edge_weight_scale`` (the graph's scale defaults to the fit's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError, FitError, GraphError, OutputError
from calcium_gnn.evaluation import figures
from calcium_gnn.evaluation.causes import likely_causes
from calcium_gnn.evaluation.diagnostics import (
    DiagnosticRule,
    check_border_noise,
    check_diverged,
    check_finite_parameters,
    check_law,
    check_leak,
    diagnose,
    intervals_not_trusted,
    withhold_intervals,
)
from calcium_gnn.evaluation.metrics import mse_per_cell, overall_mse, scored_frames
from calcium_gnn.evaluation.model_figures import plot_anomaly_map, plot_intervals, plot_learned_message
from calcium_gnn.evaluation.quality import GROUPS, QualityRule, quality_groups
from calcium_gnn.evaluation.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    jsonable,
    validate_results,
    write_results,
)
from calcium_gnn.evaluation.spikes import (
    SpikeCounts,
    SpikeRule,
    frame_interval,
    pool,
    spike_counts_per_cell,
)
from calcium_gnn.evaluation.waves import wave_report
from calcium_gnn.inference.anomaly import AnomalyScores
from calcium_gnn.inference.learned_law import LearnedLaw
from calcium_gnn.inference.uncertainty import ParameterIntervals
from calcium_gnn.io.graph_schema import validate_graph
from calcium_gnn.physics.edge_weights import coupling_rate, edge_weights
from calcium_gnn.physics.interpolation import DEFAULT_TRAIN_FRACTION, time_split
from calcium_gnn.physics.parameters import identifiable_truth_feed
from calcium_gnn.physics.simulate import integrate

if TYPE_CHECKING:
    from calcium_gnn.evaluation.reference_fit import ReferenceFit
    from calcium_gnn.physics.parameters import FittedParameters
    from calcium_gnn.physics.setups import Setup

#: How many cells are drawn when ``cells_to_plot`` is None (one per quality group first).
DEFAULT_CELLS_TO_PLOT = 3


def simulate_windows(
    data: Data,
    modelled: Tensor,
    k: float,
    gamma: Tensor,
    edge_weight: Tensor,
    train: slice,
    test: slice,
    *,
    substeps: int = 10,
    method: str = "rk4",
    field: torch.nn.Module | None = None,
    device: torch.device | str | None = None,
    leak: float = 0.0,
    y0: Tensor | None = None,
) -> Tensor:
    """Simulate the training and the test window, each from its own first observed frame, or the
    training window (when it starts at frame 0) from ``y0`` (N,), the initial state the fit estimated
    (:attr:`~calcium_gnn.physics.parameters.FittedParameters.y0`): the fitted trajectory itself. A
    single noisy frame as the start puts an offset of about one noise sigma on every modelled cell,
    decaying at the cell's coupling rate, which on slow cells is most of the window.

    ``gamma`` is (N,) or, for a law with a feed switched on at a stimulus, (N, T) feeds at every frame
    (:meth:`calcium_gnn.physics.parameters.FittedParameters.feeds`); ``leak`` the leak law's rate.

    Both run through :func:`~calcium_gnn.physics.simulate.integrate`: ``field`` is the model's
    right-hand side for laws other than the paper's (e.g. a learned GNN coupling; ``None``: the linear
    law, by its exact propagators). The simulation runs on ``device`` (default: the device of
    ``field``'s parameters, else the CPU); the result comes back to the CPU once.

    Returns:
        (N, T) float64 on the CPU: the train simulation on ``train`` frames, the test simulation on
        ``test`` frames (observed data on frames in neither, and in the rows of cells outside G).
    """
    if device is None:
        first = next(iter(field.parameters()), None) if field is not None else None
        device = first.device if first is not None else torch.device("cpu")
    x = data.x.detach().to(device=device, dtype=torch.float64)
    t = data.t.detach().to(device=device, dtype=torch.float64)
    sim = x.clone()
    with torch.no_grad():
        for window in (train, test):
            if window.stop - window.start >= 1:
                feeds = gamma.detach()[:, window] if gamma.dim() == 2 else gamma.detach()
                start = y0 if (y0 is not None and window.start == 0) else None
                sim[:, window] = integrate(
                    field, x[:, window], t[window], data.edge_index, edge_weight, modelled, k,
                    feeds, substeps=substeps, method=method, leak=leak,
                    y0=None if start is None else start.to(device=device, dtype=torch.float64),
                )
    return sim.cpu()


def _on_host(data: Data) -> Data:
    """``data`` itself when all its tensors are on the CPU, else a CPU copy (the caller's graph is
    never moved in place)."""
    on_cpu = all(v.device.type == "cpu" for _, v in data if isinstance(v, Tensor))
    return data if on_cpu else data.clone().cpu()


def _window_mse(observed: Tensor, simulated: Tensor, window: slice) -> Tensor | None:
    frames = scored_frames(window)
    return None if frames is None else mse_per_cell(observed, simulated, frames)


def _truth_block(
    data: Data, sim: Tensor, fitted_k: float, scale: float, gamma: Tensor, modelled: Tensor,
    train: slice, test: slice,
) -> dict[str, Any] | None:
    truth_k = getattr(data, "truth_k", None)
    truth_gamma = identifiable_truth_feed(data)
    if truth_k is None and truth_gamma is None:
        return None
    block: dict[str, Any] = {"k": None, "k_rel_err": None, "gamma_mae": None,
                             "gamma_median_abs_err_rel": None, "n_gamma_cells": 0}
    if truth_k is not None:
        truth_scale = float(getattr(data, "truth_edge_weight_scale", None) or scale)
        k_true = float(truth_k) * scale / truth_scale
        block["k"] = k_true
        block["truth_edge_weight_scale"] = truth_scale
        block["k_rel_err"] = abs(fitted_k - k_true) / abs(k_true) if k_true != 0 else None
    if truth_gamma is not None:
        true = torch.as_tensor(truth_gamma, dtype=torch.float64).reshape(-1)
        if true.shape != modelled.shape:
            raise GraphError(
                "truth_gamma", f"must have shape {tuple(modelled.shape)}, got {tuple(true.shape)}"
            )
        use = modelled & torch.isfinite(true)
        if bool(use.any()):
            err = (gamma.detach().to(torch.float64)[use] - true[use]).abs()
            mean_true = float(true[use].mean())
            block["gamma_mae"] = float(err.mean())
            block["gamma_median_abs_err_rel"] = (
                float(err.median()) / abs(mean_true) if mean_true != 0 else None
            )
            block["n_gamma_cells"] = int(use.sum())
    truth_x = getattr(data, "truth_x", None)
    if truth_x is not None:
        clean = torch.as_tensor(truth_x, dtype=torch.float64)
        if clean.shape != sim.shape:
            raise GraphError("truth_x", f"must have shape {tuple(sim.shape)}, got {tuple(clean.shape)}")
        for name, window in (("train", train), ("test", test)):
            per_cell = _window_mse(clean, sim, window)
            block[f"mse_{name}_clean"] = None if per_cell is None else overall_mse(per_cell, modelled)
    return block


def _rows_to_plot(
    cells_to_plot: Sequence[int] | None, cell_id: Tensor, groups: dict[str, list[int]]
) -> list[int]:
    if cells_to_plot is None:
        # one representative per non-empty group first (paper Fig. 19), then fill up in group order
        first = [members[0] for name in GROUPS if (members := groups[name])]
        rest = [i for name in GROUPS for i in groups[name] if i not in first]
        return (first + rest)[:DEFAULT_CELLS_TO_PLOT]
    ids = [int(c) for c in cells_to_plot]
    lookup = {int(c): i for i, c in enumerate(cell_id.tolist())}
    unknown = [c for c in ids if c not in lookup]
    if unknown:
        raise ConfigError("evaluation.cells_to_plot", f"no cell with id {unknown} in the graph")
    return [lookup[c] for c in ids]


def evaluate_fit(
    data: Data,
    setup: Setup,
    fitted: FittedParameters,
    *,
    method_name: str,
    fit_seconds: float,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    substeps: int = 10,
    ode_method: str = "rk4",
    out_dir: str | Path | None = None,
    labels: np.ndarray | None = None,
    cells_to_plot: Sequence[int] | None = None,
    spike_rule: SpikeRule | None = None,
    quality_rule: QualityRule | None = None,
    extra: dict[str, Any] | None = None,
    model_results: Mapping[str, Any] | None = None,
    field: torch.nn.Module | None = None,
    device: torch.device | str | None = None,
    own_trajectory: Tensor | None = None,
    reference: ReferenceFit | str | None = None,
    diagnostic_rule: DiagnosticRule | None = None,
    waves: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Simulate the fitted consensus problem and score it (module docstring); write the results.

    Args:
        data: the cell graph (:mod:`calcium_gnn.io.graph_schema`), possibly with ground truth.
        setup: the modelled group G and its border (:func:`calcium_gnn.physics.setups.resolve_setup`).
        fitted: ``k`` (1/s), ``gamma`` (N,), ``edge_weight_scale`` ``s`` and ``gamma_mode``.
        method_name: the fitting method, recorded as ``method`` (e.g. ``"crlsm"``).
        fit_seconds: wall time of the fit.
        train_fraction: fraction of frames in the training window (default: the paper's 211/361).
        substeps: integration steps per frame interval.
        ode_method: ``"rk4"`` or ``"euler"``.
        out_dir: run directory; when given, figures and ``results.json`` are written there.
        labels: optional (H, W) label image for the error maps (else a Voronoi map of centroids).
        cells_to_plot: cell ids whose traces are drawn; default one representative per quality group.
        spike_rule: peak detection / matching rule (default :class:`SpikeRule()`).
        quality_rule: fit-quality thresholds (default :class:`QualityRule()`).
        extra: free-form additions stored under ``extra``.
        model_results: method-specific results (:meth:`calcium_gnn.models.base.ConsensusModel.extra_results`),
            stored at the top level: plain entries as they are, a
            :class:`~calcium_gnn.inference.uncertainty.ParameterIntervals` under ``intervals`` as
            ``interval_level``, ``k_interval``, ``gamma_interval``, ... (and the figure
            ``parameter_intervals.png``), an :class:`~calcium_gnn.inference.anomaly.AnomalyScores` under
            ``anomaly`` as the ``anomaly`` block (and ``anomaly_map.png``), a
            :class:`~calcium_gnn.inference.learned_law.LearnedLaw` under ``learned_law`` as its block
            (and ``learned_message.png``). Keys of the schema itself are refused.
        field: the model's right-hand side for laws other than the paper's
            (:meth:`calcium_gnn.models.base.ConsensusModel.simulator`); None: the linear law.
        device: where the simulation runs (default: ``field``'s device, else the CPU).
        own_trajectory: (G, |train|) the model's own trajectory on the training frames
            (:meth:`calcium_gnn.models.base.ConsensusModel.own_trajectory`), compared with the simulation.
        reference: the output-error reference fit of ``k`` (:mod:`~.reference_fit`) or why there is none.
        diagnostic_rule: thresholds of the ``diagnostics`` block (:mod:`calcium_gnn.evaluation.diagnostics`).
        waves: the wave analysis (:func:`calcium_gnn.evaluation.waves.wave_report`, results ``waves`` and
            ``activation_map.png``): ``{"enabled": true | false | "auto", "threshold_fraction": f}``;
            ``"auto"`` runs it when the setup names a stimulus point or time. None: off.
        overwrite: allow replacing an existing results.json in ``out_dir``.

    Returns:
        the results dict (schema in :mod:`calcium_gnn.evaluation.results`; what results.json holds).
        When ``out_dir`` is given, ``figures`` lists the PNG file names and the returned dict (not the
        file) also has ``figure_paths``: their full paths, e.g. to log them to W&B.

    Raises:
        GraphError / ConfigError: inconsistent graph, setup, parameters or options.
        OutputError: ``out_dir`` cannot be written, or results.json exists there already.
        FitError: the fit diverged (non-finite parameters, or a simulation far outside the data's range);
            nothing is written.
    """
    data = _on_host(data)
    validate_graph(data)
    if out_dir is not None and (Path(out_dir) / RESULTS_FILE).exists() and not overwrite:
        raise OutputError(
            Path(out_dir) / RESULTS_FILE, "already exists; refusing to overwrite it (use a new run directory)"
        )
    spike_rule = spike_rule if spike_rule is not None else SpikeRule()
    quality_rule = quality_rule if quality_rule is not None else QualityRule()
    n, n_frames = data.x.shape
    modelled = setup.modelled.detach().cpu().reshape(-1).bool()
    border = setup.border.detach().cpu().reshape(-1).bool()
    if modelled.shape != (n,) or border.shape != (n,):
        raise ConfigError("setup", f"modelled / border masks must have shape ({n},)")
    gamma = torch.as_tensor(fitted.gamma).detach().cpu().to(torch.float64).reshape(-1)
    if gamma.numel() == 1:
        gamma = gamma.expand(n)
    if gamma.shape != (n,):
        raise ConfigError("fitted.gamma", f"must hold {n} values (one per cell), got {gamma.numel()}")
    k = float(fitted.k)
    rule = diagnostic_rule if diagnostic_rule is not None else DiagnosticRule()
    w, scale = edge_weights(data.edge_attr.to(torch.float64), scale=fitted.edge_weight_scale)
    train, test = time_split(n_frames, train_fraction)
    x = data.x.detach().to(torch.float64)
    t = data.t.detach().to(torch.float64)
    dt = frame_interval(t.numpy())
    spike_rule.resolve(dt)  # a rule in seconds that does not fit the frames fails before the simulation
    check_finite_parameters(k, gamma, modelled, method_name)
    leak = float(getattr(fitted, "leak", 0.0) or 0.0)
    y0 = getattr(fitted, "y0", None)  # the fit's own initial state, where it estimated one
    feeds = fitted.feeds(t) if getattr(fitted, "stimulus_feed", None) is not None else gamma
    if not math.isfinite(leak) or not bool(torch.isfinite(torch.as_tensor(feeds)).all()):
        raise FitError(method_name, "the fit diverged: the leak or a switched feed is not finite "
                       "(no results written)")
    sim = simulate_windows(data, modelled, k, feeds, w, train, test, substeps=substeps, method=ode_method,
                           field=field, device=device, leak=leak, y0=y0)
    check_diverged(x, sim, modelled, k, method_name, rule.divergence_factor)

    rows = modelled.nonzero().reshape(-1).tolist()
    cell_id = data.cell_id.long()
    cid = [int(c) for c in cell_id.tolist()]

    mse = {name: _window_mse(x, sim, window) for name, window in (("train", train), ("test", test))}
    overall = {name: (None if per is None else overall_mse(per, modelled)) for name, per in mse.items()}

    window_counts: dict[str, dict[int, SpikeCounts]] = {}
    for name, window in (("train", train), ("test", test)):
        window_counts[name] = spike_counts_per_cell(
            x[:, window].numpy(), sim[:, window].numpy(), t[window].numpy(), rows, spike_rule
        )
    per_cell_counts = {i: pool(window_counts[name][i] for name in window_counts) for i in rows}
    spikes_all = pool(per_cell_counts.values())
    groups, per_cell_quality = quality_groups(x, sim, rows, per_cell_counts, quality_rule)

    c = coupling_rate(k, w, data.edge_index, n)
    gamma_mode = getattr(fitted, "gamma_mode", None) or setup.gamma_mode
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": method_name,
        "setup": setup.name,
        "gamma_mode": gamma_mode,
        "modelled_cells": [cid[i] for i in rows],
        "border_cells": [cid[i] for i in border.nonzero().reshape(-1).tolist()],
        "k": k,
        "edge_weight_scale": scale,
        "gamma": {str(cid[i]): float(gamma[i]) for i in rows},
        "coupling_rate": {str(cid[i]): float(c[i]) for i in rows},
        "mse_train": overall["train"],
        "mse_test": overall["test"],
        "mse_per_cell": {
            str(cid[i]): {name: (None if per is None else float(per[i])) for name, per in mse.items()}
            for i in rows
        },
        "simulation": {
            "method": ode_method,
            "substeps": int(substeps),
            "train_fraction": float(train_fraction),
            "train_frames": [train.start, train.stop],
            "test_frames": [test.start, test.stop],
            "scored": ("the training window is simulated from the fit's own initial state, the test window "
                       "from its first observed frame" if y0 is not None else
                       "each window is simulated from its own first observed frame")
            + "; MSE over the window's frames after the first, modelled cells only",
        },
        "spikes": {
            "rule": spike_rule.as_dict(dt),
            **spikes_all.as_dict(),
            "train": pool(window_counts["train"].values()).as_dict(),
            "test": pool(window_counts["test"].values()).as_dict(),
        },
        "quality_groups": {
            "rule": quality_rule.as_dict(),
            "window": "train and test simulations together (all frames)",
            "groups": {name: [cid[i] for i in members] for name, members in groups.items()},
            "counts": {name: len(members) for name, members in groups.items()},
            "per_cell": {str(cid[i]): v for i, v in per_cell_quality.items()},
        },
        "fit_seconds": float(fit_seconds),
        "extra": dict(extra or {}),
    }
    truth = _truth_block(data, sim, k, scale, gamma, modelled, train, test)
    if truth is not None:
        results["truth"] = truth
    model_results = dict(model_results or {})
    intervals = model_results.pop("intervals", None)
    scores = model_results.get("anomaly")
    if isinstance(intervals, ParameterIntervals):
        model_results.update(intervals.as_results(cell_id, modelled))
    if isinstance(scores, AnomalyScores):
        model_results["anomaly"] = scores.as_results(cell_id, modelled)
    learned_law = model_results.get("learned_law")
    if isinstance(learned_law, LearnedLaw):
        model_results["learned_law"] = learned_law.as_results()
    clash = sorted(set(model_results) & set(results))
    if clash:
        raise ConfigError("model_results", f"would overwrite the results key '{clash[0]}'")
    results.update(model_results)
    results.setdefault("law", {"name": getattr(fitted, "law", "linear")})
    has_intervals = isinstance(intervals, ParameterIntervals)
    effective_k = (model_results.get("learned_law") or {}).get("effective_k")
    compared = None if effective_k is None else ("the learned coupling's effective k", float(effective_k))
    diagnostics = diagnose(
        x, t, sim, modelled, train, test, k=k, gamma=gamma, gamma_mode=gamma_mode, mse_test=overall["test"],
        k_bounds=fitted.k_bounds, gamma_bounds=fitted.gamma_bounds,
        k_se=intervals.k_se if has_intervals else None,
        interval_level=intervals.level if has_intervals else None,
        own_trajectory=own_trajectory, reference=reference, rule=rule,
        reference_k=compared,
    )
    check_leak(results.get("law"), rule, diagnostics)
    check_law(results.get("law"), rule, diagnostics)
    check_border_noise(results.get("border_noise_correction"), rule, diagnostics)
    results["diagnostics"] = diagnostics
    if setup.drivers:
        results["drivers"] = {str(c): reason for c, reason in setup.drivers.items()}
    if waves is not None and waves.get("enabled") and (
        waves.get("enabled") != "auto" or setup.point is not None or setup.stimulus_time is not None
    ):
        results["waves"] = wave_report(
            data, sim, modelled=modelled, point=setup.point, after=setup.stimulus_time, labels=labels,
            out_dir=out_dir, threshold_fraction=float(waves.get("threshold_fraction", 0.5)),
        )
    diagnostics["likely_causes"] = likely_causes(
        x, t, sim, modelled, data.edge_index, cell_id, test, diagnostics,
        law=getattr(fitted, "law", "linear"), after=setup.stimulus_time,
    )
    withheld = intervals_not_trusted(diagnostics, results.get("border_noise_correction"))
    if withheld is not None:
        withhold_intervals(results, withheld)
        intervals = None

    if out_dir is not None:
        out = Path(out_dir)
        plot_rows = _rows_to_plot(cells_to_plot, cell_id, groups)
        paths = _write_figures(out, data, x, sim, modelled, border, gamma, k, scale, truth, mse, plot_rows,
                               train, test, labels)
        if isinstance(intervals, ParameterIntervals):
            truth_gamma = identifiable_truth_feed(data)
            paths.append(plot_intervals(
                intervals, cell_id, modelled, out / "parameter_intervals.png",
                truth_gamma=None if truth_gamma is None else torch.as_tensor(truth_gamma).cpu(),
                truth_k=None if truth is None else truth.get("k"),
            ))
        if isinstance(scores, AnomalyScores):
            paths.append(plot_anomaly_map(scores, cell_id, data.pos, out / "anomaly_map.png", labels=labels))
        if isinstance(learned_law, LearnedLaw):
            paths.append(plot_learned_message(learned_law, out / "learned_message.png"))
        paths += [out / name for name in (results.get("waves") or {}).get("figures", [])]
        results["figures"] = [p.name for p in paths]
        results = jsonable(results)
        write_results(results, out / RESULTS_FILE, overwrite=overwrite)
        results["figure_paths"] = [str(p) for p in paths]
        return results
    results = jsonable(results)
    validate_results(results)
    return results


def _write_figures(
    out: Path, data: Data, x: Tensor, sim: Tensor, modelled: Tensor, border: Tensor, gamma: Tensor, k: float,
    scale: float, truth: dict | None, mse: dict[str, Tensor | None], plot_rows: list[int], train: slice,
    test: slice, labels: np.ndarray | None,
) -> list[Path]:
    pos = data.pos.detach().double().numpy()
    cell_id = data.cell_id.long().numpy()
    mod, bor = modelled.numpy(), border.numpy()
    paths = []
    for name, per in mse.items():
        if per is not None:
            paths.append(figures.plot_error_map(
                out / f"error_map_{name}.png", per.numpy(), pos, cell_id, mod, bor, labels=labels,
                title=f"per-cell MSE, {name} window",
            ))
    per_cell = {i: {n: (None if p is None else float(p[i])) for n, p in mse.items()} for i in plot_rows}
    truth_x = getattr(data, "truth_x", None)
    if plot_rows:
        paths.append(figures.plot_traces(
            out / "traces.png", data.t.double().numpy(), x.numpy(), sim.numpy(), plot_rows, cell_id,
            train, test,
            mse=per_cell, truth=None if truth_x is None else torch.as_tensor(truth_x).double().numpy(),
        ))
    truth_gamma = identifiable_truth_feed(data)
    paths.append(figures.plot_parameters(
        out / "parameters.png", gamma.numpy(), mod, k,
        truth_k=None if truth is None else truth.get("k"),
        truth_gamma=None if truth_gamma is None else torch.as_tensor(truth_gamma).double().numpy(),
    ))
    return paths
