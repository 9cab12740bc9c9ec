"""Time for a PINN to identify k within 5%: ``setup1_pinn`` vs the paper's configuration.

    python benchmarks/bench_pinn.py [--noise 0.0] [--paper-epochs 500] [--budget-s 1200] [--threads 1]
    python benchmarks/bench_pinn.py --ablation [--noise 0.01] [--threads 1]

Both models are built from the real configs (``experiment=setup1_pinn`` and ``setup1_pinn_paper``)
on the default synthetic culture (108 cells, 361 frames, setup I) and trained with Lightning; after
every optimisation step the relative error of k is checked. Prints, for each, the wall time and step
at which ``|k - k*| / k* < 0.05`` first held (or that it never did, with the error it ended at and
its wall time), the final k / gamma errors, and the ratio paper / setup1_pinn (a lower bound when the
paper's configuration never gets there). ``--ablation`` instead runs ``setup1_pinn`` with one change
at a time (:data:`ABLATIONS`) and prints a markdown table (the one in ``docs/pinn.md``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.train import CONFIG_DIR

TARGET = 0.05
#: (label, model overrides): setup1_pinn with one choice undone at a time
ABLATIONS: tuple[tuple[str, list[str]], ...] = (
    ("setup1_pinn (all changes)", []),
    ("no data-only pretraining", ["model.pretrain_steps=0"]),
    ("no Fourier features", ["model.net.fourier=null"]),
    ("Fourier f_max 64 (not 24)",
     ["model.fourier_periods_per_frame=null", "model.net.fourier.max_frequency=64.0"]),
    ("no loss normalisation", ["model.normalize_losses=false"]),
    ("raw time / outputs", ["model.scale_time=false", "model.scale_output=false"]),
    ("raw k, gamma (projected)", ["model.parametrization=raw"]),
    ("Adam only (no L-BFGS)", ["model.lbfgs_steps=0", "model.adam_steps=900", "trainer.max_epochs=9"]),
    ("collocation at the frames only (x1, not x4)", ["model.interpolation_factor=1"]),
    ("collocation x10 interpolated", ["model.interpolation_factor=10"]),
    ("border cells driven by their data (paper)", ["model.border_trial=data"]),
    ("start from CRLSM", ["model.init_from=crlsm"]),
)


class KWatch(L.Callback):
    """Records when ``fit/k_rel_err`` first drops below ``target``; stops a run past ``budget_s``."""

    def __init__(self, target: float, budget_s: float) -> None:
        self.target, self.budget_s = target, budget_s
        self.start = time.perf_counter()
        self.hit: tuple[float, int] | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        elapsed = time.perf_counter() - self.start
        if self.hit is None and pl_module.fit_metrics()["fit/k_rel_err"] < self.target:
            self.hit = (elapsed, trainer.global_step)
        if elapsed > self.budget_s:
            trainer.should_stop = True


def run(experiment: str, data, budget_s: float, overrides: list[str]) -> dict[str, Any]:  # noqa: ANN001
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"experiment={experiment}", *overrides])
    setup = resolve_setup(data, **OmegaConf.to_container(cfg.setup, resolve=True))
    model = hydra.utils.instantiate(cfg.model, data=data, setup=setup, _recursive_=False)
    watch = KWatch(TARGET, budget_s)
    trainer = L.Trainer(max_epochs=int(cfg.trainer.max_epochs), accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[watch])
    watch.start = time.perf_counter()
    trainer.fit(model, datamodule=CellGraphDataModule(data, steps_per_epoch=model.steps_per_epoch))
    wall = time.perf_counter() - watch.start
    return {"hit": watch.hit, "wall": wall, "steps": trainer.global_step, "epochs": trainer.current_epoch,
            **model.fit_metrics()}


def report(name: str, r: dict[str, Any]) -> None:
    hit = (f"k within 5% after {r['hit'][0]:.1f} s (step {r['hit'][1]})" if r["hit"]
           else "k never within 5%")
    print(f"{name:>18}: {hit}; ran {r['steps']} steps in {r['wall']:.1f} s; final k = {r['fit/k']:.5f} "
          f"(rel err {r['fit/k_rel_err']:.3f}), gamma median abs err / mean = "
          f"{r['fit/gamma_medae_over_mean']:.3f}, gamma MAE = {r['fit/gamma_mae']:.2e}")


def ablation(data, budget_s: float) -> None:  # noqa: ANN001
    print("| variant | k rel. err | gamma median abs err / mean gamma | time to k within 5% (s) | wall (s) |")
    print("|---|---|---|---|---|")
    for label, overrides in ABLATIONS:
        r = run("setup1_pinn", data, budget_s, overrides)
        hit = f"{r['hit'][0]:.1f}" if r["hit"] else "never"
        print(f"| {label} | {r['fit/k_rel_err']:.4f} | {r['fit/gamma_medae_over_mean']:.4f} | {hit} | "
              f"{r['wall']:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise", type=float, default=0.0, help="observation noise (fraction of range)")
    parser.add_argument("--paper-epochs", type=int, default=500, help="epochs of the paper's run (500)")
    parser.add_argument("--budget-s", type=float, default=1200.0, help="wall-time cap of each run (s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    parser.add_argument("--ablation", action="store_true", help="run the ablation table instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = truth_graph(make_culture(render=False), noise=args.noise, seed=1)
    print(f"culture: {data.num_nodes} cells, {data.x.shape[1]} frames, noise={args.noise}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs (shared machine: timings are pessimistic)")
    if args.ablation:
        ablation(data, args.budget_s)
        return
    ours = run("setup1_pinn", data, args.budget_s, [])
    report("setup1_pinn", ours)
    paper = run("setup1_pinn_paper", data, args.budget_s, [f"trainer.max_epochs={args.paper_epochs}"])
    report("setup1_pinn_paper", paper)
    if ours["hit"] is None:
        print("ratio: undefined (setup1_pinn did not reach 5%)")
    elif paper["hit"] is not None:
        print(f"ratio (paper / setup1_pinn time to 5%): {paper['hit'][0] / ours['hit'][0]:.1f}x")
    else:
        print(f"ratio (paper / setup1_pinn time to 5%): > {paper['wall'] / ours['hit'][0]:.1f}x "
              f"(never got there; it ended at k error {paper['fit/k_rel_err']:.3f})")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
