"""Many cultures at once (``data=culture_folder``, :func:`calcium_gnn.batch.fit_cultures`): a folder of
10 small synthetic movies, one of them truncated, gives 9 fits and one clear failure line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from calcium_gnn.batch import SUMMARY_COLUMNS, culture_names, find_movies, fit_cultures, is_culture_folder
from calcium_gnn.data.synthetic import make_culture
from calcium_gnn.data.synthetic_files import save_culture
from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.results import read_results
from calcium_gnn.train import CONFIG_DIR, train

N_CULTURES = 10
BROKEN = 3


def _compose(tmp: Path, *overrides: str, run: str = "run") -> DictConfig:
    base = [f"paths.root_dir={tmp}", f"paths.cache_dir={tmp / 'cache'}", "logger=csv",
            "experiment=setup1_crlsm", "data=culture_folder", "graph.min_area=100",
            "segmentation.options.diameter=30"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=base + list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / run)
    return cfg


@pytest.fixture(scope="module")
def movie_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cultures")
    folder = root / "movies"
    folder.mkdir()
    for i in range(N_CULTURES):
        culture = make_culture(n_cells=20, size=160, n_frames=60, seed=i)
        save_culture(culture, root / f"culture{i}")
        shutil.copy(root / f"culture{i}" / "movie.tif", folder / f"culture_{i:02d}.tif")
    broken = folder / f"culture_{BROKEN:02d}.tif"
    content = broken.read_bytes()
    broken.write_bytes(content[: len(content) * 2 // 3])  # truncated, as by an interrupted copy
    return folder


@pytest.mark.slow
def test_ten_cultures_with_one_truncated_give_nine_fits_and_one_failure(movie_folder: Path,
                                                                       tmp_path: Path) -> None:
    cfg = _compose(tmp_path, f"data.folder={movie_folder}")
    assert is_culture_folder(cfg)
    before = {p.name: p.read_bytes() for p in movie_folder.iterdir()}
    rows = fit_cultures(cfg, train)
    run = tmp_path / "run"

    assert [r["culture"] for r in rows] == [f"culture_{i:02d}" for i in range(N_CULTURES)]
    failed = [r for r in rows if r["status"] != "ok"]
    assert [r["culture"] for r in failed] == [f"culture_{BROKEN:02d}"]
    error = failed[0]["error"]
    assert error.startswith(f"{movie_folder / f'culture_{BROKEN:02d}.tif'}: truncated") and "\n" not in error
    assert (run / f"culture_{BROKEN:02d}" / "error.txt").read_text().strip() == error

    for row in rows:
        if row["status"] == "ok":
            results = read_results(run / row["culture"] / "results.json")
            assert row["k"] == pytest.approx(results["k"]) and 1e-3 <= row["k"] <= 0.1
            assert row["mse_train"] == pytest.approx(results["mse_train"])
            assert row["mse_test"] == pytest.approx(results["mse_test"])
            assert row["spike_f1"] == pytest.approx(results["spikes"]["f1"])
            gammas = sorted(results["gamma"].values())
            assert row["gamma_mean"] == pytest.approx(sum(gammas) / len(gammas))
            assert row["n_modelled"] == len(results["modelled_cells"]) > 0
            assert row["error"] is None
            assert row["fit_ok"] is results["diagnostics"]["fit_ok"]
            assert row["fit_problems"] == ("; ".join(results["diagnostics"]["reasons"]) or None)
    # the summary on disk: the same table as CSV and JSON
    with open(run / "summary.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(SUMMARY_COLUMNS) and len(table) == N_CULTURES
    assert [t["status"] for t in table].count("ok") == N_CULTURES - 1
    assert table[BROKEN]["error"] == error and table[BROKEN]["k"] == ""
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_ok"] == N_CULTURES - 1 and summary["n_failed"] == 1
    assert summary["cultures"] == rows
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    # inputs untouched, and each graph is cached: a second run builds nothing new
    assert {p.name: p.read_bytes() for p in movie_folder.iterdir()} == before
    cached = sorted((tmp_path / "cache" / "graphs").iterdir())
    assert len(cached) == N_CULTURES - 1
    again = fit_cultures(_compose(tmp_path, f"data.folder={movie_folder}", run="run2"), train)
    assert sorted((tmp_path / "cache" / "graphs").iterdir()) == cached
    assert [r["k"] for r in again] == [r["k"] for r in rows]


def test_glob_pattern_and_names(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "movie.tif").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("not a movie")
    movies = find_movies(str(tmp_path / "*" / "movie.tif"))
    assert movies == [tmp_path / "a" / "movie.tif", tmp_path / "b" / "movie.tif"]
    assert culture_names(movies) == ["a__movie", "b__movie"]
    assert find_movies(tmp_path / "a", "*.txt") == [tmp_path / "a" / "notes.txt"]
    assert culture_names([tmp_path / "x.tif", tmp_path / "x.tiff"]) == ["x", "x-2"]
    with pytest.raises(ConfigError, match=r"^data\.pattern: no file matches '\*\.tif'"):
        find_movies(tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.folder: no movie matches"):
        find_movies(str(tmp_path / "*.npy"))
    with pytest.raises(ConfigError, match=r"^data\.folder: .* is not a folder"):
        find_movies(tmp_path / "a" / "movie.tif")


def test_culture_folder_config_composes_and_refuses_an_unset_folder(tmp_path: Path) -> None:
    cfg = _compose(tmp_path)
    assert is_culture_folder(cfg) and cfg.data.pattern == "*.tif"
    assert str(cfg.data.cache_dir) == str(tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"^data\.folder: not set"):
        fit_cultures(cfg, train)
    single = _compose(tmp_path, "data=synthetic")
    assert not is_culture_folder(single)


def test_each_culture_goes_to_the_fit_it_is_given(tmp_path: Path) -> None:
    """``fit_cultures`` calls the single-culture fit it is handed (no import of train) with each
    culture's own config, and records a failure and a crash without stopping."""
    folder = tmp_path / "movies"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.tif").write_bytes(b"x")
    seen: list[tuple[str, str]] = []

    def fit_one(one: DictConfig) -> dict[str, float]:
        seen.append((Path(one.data.movie).name, Path(one.paths.output_dir).name))
        if one.data.movie.endswith("b.tif"):
            raise ConfigError("data.movie", "bad movie")
        if one.data.movie.endswith("c.tif"):
            raise RuntimeError("boom")
        return {"fit/k": 0.02, "fit/gamma_mean": 1e-3, "fit/gamma_median": 2e-3}

    rows = fit_cultures(_compose(tmp_path, f"data.folder={folder}"), fit_one)
    assert seen == [("a.tif", "a"), ("b.tif", "b"), ("c.tif", "c")]
    assert [r["status"] for r in rows] == ["ok", "failed", "crashed"]
    assert rows[0]["k"] == 0.02 and rows[0]["gamma_median"] == 2e-3
    assert rows[1]["error"] == "data.movie: bad movie" and rows[2]["error"] == "RuntimeError: boom"
    assert (tmp_path / "run" / "b" / "error.txt").read_text() == "data.movie: bad movie\n"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n_ok"] == 1
