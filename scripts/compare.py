"""Compare CRLSM and the PINN on the same culture and setup, side by side.

    python scripts/compare.py [--crlsm setup1_crlsm] [--pinn setup1_pinn] [--out DIR] [override ...]

Both runs go through :func:`calcium_gnn.train.train` with configs composed from ``configs/train.yaml``
(``experiment=<name>`` plus the shared Hydra overrides, e.g. ``data.synthetic.noise=0.01``), so each
writes its own ``results.json`` and figures. The comparison folder gets ``comparison.md`` and
``comparison.json`` (k, gamma errors when the truth is known, train/test MSE, spike F1, wall time) and
``traces_overlay.png``: observed traces of a few modelled cells with both simulations (each window
simulated from its own first observed frame, as in the evaluation).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from calcium_gnn.data.sources import load_cell_graph
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import time_split
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.simulate import simulate_consensus
from calcium_gnn.train import CONFIG_DIR, train

ROWS: tuple[tuple[str, str], ...] = (
    ("k", "k (1/s)"),
    ("k_rel_err", "k relative error"),
    ("gamma_mae", "gamma MAE"),
    ("gamma_median_abs_err_rel", "gamma median abs err / mean true gamma"),
    ("mse_train", "MSE train"),
    ("mse_test", "MSE test"),
    ("spike_f1", "spike F1"),
    ("fit_seconds", "fit wall time (s)"),
    ("train_frames", "training frames"),
)


def compose_run(experiment: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The train config of ``experiment=<experiment>`` with ``overrides``, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train.yaml", overrides=[f"experiment={experiment}", *overrides], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def summarise(results: dict[str, Any], wall: float) -> dict[str, Any]:
    """The comparison row of one run from its ``results.json`` content."""
    truth = results.get("truth") or {}
    spikes = results.get("spikes") or {}
    window = (results.get("simulation") or {}).get("train_frames")
    return {
        "method": results.get("method"),
        "k": results.get("k"),
        "k_rel_err": truth.get("k_rel_err"),
        "gamma_mae": truth.get("gamma_mae"),
        "gamma_median_abs_err_rel": truth.get("gamma_median_abs_err_rel"),
        "mse_train": results.get("mse_train"),
        "mse_test": results.get("mse_test"),
        "spike_f1": spikes.get("f1"),
        "fit_seconds": results.get("fit_seconds"),
        "run_seconds": wall,
        "train_frames": None if window is None else f"[{window[0]}, {window[1]})",
    }


def window_note(rows: dict[str, dict[str, Any]]) -> str:
    """A warning line when the runs were trained on different windows (their MSE rows then compare
    different frames: ``setup1_pinn`` trains on 90 % of the frames, ``setup1_crlsm`` on the paper's
    211 of 361; pass ``physics.train_fraction=...`` to compare on one window), else ``""``."""
    windows = {name: row.get("train_frames") for name, row in rows.items()}
    if len(set(windows.values())) <= 1:
        return ""
    listed = ", ".join(f"{name} frames {w}" for name, w in windows.items())
    return (f"Note: the runs were trained on different windows ({listed}); their MSE rows compare "
            "different frames. Add physics.train_fraction=<f> to compare them on one window.\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    names = list(rows)
    lines = ["| quantity | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(rows[n].get(key)) for n in names) + " |")
    return "\n".join(lines) + "\n"


def simulate_from_results(cfg: DictConfig, results: dict[str, Any]) -> torch.Tensor:
    """Simulate the fitted consensus problem of ``results`` on the run's graph, window by window."""
    data = load_cell_graph(cfg.data).data
    setup = resolve_setup(data, **OmegaConf.to_container(cfg.setup, resolve=True))
    w, _ = edge_weights(data.edge_attr.double(), float(results["edge_weight_scale"]))
    gamma = torch.zeros(data.num_nodes, dtype=torch.float64)
    index = {int(c): i for i, c in enumerate(data.cell_id.tolist())}
    for cell, value in results["gamma"].items():
        gamma[index[int(cell)]] = float(value)
    x = data.x.double()
    frames = results["simulation"]
    out = x.clone()
    for start, stop in (frames["train_frames"], frames["test_frames"]):
        if stop - start < 2:
            continue
        window = slice(start, stop)
        out[:, window] = simulate_consensus(
            x[:, window], data.t.double()[window], data.edge_index, w, setup.modelled,
            float(results["k"]), gamma, substeps=int(frames.get("substeps", 10)),
        )
    return out


def plot_overlay(path: Path, cfg: DictConfig, runs: dict[str, dict[str, Any]], n_cells: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_cell_graph(cfg.data).data
    setup = resolve_setup(data, **OmegaConf.to_container(cfg.setup, resolve=True))
    picks = torch.linspace(0, setup.num_modelled - 1, min(n_cells, setup.num_modelled)).long()
    rows = setup.modelled_index[picks]
    sims = {name: simulate_from_results(cfg, res) for name, res in runs.items()}
    n_frames = data.x.shape[1]
    ends = sorted({time_split(n_frames, r["simulation"]["train_fraction"])[0].stop for r in runs.values()})
    t = data.t.numpy()
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.2 * len(rows)), sharex=True, squeeze=False)
    for ax, row in zip(axes[:, 0], rows.tolist(), strict=True):
        ax.plot(t, data.x[row].numpy(), color="k", lw=1.0, label="observed")
        for name, sim in sims.items():
            ax.plot(t, sim[row].numpy(), lw=1.0, label=name)
        for end in ends:
            ax.axvline(t[end - 1], color="grey", ls="--", lw=0.8)
        ax.set_ylabel(f"cell {int(data.cell_id[row])}")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (s); dashed: end of each run's training window")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crlsm", default="setup1_crlsm", help="CRLSM experiment (default setup1_crlsm)")
    parser.add_argument("--pinn", default="setup1_pinn", help="PINN experiment (default setup1_pinn)")
    parser.add_argument("--out", default=None, help="output folder (default outputs/compare/<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides shared by both runs")
    args = parser.parse_args(argv)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or Path("outputs") / "compare" / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = ["logger=none", "callbacks=none", *args.overrides]
    runs: dict[str, dict[str, Any]] = {}
    rows: dict[str, dict[str, Any]] = {}
    cfg = None
    for label, experiment in (("CRLSM", args.crlsm), ("PINN", args.pinn)):
        cfg = compose_run(experiment, overrides, out / label.lower())
        start = time.perf_counter()
        results = train(cfg)
        runs[label] = results
        rows[label] = summarise(results, time.perf_counter() - start)
    (out / "comparison.json").write_text(json.dumps({"overrides": args.overrides, "runs": rows}, indent=2))
    note = window_note(rows)
    (out / "comparison.md").write_text(
        f"# CRLSM vs PINN ({args.crlsm} / {args.pinn}; overrides: {' '.join(args.overrides) or 'none'})\n\n"
        + markdown_table(rows)
        + ("\n" + note if note else "")
    )
    assert cfg is not None
    plot_overlay(out / "traces_overlay.png", cfg, runs)
    print((out / "comparison.md").read_text())
    print(f"comparison: {out}")
    return out


if __name__ == "__main__":
    main()
