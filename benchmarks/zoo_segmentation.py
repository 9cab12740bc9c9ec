"""Segmentation on the culture zoo with every default: share of true cells recovered at IoU >= 0.7.

    .venv/bin/python benchmarks/zoo_segmentation.py --split dev --n-dev 30      # for tuning
    .venv/bin/python benchmarks/zoo_segmentation.py --split test                # reporting only
    .venv/bin/python benchmarks/zoo_segmentation.py --split dev --max-cells 400 --frames 100

Each member of the split (:mod:`calcium_gnn.data.zoo`: dark or bright membranes, cytosolic or nuclear
dye, cells of 15-80 px, 30-2,000 cells, noise, bleaching, hot pixels) is rendered, written as an
ImageJ TIFF with its frame interval into a temporary folder and turned into a graph by the path of
``scripts/build_graph.py`` (``configs/build_graph.yaml`` composed with only ``data.movie`` and
``out`` set, :func:`calcium_gnn.pipeline.options_from_config`,
:func:`calcium_gnn.pipeline.movie_to_graph_full`): the watershed's ``preset="auto"``,
``graph.min_area=auto`` and every other default. Its final label image is matched to the true one
(:func:`calcium_gnn.imaging.segmentation.matched_fraction`, IoU >= 0.7; the true cells exclude
their membranes).

Printed: per member its polarity, dye, cell diameter (px, the zoo's ``cell_diameter``), true and
found cells, the share recovered, what ``preset="auto"`` decided and the times (render; movie ->
graph); then the pooled share by polarity x dye x size bin with the target (>= 95%) side by side.

``--frames N`` keeps only the first N frames of every movie (after rendering, so the frames kept
are the same as in the full movie): the reference image is then the mean of fewer frames, noisier;
``--max-cells`` skips the members with more cells. Both only make runs shorter. The test split is
frozen (:mod:`calcium_gnn.data.zoo_split`): ``--split test`` is for the final report only, never for
tuning; ``--split dev`` closes it for this process first.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
IOU = 0.7
TARGET = 0.95
#: cell-diameter bins (px) of the summary: [low, high)
SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("15-25px", 0.0, 25.0),
    ("25-45px", 25.0, 45.0),
    ("45-80px", 45.0, math.inf),
)


def size_bin(diameter: float) -> str:
    """The name of the summary's size bin holding ``diameter`` px."""
    return next(name for name, low, high in SIZE_BINS if low <= diameter < high)


def default_options(movie_path: Path) -> dict[str, Any]:
    """The options ``scripts/build_graph.py`` passes to the pipeline for ``data.movie=movie_path``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from calcium_gnn.config import register_resolvers
    from calcium_gnn.pipeline import options_from_config

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="build_graph", overrides=[f"data.movie={movie_path}", "out=unused"])
    groups = OmegaConf.to_container(cfg, resolve=False)
    return options_from_config(groups["segmentation"], groups["preprocessing"], groups["graph"],
                               groups["data"])


def run_member(member: Any, frames: int | None, workdir: Path) -> dict[str, Any]:
    """Render ``member``, build its graph with every default, match the labels; one result row."""
    import tifffile

    from calcium_gnn.data import zoo
    from calcium_gnn.imaging.segmentation import matched_fraction
    from calcium_gnn.pipeline import movie_to_graph_full

    p = member.params
    clock = time.perf_counter()
    rendered = zoo.member_movie(member)
    movie = rendered.movie if frames is None else rendered.movie[:frames]
    path = workdir / f"{member.id}.tif"
    tifffile.imwrite(path, movie, imagej=True,
                     metadata={"axes": "TYX", "finterval": member.dt, "unit": "pixel"})
    render_s = time.perf_counter() - clock
    clock = time.perf_counter()
    build = movie_to_graph_full(path, **default_options(path))
    graph_s = time.perf_counter() - clock
    path.unlink()
    info = build.data.segmentation
    truth = rendered.labels
    n_true = int(np.count_nonzero(np.bincount(truth.ravel())[1:]))
    recovered = matched_fraction(truth, build.labels, iou_threshold=IOU)
    return {
        "id": member.id,
        "membrane": p["membrane"],
        "dye": p["dye"],
        "diameter": float(p["cell_diameter"]),
        "size_bin": size_bin(float(p["cell_diameter"])),
        "side": int(p["side"]),
        "frames": int(movie.shape[0]),
        "noise": float(member.noise),
        "bleach_loss": float(p["bleach_loss"]),
        "n_true": n_true,
        "n_found": int(build.data.num_nodes),
        "recovered": recovered,
        "n_recovered": int(round(recovered * n_true)),
        "decided": {k: info.get(k) for k in ("membranes", "polarity_rule", "diameter", "sigma",
                                              "boundaries_removed") if k in info},
        "render_s": render_s,
        "graph_s": graph_s,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pooled recovery by (membrane, dye, size bin), every group present, then the whole split."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["membrane"], row["dye"], row["size_bin"]), []).append(row)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], [b[0] for b in SIZE_BINS].index(k[2]))):
        out.append(_group(" ".join(key), groups[key]))
    out.append(_group("all", rows))
    return out


def _group(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    cells = sum(r["n_true"] for r in rows)
    found = sum(r["n_recovered"] for r in rows)
    return {
        "group": name,
        "members": len(rows),
        "cells": cells,
        "recovered": found / cells if cells else math.nan,
        "worst_member": min(r["recovered"] for r in rows),
        "members_at_target": sum(r["recovered"] >= TARGET for r in rows),
    }


def _print_row(row: dict[str, Any]) -> None:
    d = row["decided"]
    decided = (f"{d.get('membranes', '?')} ({d.get('polarity_rule', '-')}) "
               f"d={d.get('diameter', math.nan):.1f} -{d.get('boundaries_removed', 0)}")
    flag = "" if row["recovered"] >= TARGET else "  < target"
    print(f"{row['id']:>8} {row['membrane']:<6} {row['dye']:<9} {row['diameter']:6.1f}px {row['n_true']:5d} "
          f"{row['n_found']:5d} {row['frames']:5d} {row['noise']:6.3f} {row['bleach_loss']:5.2f} "
          f"{row['recovered']:7.1%}  {decided:<36} {row['render_s']:6.1f} {row['graph_s']:6.1f}{flag}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--n-dev", type=int, default=30, help="dev members dev-<start>... (--split dev)")
    parser.add_argument("--start", type=int, default=0, help="first dev member (--split dev)")
    parser.add_argument("--members", nargs="*", default=None, help="only these dev member ids")
    parser.add_argument("--max-cells", type=int, default=None, help="skip members with more cells")
    parser.add_argument("--frames", type=int, default=None, help="keep only the first N frames")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and summary here")
    args = parser.parse_args(argv)

    from calcium_gnn.data import zoo

    logging.getLogger("calcium_gnn").setLevel(logging.WARNING)
    if args.split == "dev":
        zoo.forbid_test_split("benchmarks/zoo_segmentation.py --split dev")
        if args.members:
            split = [zoo.member(i) for i in args.members]
        else:
            split = zoo.dev_members(args.n_dev, args.start)
    else:
        split = zoo.members(args.split)
    chosen = [m for m in split if args.max_cells is None or m.n_cells <= args.max_cells]
    skipped = len(split) - len(chosen)
    print(f"zoo segmentation, {args.split} split: {len(chosen)} members ({skipped} skipped by --max-cells), "
          f"frames {'all' if args.frames is None else f'first {args.frames}'}; every default; IoU >= {IOU}")
    print(f"{'member':>8} {'memb':<6} {'dye':<9} {'diam':>8} {'cells':>5} {'found':>5} {'T':>5} {'noise':>6} "
          f"{'bleach':>5} {'recov':>7}  {'decided (polarity rule) d -merged':<36} {'render':>6} "
          f"{'graph':>6} (s)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo_segmentation_") as tmp:
        for m in chosen:
            row = run_member(m, args.frames, Path(tmp))
            rows.append(row)
            _print_row(row)
    summary = summarise(rows)
    print(f"\n{'polarity dye size':<28} {'members':>7} {'cells':>6} {'recovered':>9} {'target':>7} "
          f"{'worst':>7} {'at target':>9}")
    for g in summary:
        print(f"{g['group']:<28} {g['members']:7d} {g['cells']:6d} {g['recovered']:9.1%} {TARGET:7.0%} "
              f"{g['worst_member']:7.1%} {g['members_at_target']:5d}/{g['members']:<3d}")
    total = sum(r["graph_s"] for r in rows)
    print(f"movie -> graph time: {total:.0f} s in all, {total / max(len(rows), 1):.1f} s per member")
    if args.json is not None:
        document = {"split": args.split, "frames": args.frames, "max_cells": args.max_cells, "rows": rows,
                    "summary": summary}
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
