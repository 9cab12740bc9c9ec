"""scripts/make_synthetic.py: key=value parsing and the files it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from calcium_gnn.data.synthetic_files import load_culture
from calcium_gnn.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make_synthetic.py"


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("make_synthetic")


def test_parse_args(script):
    out, overwrite, params = script.parse_args(
        ["out=/tmp/x", "seed=3", "noise=0.5", "gamma_range=0.0001,0.002", "overwrite=true"]
    )
    assert out == Path("/tmp/x") and overwrite is True
    assert params == {"seed": 3, "imaging_noise": 0.5, "gamma_range": (0.0001, 0.002)}
    for bad, key in [
        (["seed=3"], "out"),
        (["out=a", "seed=x"], "seed"),
        (["out=a", "colour=red"], "colour"),
        (["out=a", "seed"], "seed"),
        (["out=a", "seed=1", "seed=2"], "seed"),
    ]:
        with pytest.raises(ConfigError) as info:
            script.parse_args(bad)
        assert info.value.culprit == key


def test_main_writes_a_culture(script, tmp_path, capsys):
    out = tmp_path / "s"
    argv = [f"out={out}", "seed=3", "n_cells=20", "size=128", "n_frames=25", "noise=0"]
    assert script.main(argv) == 0
    assert "20 cells" in capsys.readouterr().out
    movie = tifffile.imread(out / "movie.tif")
    assert movie.shape == (25, 128, 128) and movie.dtype == np.uint16
    culture = load_culture(out)
    assert culture.seed == 3 and culture.params["imaging_noise"] == 0.0
    assert script.main(argv) == 2  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err
    assert script.main(argv + ["overwrite=1"]) == 0


@pytest.mark.slow
def test_acceptance_default_movie(tmp_path):
    out = tmp_path / "s"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), f"out={out}", "seed=3"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["labels.tif", "movie.tif", "truth.json", "truth.npz"]
    movie = tifffile.imread(out / "movie.tif")
    assert movie.shape == (361, 512, 512) and movie.dtype == np.uint16
    bad = subprocess.run([sys.executable, str(SCRIPT), "seed=3"], capture_output=True, text=True)
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "make_synthetic: out: missing: give the output directory as out=DIR"
    )
