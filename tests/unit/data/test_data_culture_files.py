"""Writing / reading a culture's files (calcium_gnn.data.synthetic_files over the format of
calcium_gnn.io.culture_files) and the culture cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from calcium_gnn.data.synthetic_files import culture_key, load_culture, load_or_make_culture, save_culture
from calcium_gnn.errors import ConfigError, InputFileError, MovieError, OutputError
from calcium_gnn.io.culture_files import FILES

TINY = {"seed": 11, "n_cells": 20, "size": 128, "n_frames": 30}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_culture):
    return save_culture(small_culture, tmp_path_factory.mktemp("cultures") / "small")


def test_files_written(saved, small_culture):
    assert sorted(p.name for p in saved.iterdir()) == sorted(FILES)  # no temporary files left
    with tifffile.TiffFile(saved / "movie.tif") as tif:
        movie = tif.asarray()
        assert tif.imagej_metadata["finterval"] == pytest.approx(10.0)
    assert movie.shape == (80, 160, 160) and movie.dtype == np.uint16
    np.testing.assert_array_equal(movie, small_culture.movie)
    labels = tifffile.imread(saved / "labels.tif")
    np.testing.assert_array_equal(labels, small_culture.labels)
    meta = json.loads((saved / "truth.json").read_text())
    assert meta["seed"] == 7 and meta["k"] == 0.02 and meta["n_cells"] == 24
    assert meta["edge_weight_scale"] == pytest.approx(small_culture.edge_weight_scale)
    assert meta["hot_pixels"] == small_culture.hot_pixels.tolist()
    assert len(meta["cells"]) == 24 and all(
        (cell["gamma"] is None) == cell["is_driver"] for cell in meta["cells"]
    )
    assert set(meta["description"]) <= set(meta) | {"description"}
    arrays = np.load(saved / "truth.npz")
    assert set(arrays.files) == set(meta["arrays"])


def test_round_trip(saved, small_culture):
    c = load_culture(saved)
    for name in (
        "labels",
        "traces",
        "t",
        "gamma",
        "is_driver",
        "touches_edge",
        "edge_index",
        "l",
        "u",
        "centroids",
        "areas",
        "cell_ids",
        "hot_pixels",
    ):
        np.testing.assert_array_equal(getattr(c, name), getattr(small_culture, name), err_msg=name)
    assert (c.k, c.dt, c.seed, c.edge_weight_scale) == (
        small_culture.k,
        small_culture.dt,
        small_culture.seed,
        small_culture.edge_weight_scale,
    )
    assert c.params == small_culture.params and c.path == saved
    np.testing.assert_array_equal(c.movie, small_culture.movie)
    lazy = load_culture(saved, read_movie=False)
    assert not lazy.has_movie
    np.testing.assert_array_equal(lazy.movie, small_culture.movie)  # read from movie.tif on access


def test_refuses_to_overwrite(tmp_path, small_culture):
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        save_culture(small_culture, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    save_culture(small_culture, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "truth.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        save_culture(small_culture, tmp_path / "file")


def test_missing_and_broken_files(saved, tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_culture(tmp_path / "nowhere")
    for name, damage, error, message in [
        ("truth.npz", None, InputFileError, "missing file"),
        ("truth.json", "{not json", InputFileError, "JSON"),
        ("truth.npz", "garbage", InputFileError, "npz"),
        ("movie.tif", "garbage", MovieError, "movie"),
    ]:
        copy = tmp_path / f"copy-{name}-{damage is None}"
        shutil.copytree(saved, copy)
        if damage is None:
            (copy / name).unlink()
        else:
            (copy / name).write_text(damage)
        with pytest.raises(error, match=message) as info:
            load_culture(copy)
        assert str(copy / name) in str(info.value) and "\n" not in str(info.value)


def test_inconsistent_files(saved, tmp_path):
    copy = tmp_path / "labels"
    shutil.copytree(saved, copy)
    tifffile.imwrite(copy / "labels.tif", np.zeros((160, 160), np.uint16) + 3)
    with pytest.raises(InputFileError, match="highest label 3"):
        load_culture(copy)
    copy = tmp_path / "movie"
    shutil.copytree(saved, copy)
    tifffile.imwrite(copy / "movie.tif", np.zeros((5, 160, 160), np.uint16), imagej=True)
    with pytest.raises(MovieError, match=r"expected a \(80, 160, 160\) uint16 movie"):
        load_culture(copy)


def test_load_does_not_touch_the_files(saved):
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in saved.iterdir()}
    load_culture(saved)
    assert before == {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in saved.iterdir()}


def test_cache(tmp_path):
    first = load_or_make_culture(tmp_path, **TINY)
    assert first.path == tmp_path / f"culture-{culture_key(**TINY)}"
    stamp = (first.path / "truth.npz").stat().st_mtime_ns
    again = load_or_make_culture(tmp_path, **TINY)  # a cache hit: nothing regenerated or rewritten
    assert again.path == first.path and (first.path / "truth.npz").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.traces, first.traces)
    np.testing.assert_array_equal(again.movie, first.movie)
    other = load_or_make_culture(tmp_path, **{**TINY, "seed": 12})
    assert other.path != first.path
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # defaults spelled out give the same key; unknown names are config errors
    assert culture_key(**TINY) == culture_key(**TINY, k=0.02)
    with pytest.raises(ConfigError, match="^colour: "):
        load_or_make_culture(tmp_path, colour="red")


def test_incomplete_cache_entry_is_regenerated(tmp_path):
    target = tmp_path / f"culture-{culture_key(**TINY)}"
    target.mkdir()
    (target / "movie.tif").write_text("half")
    culture = load_or_make_culture(tmp_path, **TINY)
    assert culture.path == target and load_culture(target).n_cells == 20
