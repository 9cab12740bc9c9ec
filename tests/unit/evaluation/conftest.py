"""A tiny cell graph with ground truth for the evaluation tests.

A 4 x 4 grid of square cells (10 px side): the 4 interior cells are modelled, the 12 edge cells are
border cells driven by smooth pulses. The clean traces of the modelled cells are integrated with
scipy's ``solve_ivp`` (independent of the code under test) from a dense, hand-written consensus
matrix; the observed traces add Gaussian noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch_geometric.data import Data

from calcium_gnn.io.graph_schema import validate_graph

SIDE, ROWS, COLS = 10.0, 4, 4
TRUTH_K, TRUTH_SCALE = 0.05, 100.0  # u * l = 10 * 10 = 100 on every edge, so w_ij = 1
PULSE_HORIZON_S = 5000.0


def _border_input(t: np.ndarray | float, n: int) -> np.ndarray:
    """Smooth calcium pulses of cells 0..n-1: baseline 0.5 + 0.02 j plus a Gaussian spike every 120 s.

    Returns (n,) for a scalar ``t``, (n, T) for a (T,) array.
    """
    j = np.arange(n)[:, None]
    centres = 40.0 + 13.0 * j + 120.0 * np.arange(int(PULSE_HORIZON_S // 120))[None, :]  # (n, m)
    tt = np.asarray(t, dtype=float)
    pulses = np.exp(-0.5 * ((tt[..., None, None] - centres) / 12.0) ** 2).sum(axis=-1)  # (..., n)
    return np.moveaxis(0.5 + 0.02 * j[:, 0] + 0.8 * pulses, -1, 0)


def make_grid_graph(n_frames: int = 61, dt: float = 10.0, noise: float = 0.02, seed: int = 0) -> Data:
    n = ROWS * COLS
    rc = [(r, c) for r in range(ROWS) for c in range(COLS)]
    pairs = [(a, b) for a in range(n) for b in range(n)
             if abs(rc[a][0] - rc[b][0]) + abs(rc[a][1] - rc[b][1]) == 1]
    edge_index = torch.tensor(pairs, dtype=torch.long).t().contiguous()
    e = edge_index.shape[1]
    touches = torch.tensor([r in (0, ROWS - 1) or c in (0, COLS - 1) for r, c in rc])
    modelled = ~touches
    gamma = np.where(modelled.numpy(), 0.002 + 0.001 * np.arange(n) / n, np.nan)

    t = np.arange(n_frames) * dt
    # dense consensus matrix with w_ij = 1: dy_i/dt = k/|N_i| sum_j (z_j - y_i) + gamma_i
    adj = np.zeros((n, n))
    adj[edge_index[1].numpy(), edge_index[0].numpy()] = 1.0
    deg = adj.sum(axis=1)
    mod = modelled.numpy()
    idx = np.flatnonzero(mod)

    def rhs(tt: float, y: np.ndarray) -> np.ndarray:
        z = _border_input(tt, n)
        z[idx] = y
        drive = TRUTH_K / deg[idx] * (adj[idx] @ z - deg[idx] * y)
        return drive + gamma[idx]

    y0 = np.full(idx.size, 0.6)
    sol = solve_ivp(rhs, (0.0, t[-1]), y0, t_eval=t, method="DOP853", rtol=1e-10, atol=1e-12)
    clean = _border_input(t, n)
    clean[idx] = sol.y
    rng = np.random.default_rng(seed)
    observed = clean + noise * rng.standard_normal(clean.shape)

    data = Data(
        x=torch.tensor(observed, dtype=torch.float32),
        t=torch.tensor(t, dtype=torch.float32),
        pos=torch.tensor([[SIDE * (c + 0.5), SIDE * (r + 0.5)] for r, c in rc], dtype=torch.float32),
        edge_index=edge_index,
        edge_attr=torch.full((e, 1), SIDE * SIDE),
        u=torch.full((e,), SIDE),
        l=torch.full((e,), SIDE),
        area=torch.full((n,), SIDE * SIDE),
        touches_edge=touches,
        cell_id=torch.arange(1, n + 1),
        dt=dt,
        pixel_size=float("nan"),
        unit="px",
        truth_k=TRUTH_K,
        truth_gamma=torch.tensor(gamma, dtype=torch.float64),
        truth_edge_weight_scale=TRUTH_SCALE,
        truth_x=torch.tensor(clean, dtype=torch.float64),
    )
    return validate_graph(data)


def grid_labels() -> np.ndarray:
    """(40, 40) label image of the grid: cell id r * COLS + c + 1 on its square."""
    labels = np.zeros((int(SIDE) * ROWS, int(SIDE) * COLS), dtype=np.int32)
    for r in range(ROWS):
        for c in range(COLS):
            s = int(SIDE)
            labels[s * r : s * (r + 1), s * c : s * (c + 1)] = r * COLS + c + 1
    return labels


@pytest.fixture(scope="session")
def grid_graph() -> Data:
    return make_grid_graph()


@pytest.fixture(scope="session")
def grid_label_image() -> np.ndarray:
    return grid_labels()


@pytest.fixture(scope="session")
def clean_grid_graph() -> Data:
    """Noise-free and sampled every 5 s: only the frame-wise interpolation of the pulses is lost."""
    return make_grid_graph(n_frames=121, dt=5.0, noise=0.0)
