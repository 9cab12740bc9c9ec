"""``experiment=discover_law`` end to end on a zoo member of a nonlinear law: real Hydra, Lightning,
the learned message summarised in ``results.json`` and drawn, the validation window honoured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calcium_gnn.data import zoo
from calcium_gnn.evaluation.results import validate_results
from calcium_gnn.io.graph_files import save_graph
from calcium_gnn.train import train


@pytest.mark.slow
def test_discover_law_learns_a_saturating_junction(compose_train, tmp_path: Path) -> None:
    """saturating-2 (44 cells, 1.5 % noise): the learned law is kept because it predicts the held-out
    frames better than the linear start, its flux is closer to the true one than the linear fit's,
    and the summary names the saturation."""
    path = tmp_path / "saturating-2.pt"
    save_graph(zoo.member_graph(zoo.member("saturating-2")), path)
    cfg = compose_train("experiment=discover_law", f"data.graph={path}", "setup.drivers=is_driver",
                        small=False)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    validation = results["optimizer"]["validation"]
    kept = validation["kept_step"]
    assert kept > 0 and validation["mse_by_step"][kept] == min(validation["mse_by_step"])
    learned = results["learned_law"]
    assert learned["true_law"] == "saturating"
    assert learned["learned_matches_true"] > learned["linear_matches_true"]
    assert learned["summary"]["law"] == "saturating"
    assert results["gnn_vs_linear"]["gnn_beats_linear"]
    assert (out / "learned_message.png").stat().st_size > 10_000
