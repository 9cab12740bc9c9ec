"""``docs/real_data.md`` runs as written: its marked commands, in order, in a fresh folder.

Every fenced block preceded by a ``<!-- doc-test -->`` line is executed: in ``bash`` blocks each
command starting with ``python `` (backslash continuations joined), with ``python`` replaced by this
interpreter and a script path resolved against the repository root; ``python`` blocks as
``python -c``. All run in one temporary folder, which plays the lab's folder. Then the walk-through's
claims are checked on what the run wrote.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "real_data.md"
MARK = "<!-- doc-test -->"
#: one command's limit (s): the train run takes about 25 s on 2 cores
TIMEOUT = 600


def marked_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block right after a :data:`MARK` line, in document order."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        fence = lines[i + 1].strip()
        assert fence.startswith("```") and fence != "```", f"{DOC.name}:{i + 2}: {MARK} must precede a fence"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        blocks.append((fence[3:].strip(), "\n".join(lines[i + 2:end])))
    return blocks


def commands(block: str) -> list[list[str]]:
    """The ``python ...`` commands of a bash block as argument lists for this interpreter."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if not line.strip().startswith("python "):
            continue
        argv = shlex.split(line, comments=True)
        script = ROOT / argv[1]
        out.append([sys.executable, str(script) if script.is_file() else argv[1], *argv[2:]])
    return out


def run(argv: list[str], cwd: Path) -> str:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("CALCIUM_GNN_ROOT", None)
    env.pop("CALCIUM_GNN_CACHE", None)
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(argv[:3])} ... failed ({done.returncode}):\n{output[-4000:]}"
    return output


def test_the_marked_blocks_are_found() -> None:
    blocks = marked_blocks(DOC.read_text())
    bash = [argv for language, body in blocks if language == "bash" for argv in commands(body)]
    assert [Path(argv[1]).name for argv in bash] == ["make_zoo.py", "train.py"]
    assert all(Path(argv[1]).is_absolute() for argv in bash)
    assert sum(language == "python" for language, _ in blocks) == 2


@pytest.mark.slow
def test_the_walk_through_runs_and_its_claims_hold(tmp_path: Path) -> None:
    for language, body in marked_blocks(DOC.read_text()):
        if language == "bash":
            for argv in commands(body):
                output = run(argv, tmp_path)
                if Path(argv[1]).name == "train.py":
                    print(output[output.find("candidate "):])  # the comparison table (pytest -s)
        elif language == "python":
            print(run([sys.executable, "-c", body], tmp_path))
        else:
            pytest.fail(f"{MARK} on a {language!r} block: only bash and python blocks are run")

    run_dir = tmp_path / "lab" / "run"
    selection = json.loads((run_dir / "model_selection.json").read_text())
    assert selection["chosen"] == "leak"
    assert selection["rows"]["linear"]["inadequate"] and selection["rows"]["linear"]["why_inadequate"]
    assert not selection["rows"]["leak"]["inadequate"]

    leak = json.loads((run_dir / "leak" / "results.json").read_text())
    assert leak["law"]["name"] == "leak"
    waves = leak["waves"]
    assert waves["point"] == [48.1, 55.0] and waves["observed"]["radial"] is not None
    assert "activation_map.png" in waves["figures"]
    assert all((run_dir / "leak" / name).is_file() for name in waves["figures"])

    # the drivers: the stimulated cell at the point, and only true interior drivers (stimulated, relay)
    truth = json.loads((tmp_path / "lab" / "truth.json").read_text())
    kinds = truth["driver_kind"]  # in cell order; the zoo's cell ids are 1..N
    true_drivers = {str(i + 1) for i, kind in enumerate(kinds) if kind in ("stimulus", "relay")}
    assert "26" in leak["drivers"] and "nearest to the stimulus point" in leak["drivers"]["26"]
    assert set(leak["drivers"]) <= true_drivers
    # the Python section saved the Voronoi graph
    assert (tmp_path / "lab" / "voronoi_graph.pt").is_file()
