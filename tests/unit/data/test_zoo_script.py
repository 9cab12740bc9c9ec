"""scripts/make_zoo.py: arguments, the files it writes, and a typical member's generation time."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from calcium_gnn.data import zoo
from calcium_gnn.errors import ConfigError
from calcium_gnn.io.culture_files import read_culture_files
from calcium_gnn.io.graph_files import load_graph

#: a typical member (<= 300 cells, <= 400 frames) builds its graph in well under this (s, 2 slow cores)
TYPICAL_GRAPH_SECONDS = 2.0


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("make_zoo")


@pytest.fixture(scope="module")
def small_member() -> zoo.ZooMember:
    return min(zoo.dev_members(40), key=lambda m: m.params["side"] ** 2 * m.n_frames)


def test_parse_args(script):
    assert script.parse_args(["member=dev-3", "out=/tmp/x"]) == {"member": "dev-3", "out": "/tmp/x"}
    for bad, key in [(["member"], "member"), (["colour=red"], "colour"), (["n=1", "n=2"], "n")]:
        with pytest.raises(ConfigError, match=key):
            script.parse_args(bad)


def test_bad_input_exits_2(script, tmp_path, capsys):
    assert script.main(["member=bogus", f"out={tmp_path}"]) == 2
    assert "bad member id" in capsys.readouterr().err
    assert script.main(["member=dev-0"]) == 2
    assert script.main([]) == 2


def test_list(script, capsys):
    assert script.main(["list=dev", "n=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["dev-0", "dev-1", "dev-2"]


def test_writes_a_member(script, small_member, tmp_path, capsys):
    out = tmp_path / "member"
    assert script.main([f"member={small_member.id}", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert f"data.graph={out / 'graph.pt'}" in printed and f"data.movie={out / 'movie.tif'}" in printed
    files = read_culture_files(out)
    assert files.movie.shape == (small_member.n_frames,) + (small_member.params["side"],) * 2
    assert files.meta["zoo_id"] == small_member.id and files.meta["law"] == small_member.law
    graph = load_graph(out / "graph.pt")
    expected = zoo.member_graph(small_member)
    assert torch.equal(graph.x, expected.x) and graph.zoo_id == small_member.id
    np.testing.assert_array_equal(files.arrays["is_driver"], expected.is_driver.numpy())
    assert files.meta["modelled_cell_ids"] == (np.flatnonzero(~expected.is_driver.numpy()) + 1).tolist()
    assert (out / "nuclei.tif").is_file() == (small_member.params["dye"] == "nuclear")
    assert script.main([f"member={small_member.id}", f"out={out}"]) == 2  # no silent overwrite


def test_typical_member_graph_time():
    typical = [m for m in zoo.dev_members(10) if m.n_cells <= 300 and m.n_frames <= 400][:3]
    seconds = []
    for m in typical:
        start = time.perf_counter()
        zoo.member_graph(m)
        seconds.append(time.perf_counter() - start)
    assert float(np.median(seconds)) < TYPICAL_GRAPH_SECONDS
