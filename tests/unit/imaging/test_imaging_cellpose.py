"""The real Cellpose backend, offline: train a tiny network, reload it by path, segment; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError, SegmentationError
from calcium_gnn.imaging.segmentation import segment_cellpose

SCRIPT = Path(__file__).with_name("cellpose_offline_check.py")


@pytest.mark.slow
def test_cellpose_trained_offline_then_segments_through_our_backend(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("CELLPOSE_LOCAL_MODELS_PATH", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["model_dir"] == str(tmp_path / "empty_models")
    assert result["model_file_exists"]
    assert result["shape"] == [128, 128] and result["dtype"] == "int32"
    assert result["n_cells"] >= 0
    assert "Cellpose model file not found" in result["missing_path"]
    assert "no_such_model" in result["missing_path"]
    assert "cannot be downloaded offline" in result["absent_weights"]
    assert "watershed" in result["absent_weights"] and "masks" in result["absent_weights"]
    assert "\n" not in result["absent_weights"]
    assert result["downloaded"] == []  # nothing fetched, nothing written to the model folder
    assert result["seg_npy_round_trip"]


def test_missing_model_path_fails_before_importing_cellpose(tmp_path):
    with pytest.raises(SegmentationError, match="Cellpose model file not found") as exc:
        segment_cellpose(np.zeros((8, 8)), model=tmp_path / "missing.pth")
    assert str(tmp_path / "missing.pth") in str(exc.value)


def test_bad_options():
    with pytest.raises(SegmentationError, match="2-D"):
        segment_cellpose(np.zeros((2, 8, 8)))
    with pytest.raises(ConfigError, match="segmentation.diameter"):
        segment_cellpose(np.zeros((8, 8)), diameter=-3)
