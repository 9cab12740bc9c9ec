"""The two kernels that set the time of the border-noise stage at thousands of cells (variable projection),
each against the previous release's way of doing the same thing, in one run on one machine.

1. ``modal_input_response`` (the modal response of every mode to K border drives, stepped frame by
   frame): frame-major storage (this release) vs stepping the (G, T, K) layout (the reference, kept
   below as it was). 1 drive + 8 Hutchinson probes, as one point of the weighted search.
2. The restricted preconditioner's ``N_HH`` over the held sets of an active-set profile fit: kept and
   extended row by row (``LinearNormalOperator.held_factor``, this release) vs formed afresh each round
   (the reference). The held sets imitate the 10,000-cell run of ``bench_scale.py`` (19 %, then 31 %,
   34 %, 34 %, 34 %, 34 % of the per-cell linear parameters held, a few per cent of them changing
   between rounds), scaled to the culture.

    .venv/bin/python benchmarks/bench_projection_kernels.py [--cells 3000]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from timing import best_of
from torch import Tensor

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.modal import frame_major, interval_coefficients, modal_input_response
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.variable_projection import LinearNormalOperator

#: the held share of the per-cell linear parameters per active-set round (10,000-cell run: 3,698, 5,878,
#: 6,523, 6,574, 6,512 and 6,504 of 19,266)
HELD_SHARES: tuple[float, ...] = (0.192, 0.305, 0.339, 0.341, 0.338, 0.338)


def reference_input_response(
    rate: Tensor, lengths: Tensor, which: Tensor, substeps: int, beta: Tensor, method: str = "rk4"
) -> Tensor:
    """The previous release's ``modal_input_response``: the recursion on the (G, T, K) layout."""
    coefficients = [interval_coefficients(rate, lengths[u], substeps, method) for u in range(lengths.numel())]
    xi = torch.zeros_like(beta)
    for n, group in enumerate(which.tolist()):
        phi, psi0, psi1 = coefficients[group]
        xi[:, n + 1] = (
            phi.reshape(-1, 1) * xi[:, n]
            + psi0.reshape(-1, 1) * beta[:, n]
            + psi1.reshape(-1, 1) * (beta[:, n + 1] - beta[:, n])
        )
    return xi


def held_sets(n_feeds: int, n_entries: int, seed: int) -> list[Tensor]:
    """Sorted held index sets (into the per-cell blocks) with the shares of :data:`HELD_SHARES` of
    ``n_entries``, all among the first ``n_feeds`` (the feeds); each round keeps most of the last one."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_feeds, generator=gen)
    sets = []
    for share in HELD_SHARES:
        count = min(int(round(share * n_entries)), n_feeds)
        chosen = order[:count].clone()
        swap = max(1, count // 100)  # a few released and others held instead
        chosen[:swap] = order[count : count + swap] if count + swap <= n_feeds else chosen[:swap]
        sets.append(chosen.unique())
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--probes", type=int, default=8)
    args = parser.parse_args()
    size = int(round(512 * math.sqrt(args.cells / 108)))
    culture = make_culture(seed=0, n_cells=args.cells, size=size, render=False)
    data = truth_graph(culture, noise=0.05, seed=0)
    model = OutputErrorODE(data=data, setup=resolve_setup(data), train_fraction=0.9)
    model.initialise()
    problem = model.problem
    basis = problem.modal_basis()
    g, n_frames = basis.lam.numel(), problem.x_train.shape[1]
    print(f"{args.cells} cells: G = {g} modelled, {n_frames} training frames, torch "
          f"{torch.get_num_threads()} threads", flush=True)

    rate = float(culture.k) * basis.lam
    beta = torch.randn(g, n_frames, 1 + args.probes, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    lengths, which = problem.interval_lengths, problem.interval_group
    inputs = (rate, lengths, which, problem.substeps, beta, problem.ode_method)
    t_ref, ref = best_of(lambda: reference_input_response(*inputs), 2)
    t_new, new = best_of(lambda: modal_input_response(*inputs), 2)
    stored = frame_major(beta)
    t_stored, _ = best_of(lambda: modal_input_response(rate, lengths, which, problem.substeps, stored,
                                                      problem.ode_method), 2)
    gap = float((new - ref).abs().max() / ref.abs().max())
    print(f"modal_input_response, {1 + args.probes} forcings: (G, T, K) layout {t_ref:.3f} s | frame-major "
          f"{t_new:.3f} s ({t_ref / t_new:.1f}x), stored frame-major {t_stored:.3f} s "
          f"({t_ref / t_stored:.1f}x) | max relative gap {gap:.1e}", flush=True)

    operator = LinearNormalOperator(problem, problem.theta())
    sets = held_sets(g, operator.size - operator.q, seed=1)
    t_reused = t_fresh = 0.0
    worst = 0.0
    for held in sets:
        start = time.perf_counter()
        factor = operator.held_factor(held)
        t_reused += time.perf_counter() - start
        kept = operator._held
        operator._held = None  # the reference: N_HH formed afresh
        start = time.perf_counter()
        fresh = operator.held_factor(held)
        t_fresh += time.perf_counter() - start
        operator._held = kept
        worst = max(worst, float((factor - fresh).abs().max() / fresh.abs().max()))
    sizes = ", ".join(str(h.numel()) for h in sets)
    print(f"N_HH over {len(sets)} active-set rounds (held {sizes}): afresh {t_fresh:.2f} s | kept and "
          f"extended {t_reused:.2f} s ({t_fresh / t_reused:.1f}x) | factors agree to {worst:.1e}", flush=True)


if __name__ == "__main__":
    main()
