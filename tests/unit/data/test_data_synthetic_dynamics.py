"""The ground-truth dynamics: transient shape, eq. (3) assembly, RK4 against exact solutions."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.data.synthetic_dynamics import (
    consensus_system,
    coupling_matrix,
    draw_driver_transients,
    rk4,
    simulate_culture,
    transient_shape,
)
from calcium_gnn.errors import ConfigError

# two cells: node 0 a driver d(t) = a exp(-t / tau), node 1 an ODE cell with the single neighbour 0
A_DRIVE, TAU, W, K, GAMMA = 1.0, 30.0, 1.5, 0.1, 0.01
ALPHA = K * W  # k/|N_1| * w_01 with |N_1| = 1


def exponential_driver(t: np.ndarray) -> np.ndarray:
    return A_DRIVE * np.exp(-np.asarray(t) / TAU)[None, :]


def exact_two_cell(t: np.ndarray) -> np.ndarray:
    """y' = alpha (a e^{-t/tau} - y) + gamma, y(0) = a + gamma/alpha (steady state for d(0) = a)."""
    particular = ALPHA * A_DRIVE / (ALPHA - 1.0 / TAU)
    c = A_DRIVE + GAMMA / ALPHA - GAMMA / ALPHA - particular
    return GAMMA / ALPHA + c * np.exp(-ALPHA * t) + particular * np.exp(-t / TAU)


def two_cell_system():
    return consensus_system(
        2, np.array([[0], [1]]), np.array([W]), K, np.array([0.0, GAMMA]), np.array([True, False])
    )


def test_transient_shape_peaks_at_one_and_starts_at_zero():
    rise, decay = 4.0, 80.0
    s_peak = rise * np.log(1.0 + 2.0 * decay / rise)
    assert transient_shape(np.array([s_peak]), rise, decay)[0] == pytest.approx(1.0, rel=1e-12)
    s = np.linspace(-10.0, 400.0, 4001)
    g = transient_shape(s, rise, decay)
    assert g.max() <= 1.0 + 1e-12
    assert np.all(g[s <= 0] == 0.0)
    assert 10.0 <= s_peak <= 20.0  # the documented fast rise
    assert g[np.searchsorted(s, s_peak + 2 * decay)] < 0.2  # slow exponential decay


def test_coupling_matrix_by_hand():
    # path 0 - 1 - 2, weights 2 and 4, k = 0.5: row i is k/|N_i| * w_ij
    C = coupling_matrix(3, np.array([[0, 1], [1, 2]]), np.array([2.0, 4.0]), 0.5).toarray()
    expected = np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 1.0], [0.0, 2.0, 0.0]])
    np.testing.assert_allclose(C, expected)


def test_system_matrices_by_hand():
    # path 0 - 1 - 2 with drivers 0 and 2: dy_1/dt = k/2 (w01 (d0 - y1) + w12 (d2 - y1)) + g1
    system = consensus_system(
        3,
        np.array([[0, 1], [1, 2]]),
        np.array([2.0, 4.0]),
        0.5,
        np.array([0, 0.3, 0]),
        np.array([1, 0, 1], bool),
    )
    np.testing.assert_allclose(system.A.toarray(), [[-1.5]])
    np.testing.assert_allclose(system.B.toarray(), [[0.5, 1.0]])
    np.testing.assert_allclose(system.steady_state(np.array([1.0, 2.0])), [(0.5 + 2.0 + 0.3) / 1.5])


def test_rk4_matches_the_exact_two_cell_solution():
    t = np.arange(31) * 10.0
    traces = simulate_culture(two_cell_system(), exponential_driver, t, substeps=20)
    np.testing.assert_allclose(traces[0], A_DRIVE * np.exp(-t / TAU))
    np.testing.assert_allclose(traces[1], exact_two_cell(t), rtol=0, atol=5e-8)


def test_rk4_is_fourth_order():
    t = np.arange(11) * 10.0
    system = two_cell_system()
    y0 = system.steady_state(exponential_driver(t[:1])[:, 0])
    errors = [
        np.abs(rk4(system, exponential_driver, y0, t, s)[0] - exact_two_cell(t)).max() for s in (4, 8, 16)
    ]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 3.7) & (orders < 4.3)), orders


def test_constant_drivers_keep_the_steady_state():
    edges = np.array([[0, 1, 1, 2], [1, 2, 3, 3]])
    system = consensus_system(
        4, edges, np.array([1.0, 0.5, 2.0, 1.5]), 0.05, np.full(4, 1e-3), np.array([True, False, False, True])
    )
    traces = simulate_culture(system, lambda t: np.tile([[0.3], [0.7]], (1, len(t))), np.arange(20) * 10.0)
    np.testing.assert_allclose(traces, np.repeat(traces[:, :1], 20, axis=1), atol=1e-12)


def test_isolated_or_unfed_ode_cells_are_rejected():
    with pytest.raises(ConfigError, match="no neighbour"):
        consensus_system(
            3, np.array([[0], [1]]), np.ones(1), 0.1, np.zeros(3), np.array([True, False, False])
        )
    with pytest.raises(ConfigError, match="not connected to any driver"):
        consensus_system(
            4, np.array([[0, 2], [1, 3]]), np.ones(2), 0.1, np.zeros(4), np.array([True, False, False, False])
        )


def test_driver_transients_are_poisson_with_ranges():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 100, size=(50, 2))
    d = draw_driver_transients(50, 3600.0, rng, positions=positions, event_rate=1 / 300, wave_rate=0.0)
    assert len(d.event_time) == pytest.approx(50 * 12, rel=0.15)
    assert d.event_rise.min() >= 3.0 and d.event_decay.max() <= 120.0
    levels = d(np.linspace(0, 3600, 721))
    assert levels.shape == (50, 721) and levels.min() >= 0.2 - 0.05
    waves = draw_driver_transients(
        50, 3600.0, np.random.default_rng(1), positions=positions, event_rate=0.0, wave_rate=1 / 600
    )
    assert len(waves.event_time) > 0 and len(np.unique(waves.event_driver)) > 25
    with pytest.raises(ConfigError):
        draw_driver_transients(5, 100.0, rng, wave_rate=0.1)
