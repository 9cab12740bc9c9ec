"""The culture zoo: determinism, the frozen and guarded test split, its ranges, the laws, rendering."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.integrate import solve_ivp

from calcium_gnn.data import zoo, zoo_split
from calcium_gnn.data.zoo_drivers import EDGE, MODELLED, PACEMAKER, RELAY, STIMULUS
from calcium_gnn.data.zoo_dynamics import phi1, phi2
from calcium_gnn.errors import ConfigError
from calcium_gnn.io.graph_files import load_graph, save_graph
from calcium_gnn.io.graph_schema import validate_graph
from calcium_gnn.physics.simulate import simulate_consensus

ROOT = Path(__file__).resolve().parents[3]
#: dev members searched for small examples (parameters only: cheap)
POOL = 80
#: "typical" members of the split: at most this many cells
TYPICAL_CELLS = 300
#: the fast frozen-split check rebuilds the graphs of the members with at most this many cells x frames
#: (40 of the 60, about 5 s); the others are rebuilt by the slow test
FAST_FINGERPRINT = 40_000
#: px from the membrane beyond which its blur is negligible (blur_sigma <= 2 px)
CLEAR_OF_MEMBRANE = 4.0


@pytest.fixture(scope="module")
def pool() -> list[zoo.ZooMember]:
    return zoo.dev_members(POOL)


@pytest.fixture(scope="module")
def split() -> list[zoo.ZooMember]:
    return zoo.test_members()


@pytest.fixture(scope="module")
def frozen() -> dict[str, dict]:
    return {entry["id"]: entry for entry in zoo_split.read_manifest()["members"]}


def smallest(pool, **where) -> zoo.ZooMember:
    """The member of ``pool`` with the fewest cells x frames among those whose params match ``where``."""
    chosen = [m for m in pool if all(m.params[k] == v for k, v in where.items())]
    assert chosen, f"no dev member with {where} among the first {POOL}"
    return min(chosen, key=lambda m: m.n_cells * m.n_frames)


def test_same_id_same_member_and_graph(pool):
    member = smallest(pool, family="stimulus")
    again = zoo.member(member.id)
    assert again == member and again.params == member.params
    a, b = zoo.member_graph(member), zoo.member_graph(again)
    for name in ("x", "truth_x", "edge_index", "u", "l", "truth_gamma", "is_driver", "truth_driver_kind"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0, equal_nan=True)
    assert a.truth_k == b.truth_k == member.k


def test_custom_members_are_deterministic_from_family_and_seed():
    a, b = zoo.custom_member("pacemaker", 5), zoo.member("pacemaker-5")
    assert a == b and a.family == "pacemaker" and a.split == "custom"
    assert zoo.custom_member("pacemaker", 6).params != a.params


@pytest.mark.parametrize(
    "bad", ["bogus", "test-60", "dev--1", "dev-x", "crystal-3", "Test-1", "", "test-1 "]
)
def test_bad_member_id_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="member id"):
        zoo.member(bad)


def test_bad_split_family_and_counts():
    with pytest.raises(ConfigError, match="unknown split"):
        zoo.members("train")
    with pytest.raises(ConfigError, match="unknown family"):
        zoo.custom_member("crystal", 1)
    with pytest.raises(ConfigError, match="n >= 0"):
        zoo.dev_members(-1)


def test_dev_and_test_never_share_a_member(pool, split):
    test_keys = {m.key for m in split}
    assert not test_keys & {m.key for m in pool}
    test_params = [m.params for m in split]
    assert not any(m.params in test_params for m in pool)
    assert [m.id for m in split] == [f"test-{i}" for i in range(zoo.N_TEST)]


def test_test_split_spans_the_ranges(split):
    p = {key: np.array([m.params[key] for m in split]) for key in split[0].params}
    assert len(split) >= 60
    assert p["k"].min() == pytest.approx(0.002) and p["k"].max() == pytest.approx(0.08)
    assert p["dt"].min() == pytest.approx(0.5) and p["dt"].max() == pytest.approx(20.0)
    assert p["cell_diameter"].min() == pytest.approx(15.0) and p["cell_diameter"].max() == pytest.approx(80.0)
    assert p["n_cells"].min() == 30 and p["n_cells"].max() == 2000
    assert p["n_frames"].min() == 100 and p["n_frames"].max() == 1000
    assert p["noise"].min() == 0.0 and p["noise"].max() == pytest.approx(0.05)
    assert p["timescale"].min() == pytest.approx(5.0) and p["timescale"].max() == pytest.approx(300.0)
    for key, options in zoo_split_choices().items():
        assert set(p[key]) == set(options), key
    assert (p["leak"][p["law"] == "leak"] > 0).all() and (p["leak"][p["law"] == "linear"] == 0).all()
    assert (p["law"] == "linear").sum() > len(split) / 2
    moderate = (p["n_cells"] <= TYPICAL_CELLS) & (p["n_frames"] <= 400)
    assert moderate.sum() >= 0.8 * len(split) and (~moderate).sum() >= 3
    assert (p["side"] <= 1024).all()


def zoo_split_choices() -> dict[str, tuple[str, ...]]:
    from calcium_gnn.data.zoo_params import CHOICES

    return CHOICES


def test_test_split_is_frozen(split, frozen):
    """Every test member's parameters, and the truth graph of the smaller ones, match the manifest."""
    assert sorted(frozen) == sorted(m.id for m in split)
    problems = []
    for m in split:
        entry = frozen[m.id]
        for key in zoo_split.MANIFEST_KEYS:
            if entry[key] != m.params[key]:
                problems.append(f"{m.id} {key}: {m.params[key]!r} != frozen {entry[key]!r}")
        if m.n_cells * m.n_frames <= FAST_FINGERPRINT:
            got = zoo_split.fingerprint(zoo.member_graph(m, dtype=torch.float64))
            problems += [f"{m.id} {p}" for p in zoo_split.fingerprint_problems(entry["fingerprint"], got)]
    assert not problems, "the generator changed the frozen test split:\n" + "\n".join(problems[:20])


@pytest.mark.slow
def test_large_test_members_are_frozen(split, frozen):
    for m in split:
        if m.n_cells * m.n_frames > FAST_FINGERPRINT:
            got = zoo_split.fingerprint(zoo.member_graph(m, dtype=torch.float64))
            assert not zoo_split.fingerprint_problems(frozen[m.id]["fingerprint"], got), m.id


def test_fingerprint_notices_a_change(pool):
    data = zoo.member_graph(smallest(pool), dtype=torch.float64)
    reference = zoo_split.fingerprint(data)
    assert not zoo_split.fingerprint_problems(reference, zoo_split.fingerprint(data))
    data.truth_x[0, 0] += 1e-3
    problems = zoo_split.fingerprint_problems(reference, zoo_split.fingerprint(data))
    assert [p.split()[0] for p in problems] == ["truth_x_signed"]
    data.edge_index = data.edge_index.flip(0)
    problems = zoo_split.fingerprint_problems(reference, zoo_split.fingerprint(data))
    assert any("structure" in p for p in problems)


def test_closed_test_split_refuses(monkeypatch, split):
    monkeypatch.setattr(zoo_split, "_closed", [])
    zoo.forbid_test_split("unit test")
    for ask in (zoo.test_members, lambda: zoo.member("test-0"), lambda: zoo.members("test"),
                lambda: zoo.member_graph(split[0])):
        with pytest.raises(ConfigError, match="test split is closed.*unit test"):
            ask()
    assert zoo.dev_members(1)[0].id == "dev-0"  # dev stays open


#: what in a file's text uses the test split
TEST_SPLIT_USE = re.compile(
    r"test_members\s*\(|[\"']test-\d|members\(\s*[\"']test[\"']|split\s*=\s*[\"']test[\"']"
)


def test_tuning_scripts_do_not_use_the_test_split():
    """Only ``zoo_split.TEST_SPLIT_USERS`` may name the test split; zoo-using benchmarks close it first."""
    files = [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py"), ROOT / "train.py",
             *ROOT.glob("calcium_gnn/**/*.py"), *ROOT.glob("configs/**/*.yaml")]
    allowed = {ROOT / path for path in zoo_split.TEST_SPLIT_USERS}
    offenders, unguarded = [], []
    for path in files:
        if path in allowed or (path.name.startswith("zoo") and path.parent.name == "data"):
            continue
        text = path.read_text(encoding="utf-8")
        if TEST_SPLIT_USE.search(text):
            offenders.append(str(path.relative_to(ROOT)))
        if path.parent.name == "benchmarks" and "calcium_gnn.data" in text and "zoo" in text \
                and "forbid_test_split(" not in text:
            unguarded.append(str(path.relative_to(ROOT)))
    assert (ROOT / "benchmarks" / "coverage_neural_ode.py").is_file()
    assert not offenders, f"these files use the zoo's test split: {offenders}"
    assert not unguarded, f"these benchmarks use the zoo without zoo.forbid_test_split(): {unguarded}"


def graph64(member):
    data = zoo.member_graph(member, dtype=torch.float64)
    return data, data.edge_attr[:, 0] / data.truth_edge_weight_scale


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_linear_members_follow_the_paper_law(pool, family):
    """Simulating from the observed driver traces with the true k, gamma reproduces the truth."""
    member = smallest(pool, family=family, law="linear")
    data, w = graph64(member)
    modelled = ~data.is_driver
    sim = simulate_consensus(
        data.truth_x, data.t, data.edge_index, w, modelled, data.truth_k, torch.nan_to_num(data.truth_gamma),
        y0=data.truth_x[:, 0], substeps=20,
    )
    scale = float(data.truth_x.max() - data.truth_x.min())
    assert float((sim - data.truth_x)[modelled].abs().max()) < 1e-8 * scale
    assert data.truth_law == "linear" and data.truth_leak == 0.0


def dense_rhs(data, w, leak: float, baseline: float):
    """The law's right-hand side written from the graph, independently of the zoo's code."""
    n = data.num_nodes
    W = np.zeros((n, n))
    W[data.edge_index[0].numpy(), data.edge_index[1].numpy()] = w.numpy()
    degree = (W > 0).sum(axis=1)
    modelled = ~data.is_driver.numpy()
    gamma = np.nan_to_num(data.truth_gamma.numpy())
    k = data.truth_k

    def rhs(y_mod, z_all):
        z = z_all.copy()
        z[modelled] = y_mod
        coupling = k / degree * (W @ z - W.sum(axis=1) * z)
        return (coupling + gamma - leak * (z - baseline))[modelled]

    return rhs, modelled


def test_leak_members_follow_their_law(pool):
    member = smallest(pool, law="leak")
    data, w = graph64(member)
    assert data.truth_law == "leak" and data.truth_leak > 0
    rhs, modelled = dense_rhs(data, w, data.truth_leak, data.truth_leak_baseline)
    truth, t = data.truth_x.numpy(), data.t.numpy()

    def drive(s):  # every cell's level linear between frames (only drivers are used)
        return np.array([np.interp(s, t, row) for row in truth])

    assert np.abs(rhs(truth[modelled, 0], truth[:, 0])).max() < 1e-9 * np.abs(truth).max()  # steady start
    stop = min(len(t), 60)
    solution = solve_ivp(lambda s, y: rhs(y, drive(s)), (t[0], t[stop - 1]), truth[modelled, 0],
                         t_eval=t[:stop], method="DOP853", rtol=1e-10, atol=1e-12)
    scale = np.ptp(truth)
    assert np.abs(solution.y - truth[modelled, :stop]).max() < 1e-6 * scale


def test_phi_functions_are_smooth_across_the_series_switch():
    x = np.array([-0.5, -1.0001e-2, -0.9999e-2, -1e-6, 0.0])
    safe = np.where(x == 0, 1.0, x)
    np.testing.assert_allclose(phi1(x), np.where(x == 0, 1.0, np.expm1(safe) / safe), rtol=1e-12)
    expected = np.array([(np.exp(v) - 1 - v) / v**2 if abs(v) > 1e-3 else 0.5 + v / 6 for v in x])
    np.testing.assert_allclose(phi2(x), expected, rtol=1e-9)


@pytest.mark.parametrize("family, kinds", [
    ("border", {EDGE}),
    ("stimulus", {EDGE, STIMULUS}),
    ("pacemaker", {EDGE, PACEMAKER}),
])
def test_drivers_of_each_family(pool, family, kinds):
    member = smallest(pool, family=family)
    data = zoo.member_graph(member)
    kind = data.truth_driver_kind
    present = set(kind.unique().tolist()) - {MODELLED}
    assert kinds <= present <= kinds | {RELAY}
    assert torch.equal(data.is_driver, kind != MODELLED)
    assert bool(data.is_driver[data.touches_edge].all())
    assert torch.equal(torch.isnan(data.truth_gamma), data.is_driver)
    assert int((~data.is_driver).sum()) >= 1 and data.zoo_family == family


def test_graph_schema_and_round_trip(pool, tmp_path):
    member = smallest(pool)
    data = validate_graph(zoo.member_graph(member))
    n, t = member.n_cells, member.n_frames
    assert data.x.shape == data.truth_x.shape == (n, t) and data.truth_gamma.shape == (n,)
    assert data.image_shape == (member.params["side"],) * 2 and data.zoo_id == member.id
    back = load_graph(save_graph(data, tmp_path / "g.pt"))
    assert torch.equal(back.truth_x, data.truth_x) and back.truth_law == data.truth_law


def test_observation_noise_is_the_stated_fraction(pool):
    member = max(pool[:20], key=lambda m: m.noise / (m.n_cells * m.n_frames))
    data = zoo.member_graph(member, dtype=torch.float64)
    residual = (data.x - data.truth_x).std() / (data.truth_x.max() - data.truth_x.min())
    assert float(residual) == pytest.approx(member.noise, rel=0.1)


@pytest.mark.parametrize("membrane, dye", [("dark", "cytosolic"), ("bright", "nuclear")])
def test_rendered_movie_polarity_and_labels(pool, membrane, dye):
    member = min((m for m in pool if m.params["membrane"] == membrane and m.params["dye"] == dye),
                 key=lambda m: m.params["side"] ** 2 * m.n_frames)
    culture = zoo.member_culture(member)
    rendered = zoo.member_movie(member, culture)
    movie, labels = rendered.movie, rendered.labels
    side = member.params["side"]
    assert movie.dtype == np.uint16 and movie.shape == (member.n_frames, side, side)
    assert labels.shape == (side, side)
    np.testing.assert_array_equal(np.unique(labels), np.arange(member.n_cells + 1))
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols] - 1
    counts = np.bincount(ids, minlength=member.n_cells)
    n = member.n_cells
    centres = np.column_stack([np.bincount(ids, cols, n), np.bincount(ids, rows, n)])
    graph_pos = zoo.member_graph(member).pos.numpy()
    assert np.abs(centres / counts[:, None] - graph_pos).max() < 2.0
    mean = movie.astype(float).mean(axis=0)
    dye_pixels = labels > 0 if rendered.nuclei is None else rendered.nuclei > 0
    if membrane == "dark":
        assert mean[labels == 0].mean() < mean[dye_pixels].mean()
    else:
        assert mean[labels == 0].mean() > mean[labels > 0].mean()
    if dye == "nuclear":
        nuclei = rendered.nuclei
        assert (nuclei[nuclei > 0] == labels[nuclei > 0]).all()
        inner = ndimage.distance_transform_edt(labels > 0) > CLEAR_OF_MEMBRANE  # away from the blur
        assert mean[(nuclei > 0) & inner].mean() > mean[(labels > 0) & (nuclei == 0) & inner].mean()
    else:
        assert rendered.nuclei is None


def test_dish_members_follow_the_design_with_their_own_cultures() -> None:
    base = zoo.member("border-25")
    a = zoo.dish_member(base, k=0.01, noise=0.05, experiment=3, dish=0)
    b = zoo.dish_member(base, k=0.01, noise=0.05, experiment=3, dish=1)
    assert a.id == "border-25/experiment-3/dish-0" and (a.k, a.noise, a.split) == (0.01, 0.05, "custom")
    assert {k: v for k, v in a.params.items() if k not in ("k", "noise")} == {
        k: v for k, v in base.params.items() if k not in ("k", "noise")}
    ga, gb = zoo.member_graph(a), zoo.member_graph(b)
    assert not torch.equal(ga.pos[:5], gb.pos[:5])  # another culture: its own geometry
    again = zoo.member_graph(zoo.dish_member(base, k=0.01, noise=0.05, experiment=3, dish=0))
    assert torch.equal(ga.x, again.x) and ga.truth_k == pytest.approx(0.01)


def test_dish_members_refuse_the_test_split_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="frozen test split"):
        zoo.dish_member(zoo.member("test-0"), k=0.01, noise=0.0, experiment=0, dish=0)
    with pytest.raises(ConfigError, match="k must be > 0"):
        zoo.dish_member(zoo.member("border-25"), k=0.0, noise=0.0, experiment=0, dish=0)
