"""make_culture and truth_graph: determinism, shapes, physics of the traces, rendering, schema."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from calcium_gnn.data.synthetic import culture_params, make_culture, truth_graph
from calcium_gnn.data.synthetic_dynamics import coupling_matrix
from calcium_gnn.data.synthetic_imaging import dye_response
from calcium_gnn.errors import ConfigError
from calcium_gnn.io.graph_schema import validate_graph

TINY = {"n_cells": 20, "size": 128, "n_frames": 60}


def consensus_rhs(culture) -> np.ndarray:
    """Eq. (3) evaluated on the clean traces at every frame: (N, T) (rows of drivers are meaningless)."""
    C = coupling_matrix(culture.n_cells, culture.edge_index, culture.weight, culture.k)
    row_sum = np.asarray(C.sum(axis=1)).ravel()
    return C @ culture.traces - row_sum[:, None] * culture.traces + np.nan_to_num(culture.gamma)[:, None]


def region_means(movie: np.ndarray, labels: np.ndarray, n_cells: int) -> np.ndarray:
    """Mean of every label region per frame: (N, T)."""
    flat = labels.ravel()
    indicator = sp.csr_matrix(
        (np.ones(flat.size), (np.arange(flat.size), flat)), shape=(flat.size, n_cells + 1)
    )
    sums = np.asarray(movie.reshape(len(movie), -1).astype(float) @ indicator)
    return (sums / np.bincount(flat, minlength=n_cells + 1))[:, 1:].T


def test_shapes_and_dtypes(small_culture):
    c = small_culture
    n, t, e = c.n_cells, c.n_frames, c.edge_index.shape[1]
    assert (n, t) == (24, 80) and c.traces.shape == (24, 80) and c.traces.dtype == np.float64
    assert c.labels.shape == (160, 160) and c.labels.dtype == np.int32 and c.labels.max() == n
    assert c.movie.shape == (80, 160, 160) and c.movie.dtype == np.uint16
    assert c.edge_index.shape == (2, e) and c.l.shape == c.u.shape == (e,)
    assert c.centroids.shape == (n, 2) and c.areas.shape == (n,)
    np.testing.assert_array_equal(c.cell_ids, np.arange(1, n + 1))
    np.testing.assert_allclose(c.t, np.arange(80) * 10.0)
    assert c.hot_pixels.shape[1] == 3 and c.hot_pixels.dtype == np.int64


def test_truth_parameters(small_culture):
    c = small_culture
    np.testing.assert_array_equal(c.is_driver, c.touches_edge)
    assert 0 < c.is_driver.sum() < c.n_cells
    assert np.all(np.isnan(c.gamma[c.is_driver]))
    assert np.all((c.gamma[~c.is_driver] >= 2e-4) & (c.gamma[~c.is_driver] <= 1e-3))
    assert c.k == 0.02
    assert c.edge_weight_scale == pytest.approx(np.mean(c.u * c.l))
    assert c.weight.mean() == pytest.approx(1.0)
    assert 0.05 < c.traces.min() and c.traces.max() < 5.0  # calcium levels O(0.1-1)


def test_determinism_and_seeds():
    a = make_culture(seed=5, **TINY, render=True)
    b = make_culture(seed=5, **TINY, render=True)
    other = make_culture(seed=6, **TINY, render=False)
    np.testing.assert_array_equal(a.traces, b.traces)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.movie, b.movie)
    np.testing.assert_array_equal(a.hot_pixels, b.hot_pixels)
    assert not np.array_equal(a.labels, other.labels)
    # rendering later gives the same movie (independent random streams)
    np.testing.assert_array_equal(make_culture(seed=5, **TINY, render=False).movie, a.movie)


def test_traces_follow_the_consensus_ode():
    """Trapezoid residual of eq. (3) on the clean traces, at a frame interval fine enough to resolve them."""
    residuals = []
    for dt in (1.0, 0.5):
        c = make_culture(seed=2, n_cells=24, size=160, n_frames=int(120 / dt) + 1, dt=dt, render=False)
        f = consensus_rhs(c)
        ode = ~c.is_driver
        residual = np.diff(c.traces, axis=1) / dt - 0.5 * (f[:, 1:] + f[:, :-1])
        residuals.append(np.abs(residual[ode]).max() / np.abs(f[ode]).max())
        # a wrong k breaks the equation
        wrong = np.diff(c.traces, axis=1) / dt - 0.5 * 1.5 * (f[:, 1:] + f[:, :-1])
        assert np.abs(wrong[ode]).max() / np.abs(f[ode]).max() > 0.1
    assert residuals[0] < 0.02
    assert residuals[1] < residuals[0] / 2.5  # same culture (same duration), second order in dt


def test_initial_state_is_the_steady_state(small_culture):
    f = consensus_rhs(small_culture)
    assert np.abs(f[~small_culture.is_driver, 0]).max() < 1e-12


def test_interior_cells_show_propagated_transients():
    rich = make_culture(seed=1, n_cells=60, size=300, n_frames=181, render=False)
    quiet = make_culture(
        seed=1,
        n_cells=60,
        size=300,
        n_frames=181,
        render=False,
        event_rate=0.0,
        wave_rate=0.0,
        drift_amplitude_range=(0.0, 0.0),
    )
    ode = ~rich.is_driver
    assert ode.sum() >= 20
    steps = np.arange(rich.n_frames)

    def detrended_std(traces):
        fit = np.polynomial.polynomial.polyfit(steps, traces.T, 1)
        return (traces - np.polynomial.polynomial.polyval(steps, fit)).std(axis=1)

    span = rich.traces.max() - rich.traces.min()
    assert detrended_std(rich.traces[ode]).min() > 0.01 * span  # no flat line among interior cells
    assert np.abs(np.diff(quiet.traces[ode], axis=1)).max() < 1e-12  # without driver activity: flat


def test_movie_region_means_track_the_traces(small_culture):
    c = small_culture
    means = region_means(c.movie, c.labels, c.n_cells)
    assert np.corrcoef(means.ravel(), c.traces.ravel())[0, 1] > 0.99
    per_cell = [np.corrcoef(means[i], c.traces[i])[0, 1] for i in range(c.n_cells)]
    assert np.median(per_cell) > 0.99 and min(per_cell) > 0.9


def test_noiseless_rendering_is_the_dye_response():
    c = make_culture(seed=4, **TINY, imaging_noise=0.0, blur_sigma=0.0, bleach_time=1e12, hot_frames=0)
    p = c.params
    # the renderer works in float32: round the same float32 values
    dye = dye_response(c.traces, p["f_min"], p["f_max"], p["k_d"]).astype(np.float32)
    expected = np.rint(dye * np.float32(p["gain"]) + np.float32(p["offset"]))
    rows, cols = np.nonzero(c.labels)
    np.testing.assert_array_equal(c.movie[:, rows, cols], expected[c.labels[rows, cols] - 1].T)
    assert np.all(c.movie[:, c.labels == 0] == p["f_membrane"] + p["offset"])


def test_hot_pixels_where_reported(small_culture):
    c = small_culture
    hot = c.hot_pixels
    assert len(hot) >= 4 and np.all(hot[:, 0] < c.n_frames) and np.all(hot[:, 1:] < 160)
    assert np.all(c.movie[hot[:, 0], hot[:, 1], hot[:, 2]] == c.params["hot_value"])
    assert (c.movie == c.params["hot_value"]).sum() == len(hot)  # and nowhere else


def test_truth_graph_schema(small_culture, small_truth_graph):
    g, c = small_truth_graph, small_culture
    assert validate_graph(g) is g
    n = c.n_cells
    ei = g.edge_index
    assert ei.shape[1] == 2 * c.edge_index.shape[1]
    pairs = set(map(tuple, ei.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs) and all(i != j for i, j in pairs)
    torch.testing.assert_close(g.edge_attr[:, 0], g.u * g.l)
    np.testing.assert_allclose(g.edge_attr[:, 0].double().mean(), c.edge_weight_scale, rtol=1e-5)
    assert torch.equal(g.x, g.truth_x) and g.x.shape == (n, 80)
    np.testing.assert_array_equal(g.cell_id.numpy(), np.arange(1, n + 1))
    np.testing.assert_allclose(g.pos.numpy(), c.centroids, rtol=1e-6)
    assert torch.equal(g.is_driver, torch.as_tensor(c.is_driver)) and torch.equal(g.touches_edge, g.is_driver)
    assert torch.isnan(g.truth_gamma[g.is_driver]).all() and torch.isfinite(g.truth_gamma[~g.is_driver]).all()
    assert g.truth_k == 0.02 and g.truth_edge_weight_scale == c.edge_weight_scale
    assert g.dt == 10.0 and g.unit == "px" and np.isnan(g.pixel_size)
    assert torch.equal(g.t, torch.arange(80, dtype=torch.float32) * 10.0)


def test_truth_graph_noise_is_a_fraction_of_the_range(small_culture):
    g = truth_graph(small_culture, noise=0.05, seed=3, dtype=torch.float64)
    span = small_culture.traces.max() - small_culture.traces.min()
    assert (g.x - g.truth_x).std().item() == pytest.approx(0.05 * span, rel=0.05)
    assert torch.equal(g.x, truth_graph(small_culture, noise=0.05, seed=3, dtype=torch.float64).x)
    assert not torch.equal(g.x, truth_graph(small_culture, noise=0.05, seed=4, dtype=torch.float64).x)
    with pytest.raises(ConfigError, match="noise"):
        truth_graph(small_culture, noise=-1.0)


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="^k: "):
        make_culture(k=-0.1, **TINY)
    with pytest.raises(ConfigError, match="^dt: "):
        make_culture(dt=0.0, **TINY)
    with pytest.raises(ConfigError, match="^bogus: "):
        culture_params(bogus=1)


def test_lazy_rendering():
    c = make_culture(seed=9, **TINY, render=False)
    assert not c.has_movie
    assert c.movie.shape == (60, 128, 128) and c.has_movie


@pytest.mark.slow
def test_default_culture_generation_time():
    start = time.perf_counter()
    c = make_culture(seed=0)
    elapsed = time.perf_counter() - start
    assert c.movie.shape == (361, 512, 512) and c.movie.dtype == np.uint16
    assert c.n_cells == 108
    assert elapsed < 20.0, f"default culture took {elapsed:.1f} s"


def test_k_is_identifiable_from_the_frames():
    """Least squares on the 10 s frames (trapezoid rule, per-cell gamma) recovers k to a few percent."""
    c = make_culture(seed=3, n_cells=60, size=300, n_frames=181, render=False)
    ode = ~c.is_driver
    coupling = consensus_rhs(c) - np.nan_to_num(c.gamma)[:, None]  # k/|N| sum_j w (z_j - y_i)
    regressor = 0.5 * (coupling[ode, 1:] + coupling[ode, :-1]) / c.k
    target = np.diff(c.traces[ode], axis=1) / c.dt
    regressor -= regressor.mean(axis=1, keepdims=True)  # per-cell gamma_i absorbs the means
    target -= target.mean(axis=1, keepdims=True)
    k_hat = (regressor * target).sum() / (regressor**2).sum()
    assert k_hat == pytest.approx(c.k, rel=0.05)
