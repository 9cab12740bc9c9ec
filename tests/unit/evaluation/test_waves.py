"""Wave analysis: radial and planar fits on analytic waves, map comparison, the report and its figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from calcium_gnn.data import zoo
from calcium_gnn.data.zoo_drivers import STIMULUS
from calcium_gnn.errors import ConfigError, GraphError
from calcium_gnn.evaluation.wave_figures import plot_activation_map
from calcium_gnn.evaluation.waves import compare_activation, planar_fit, radial_fit, wave_report
from calcium_gnn.graphs.activation import activation_times

SPACING = 20.0  # px between grid centroids
POINT = (117.3, 101.9)


def grid_positions(rng: np.random.Generator, side: int = 12, jitter: float = 4.0) -> np.ndarray:
    """(side^2, 2) centroids on a jittered square grid."""
    g = np.stack(np.meshgrid(np.arange(side) * SPACING, np.arange(side) * SPACING), -1).reshape(-1, 2)
    return g + rng.uniform(-jitter, jitter, g.shape)


def ramp_traces(onsets: np.ndarray, t: np.ndarray, width: float) -> np.ndarray:
    """(N, T) traces: 0 until the onset, a linear ramp to 1 over ``width`` s, then 1."""
    return np.clip((t[None, :] - onsets[:, None]) / width, 0.0, 1.0)


def test_radial_wave_from_traces_recovers_the_speed():
    rng = np.random.default_rng(0)
    pos = grid_positions(rng)
    speed, t0, dt = 2.5, 30.0, 1.0
    t = np.arange(200) * dt
    r = np.linalg.norm(pos - np.array(POINT), axis=1)
    x = ramp_traces(t0 + r / speed - 2.0, t, 4.0)  # crossing at t0 + r / v exactly
    times = activation_times(x, t, after=10.0)
    np.testing.assert_allclose(times, t0 + r / speed, atol=1e-9)
    wave = radial_fit(times, pos, POINT, pixel_size=0.5)
    assert wave.speed == pytest.approx(speed, rel=1e-9) and wave.t0 == pytest.approx(t0, abs=1e-6)
    assert wave.correlation == pytest.approx(1.0) and wave.n_used == wave.n_cells == len(pos)
    block = wave.as_dict()
    assert block["speed_um_s"] == pytest.approx(speed * 0.5)
    json.dumps(block, allow_nan=False)


def test_radial_and_planar_waves_with_noise_fall_in_their_intervals():
    rng = np.random.default_rng(1)
    pos = grid_positions(rng)
    r = np.linalg.norm(pos - np.array(POINT), axis=1)
    radial = radial_fit(10.0 + r / 2.5 + rng.normal(0.0, 2.0, r.size), pos, POINT)
    low, high = radial.speed_interval
    assert low < 2.5 < high and radial.correlation > 0.9 and radial.rank_correlation > 0.9
    # planar: speed 4 px/s towards 200 degrees (left and up the image: atan2 in image coordinates)
    direction = math.radians(200.0)
    g = np.array([math.cos(direction), math.sin(direction)]) / 4.0
    planar = planar_fit(5.0 + pos @ g + rng.normal(0.0, 2.0, r.size), pos)
    assert planar.speed_interval[0] < 4.0 < planar.speed_interval[1]
    low, high = planar.direction_interval
    assert low < -160.0 < high  # 200 degrees is -160 in atan2's (-180, 180]
    assert planar.as_dict()["speed_um_s"] is None  # no pixel size


def test_interval_coverage_is_near_its_level():
    rng = np.random.default_rng(2)
    reps, radial_hits, speed_hits, angle_hits = 200, 0, 0, 0
    g = np.array([math.cos(math.radians(30.0)), math.sin(math.radians(30.0))]) / 4.0
    for _ in range(reps):
        pos = grid_positions(rng, side=8)
        r = np.linalg.norm(pos - np.array(POINT), axis=1)
        low, high = radial_fit(10.0 + r / 2.5 + rng.normal(0.0, 2.0, r.size), pos, POINT, robust=False)\
            .speed_interval
        radial_hits += low <= 2.5 <= high
        planar = planar_fit(5.0 + pos @ g + rng.normal(0.0, 2.0, r.size), pos, robust=False)
        speed_hits += planar.speed_interval[0] <= 4.0 <= planar.speed_interval[1]
        angle_hits += planar.direction_interval[0] <= 30.0 <= planar.direction_interval[1]
    for hits in (radial_hits, speed_hits, angle_hits):
        assert 0.84 <= hits / reps <= 0.96  # level 0.9; binomial SD 0.021


def test_robust_screen_ignores_cells_off_the_wave():
    rng = np.random.default_rng(3)
    pos = grid_positions(rng)
    r = np.linalg.norm(pos - np.array(POINT), axis=1)
    times = 10.0 + r / 2.5 + rng.normal(0.0, 1.0, r.size)
    off = rng.random(r.size) < 0.15  # 15 % of the cells activate at random (a drift, another event)
    times[off] = rng.uniform(0.0, 100.0, off.sum())
    times[rng.random(r.size) < 0.1] = np.nan  # and some never activate
    robust = radial_fit(times, pos, POINT)
    assert robust.speed_interval[0] < 2.5 < robust.speed_interval[1]
    assert not robust.used[off].any() or robust.used[off].mean() < 0.3
    plain = radial_fit(times, pos, POINT, robust=False)
    assert abs(plain.speed - 2.5) > abs(robust.speed - 2.5)


def test_inward_wave_reports_no_speed_and_too_few_cells_raise():
    rng = np.random.default_rng(4)
    pos = grid_positions(rng, side=5)
    r = np.linalg.norm(pos - np.array((40.0, 40.0)), axis=1)
    inward = radial_fit(100.0 - r / 2.0, pos, (40.0, 40.0))
    assert inward.speed is None and inward.as_dict()["speed_px_s"] is None
    with pytest.raises(GraphError):
        radial_fit(np.array([1.0, 2.0, np.nan]), pos[:3], (0.0, 0.0))
    with pytest.raises(GraphError):
        planar_fit(np.ones(4), pos[:4])
    with pytest.raises(GraphError):
        radial_fit(np.ones(5), pos[:4], (0.0, 0.0))
    with pytest.raises(ConfigError):
        planar_fit(100.0 - r / 2.0, pos, level=1.5)


def test_compare_activation_by_hand():
    obs = np.array([0.0, 1.0, 2.0, np.nan, 5.0, 7.0])
    sim = np.array([0.5, 3.0, np.nan, 4.0, 5.0, 0.0])
    cmp = compare_activation(obs, sim, 0.5, cells=[True, True, True, True, True, False])
    np.testing.assert_allclose(cmp.diff_frames, [1.0, 4.0, np.nan, np.nan, 0.0, np.nan])
    assert cmp.share_within == pytest.approx(2 / 3) and cmp.median_abs_diff_frames == pytest.approx(1.0)
    assert cmp.n_cells == 5 and cmp.n_both == 3
    assert cmp.only_observed.tolist() == [False, False, True, False, False, False]
    assert cmp.only_simulated.tolist() == [False, False, False, True, False, False]
    block = cmp.as_dict(np.arange(10, 16))
    assert block["only_observed"] == [12] and block["only_simulated"] == [13]
    assert block["diff_frames"] == {"10": 1.0, "11": 4.0, "14": 0.0}
    with pytest.raises(GraphError):
        compare_activation(obs, sim[:3], 1.0)
    assert cmp.share_within_noise is None and block["timing_se_s"] is None
    # observed times known to +-1 s (2 frames of 0.5 s): a difference of 2 frames is within 1.645 se
    noisy = compare_activation(obs, sim, 0.5, cells=[True, True, True, True, True, False],
                               timing_se=np.ones(6))
    assert noisy.share_within_noise == pytest.approx(2 / 3)  # cell 11 is 4 frames off: 2 s > 1.645 s
    assert noisy.as_dict(np.arange(10, 16))["timing_se_s"] == {"10": 1.0, "11": 1.0, "14": 1.0}
    with pytest.raises(GraphError, match="^timing_se:"):
        compare_activation(obs, sim, 0.5, timing_se=np.ones(2))


def test_a_right_simulation_of_slow_noisy_rises_is_within_the_noise_not_within_a_frame():
    """Slow rises (5 frames per noise sigma): the observed times scatter by several frames around the
    clean ones, so a simulation that is the clean truth misses "within one frame" on most cells, and
    is within the observed times' noise band on about 90 % or more; one 15 frames late is not."""
    rng = np.random.default_rng(11)
    pos = grid_positions(rng, side=12)
    t = np.arange(400) * 1.0
    r = np.linalg.norm(pos - np.array(POINT), axis=1)
    sigma, width = 0.02, 250.0  # slope 0.004 per frame: sigma / slope = 5 frames
    clean = ramp_traces(30.0 + r / 2.5, t, width)
    x = clean + sigma * rng.standard_normal(clean.shape)
    data = Data(x=torch.tensor(x), t=torch.tensor(t), pos=torch.tensor(pos),
                cell_id=torch.arange(1, len(pos) + 1))
    data.dt, data.pixel_size = 1.0, float("nan")
    cells = np.ones(len(pos), dtype=bool)
    cmp = wave_report(data, clean, modelled=cells, point=POINT, after=10.0)["comparison"]
    assert cmp["n_both"] == len(pos)
    se = np.array(list(cmp["timing_se_s"].values()))
    assert float(np.median(se)) == pytest.approx(5.0, rel=0.05)  # sigma estimated per cell
    assert 3.5 < se.min() and se.max() < 6.5
    assert cmp["share_within"] < 0.4
    assert cmp["share_within_noise"] >= 0.85
    late = wave_report(data, np.roll(clean, 15, axis=1), modelled=cells, point=POINT, after=10.0)
    assert late["comparison"]["share_within_noise"] < 0.2
    json.dumps(cmp, allow_nan=False)


def analytic_graph(rng: np.random.Generator, side: int = 8) -> tuple[Data, np.ndarray]:
    """A graph whose traces carry a radial wave from POINT at 2.5 px/s (onset 30 s); its label image."""
    pos = grid_positions(rng, side=side, jitter=0.0) + SPACING / 2
    t = np.arange(150) * 1.0
    r = np.linalg.norm(pos - np.array(POINT), axis=1)
    x = ramp_traces(30.0 + r / 2.5 - 2.0, t, 4.0) + 0.001 * rng.standard_normal((len(pos), t.size))
    x[0] = 0.0  # a cell that never activates
    labels = np.zeros((int(side * SPACING),) * 2, dtype=np.int32)
    half = int(SPACING / 2) - 1  # square cells with a 2 px gap between them
    for i, (cx, cy) in enumerate(pos.astype(int)):
        labels[cy - half : cy + half, cx - half : cx + half] = i + 1
    data = Data(x=torch.tensor(x), t=torch.tensor(t), pos=torch.tensor(pos),
                cell_id=torch.arange(1, len(pos) + 1))
    data.dt, data.pixel_size = 1.0, 0.65
    return data, labels


def test_wave_report_is_json_and_draws_the_map(tmp_path):
    rng = np.random.default_rng(5)
    data, labels = analytic_graph(rng)
    n = data.num_nodes
    modelled = np.ones(n, dtype=bool)
    modelled[:8] = False  # the first row follows its data
    simulated = data.x.numpy().copy()
    simulated[10:20] = np.roll(simulated[10:20], 3, axis=1)  # ten cells 3 frames late
    report = wave_report(data, simulated, modelled=modelled, point=POINT, after=10.0, labels=labels,
                         out_dir=tmp_path)
    json.dumps(report, allow_nan=False)
    assert report["activation_s"]["observed"]["1"] is None  # cell 1 never activates
    assert report["n_activated"] == {"observed": n - 1, "simulated": n - 1}
    radial = report["observed"]["radial"]
    assert radial["speed_px_s"] == pytest.approx(2.5, rel=0.02)
    assert radial["speed_um_s"] == pytest.approx(2.5 * 0.65, rel=0.02)
    assert radial["speed_interval_px_s"][0] < 2.5 < radial["speed_interval_px_s"][1]
    assert report["observed"]["planar"]["speed_px_s"] > 0
    cmp = report["comparison"]
    assert cmp["n_cells"] == n - 8 and cmp["n_both"] == n - 8
    assert cmp["share_within"] == pytest.approx((n - 8 - 10) / (n - 8))
    late = [cmp["diff_frames"][str(c)] for c in range(11, 21)]
    np.testing.assert_allclose(late, 3.0, atol=0.05)
    assert report["figures"] == ["activation_map.png"]
    assert (tmp_path / "activation_map.png").stat().st_size > 0
    # no simulation, no point: the observed planar fit only
    alone = wave_report(data, None, modelled=modelled)
    assert alone["comparison"] is None and "radial" not in alone["observed"] and alone["figures"] == []


def test_wave_report_refuses_bad_inputs():
    data, _ = analytic_graph(np.random.default_rng(6), side=4)
    n = data.num_nodes
    with pytest.raises(ConfigError) as caught:
        wave_report(data, None, modelled=np.ones(n, bool), point=[1.0])
    assert caught.value.culprit == "point"
    with pytest.raises(GraphError):
        wave_report(data, np.zeros((n, 3)), modelled=np.ones(n, bool))
    with pytest.raises(GraphError):
        wave_report(data, None, modelled=np.ones(n - 1, bool))


def test_scatter_map_without_labels(tmp_path):
    rng = np.random.default_rng(7)
    pos = grid_positions(rng, side=5)
    observed = rng.uniform(0, 10, len(pos))
    observed[3] = np.nan
    path = plot_activation_map(tmp_path / "map.png", pos, np.arange(1, 26), observed,
                               simulated=observed + 1, point=(40.0, 40.0), modelled=np.arange(25) > 4)
    assert path.exists() and path.stat().st_size > 0


def test_zoo_stimulus_member_has_an_outward_radial_wave():
    member = zoo.member("dev-3")
    assert member.family == "stimulus" and member.params["n_stimuli"] == 1
    data = zoo.member_graph(member)
    stimulated = int(np.flatnonzero(data.truth_driver_kind.numpy() == STIMULUS)[0])
    point = data.pos[stimulated].tolist()
    report = wave_report(data, None, modelled=~data.is_driver, point=point,
                         after=member.params["stimulus_time"])
    radial = report["observed"]["radial"]
    true_speed = member.params["wave_speed"] * member.params["cell_diameter"]  # px/s of the relays
    assert radial["speed_px_s"] > 0 and radial["correlation"] > 0.8 and radial["rank_correlation"] > 0.6
    assert true_speed / 1.5 < radial["speed_px_s"] < true_speed * 1.5
