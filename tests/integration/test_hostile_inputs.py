"""Hostile inputs across the whole pipeline: each gives ONE clear error (the exact
:class:`~calcium_gnn.errors.CalciumGNNError` subclass, one line naming the file or config key and the
problem), never a traceback from inside a library. Also: the command lines fail the same way, a
user's inputs are never modified, and the graph cache is keyed by the input's content and options.

The table itself is in ``hostile_cases.py``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from calcium_gnn.errors import CalciumGNNError

from .hostile_cases import BUILD, CASES, Case, culture, offset_subtracted, write_movie

ROOT = Path(__file__).resolve().parents[2]


def test_the_table_covers_enough_kinds_of_bad_input() -> None:
    assert len(CASES) >= 22
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input_gives_one_clear_error(case: Case, tmp_path: Path) -> None:
    thunk, culprit = case.build(tmp_path)
    with pytest.raises(CalciumGNNError) as info:
        thunk()
    err = info.value
    message = str(err)
    assert type(err) is case.error, f"{type(err).__name__} instead of {case.error.__name__}: {message}"
    assert culprit in message, f"the message does not name {culprit!r}: {message}"
    assert case.keyword.lower() in message.lower(), f"no {case.keyword!r} in: {message}"
    assert "\n" not in message and "Traceback" not in message
    assert err.culprit is not None and err.problem


def test_negative_values_are_legal_with_an_explicit_epsilon(tmp_path: Path) -> None:
    """Offset-subtracted data (negative values) read fine; the log step is made valid by choosing
    epsilon > -min(x) (documented in ``read_movie`` and ``preprocess``), or by switching it off."""
    frames = offset_subtracted()
    assert frames.min() < -1
    path = write_movie(tmp_path, frames)
    from calcium_gnn.io.movie import read_movie
    from calcium_gnn.pipeline import movie_to_graph

    assert float(np.min(read_movie(path).frames)) == float(frames.min())
    shifted = movie_to_graph(path, preprocessing={"epsilon": 1.0 - float(frames.min())}, **BUILD)
    no_log = movie_to_graph(path, preprocessing={"log": False}, **BUILD)
    assert shifted.num_nodes == no_log.num_nodes > 0


def test_an_unknown_override_is_refused_by_hydra_compose_naming_the_key() -> None:
    """``graph.foo=1`` (no ``+``) never reaches our code: Hydra's struct config refuses it, naming the key
    and suggesting ``+graph.foo=1`` (which then reaches ``options_from_config``: the table's
    ``train-unknown-graph-key`` row)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="graph.foo"):
            compose("train.yaml", overrides=["graph.foo=1"])


def _cli(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, str(ROOT / script), *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("script, args", [
    ("scripts/build_graph.py", ["data.movie={missing}", "out={tmp}/out", "progress=false"]),
    ("train.py", ["data.movie={missing}", "logger=csv", "paths.root_dir={tmp}"]),
], ids=["build_graph", "train"])
def test_command_line_on_a_missing_movie_exits_with_one_error_line(script: str, args: list[str],
                                                                    tmp_path: Path) -> None:
    missing = tmp_path / "missing.tif"
    done = _cli(script, tmp_path, *(a.format(missing=missing, tmp=tmp_path) for a in args))
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[-1] == f"error: {missing}: file not found", done.stderr[-2000:]
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------ nothing lost
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inputs_are_never_modified_by_the_pipeline_and_its_outputs(tmp_path: Path) -> None:
    from calcium_gnn.pipeline import cached_movie_to_graph, write_outputs

    movie = write_movie(tmp_path)
    masks = tmp_path / "masks.tif"
    tifffile.imwrite(masks, culture().labels.astype(np.uint16))
    before = {p: (_sha256(p), p.stat().st_mtime_ns) for p in (movie, masks)}
    options = {"segmentation": "masks", "masks": str(masks), "min_area": 0}
    build = cached_movie_to_graph(movie, tmp_path / "cache", **options)
    write_outputs(build, tmp_path / "out", frame=3)
    cached_movie_to_graph(movie, tmp_path / "cache", **options)
    after = {p: (_sha256(p), p.stat().st_mtime_ns) for p in (movie, masks)}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "masks.tif", "movie.tif", "out"]
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert leftovers == [], "temporary files were left behind"


def test_graph_cache_is_keyed_by_input_content_and_options(tmp_path: Path) -> None:
    from calcium_gnn.pipeline import cached_movie_to_graph

    movie = write_movie(tmp_path)
    cache = tmp_path / "cache"

    def entries() -> set[str]:
        return {p.name for p in cache.iterdir()}

    cached_movie_to_graph(movie, cache, **BUILD)
    first = entries()
    assert len(first) == 1
    cached_movie_to_graph(movie, cache, **BUILD)
    assert entries() == first, "the same movie and options must reuse the entry"
    cached_movie_to_graph(movie, cache, min_shared_border=0.0, **BUILD)
    second = entries()
    assert len(second) == 2, "a changed min_shared_border must make a new entry"
    # the same file name, size and (restored) mtime, one pixel value changed: still a new entry
    stat = movie.stat()
    frames = tifffile.imread(movie)
    frames[0, 0, 0] ^= 1
    tifffile.imwrite(movie, frames)
    os.utime(movie, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert movie.stat().st_size == stat.st_size
    cached_movie_to_graph(movie, cache, **BUILD)
    assert len(entries()) == 3, "a changed movie content must make a new entry"
