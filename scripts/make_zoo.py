"""Write a member of the culture zoo to disk, list the zoo, or re-freeze its test split.

Usage::

    python scripts/make_zoo.py member=dev-3 out=DIR [overwrite=false]
    python scripts/make_zoo.py list=dev [n=20]       # or list=test: one line per member
    python scripts/make_zoo.py freeze=true           # rewrite calcium_gnn/data/zoo_test_split.json

``member=`` takes ``dev-<i>``, ``test-<i>``, ``<family>-<seed>`` or ``<law>-<seed>`` (a nonlinear law,
``saturating``, ``threshold``, ``rectifying`` or ``paracrine``; ``calcium_gnn.data.zoo``). ``out=DIR``
receives a culture directory (``calcium_gnn.io.culture_files``: ``movie.tif`` with ``finterval = dt``,
``labels.tif``, ``truth.npz``, ``truth.json``) plus ``graph.pt``, the member's true cell graph with its
truth fields, ``traces.csv`` (its noisy traces, a row per cell) and ``centroids.csv`` (``cell_id, x,
y`` px), what a lab that extracted its traces elsewhere holds, and ``nuclei.tif`` for a nuclear dye.
Then::

    python train.py experiment=setup1_crlsm data.graph=DIR/graph.pt     # the true graph
    python train.py experiment=setup1_crlsm data.movie=DIR/movie.tif ... # the movie, overrides printed
    python train.py experiment=setup1_crlsm data=lab data.traces=DIR/traces.csv \
        data.centroids=DIR/centroids.csv data.dt=...                    # traces and centroids

Freezing is for an *intended* change of the generator only: it voids every score on the old split.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from calcium_gnn.data import zoo
from calcium_gnn.data.zoo_drivers import DRIVER_KINDS
from calcium_gnn.data.zoo_split import write_manifest
from calcium_gnn.errors import CalciumGNNError, ConfigError
from calcium_gnn.io.culture_files import write_culture_files
from calcium_gnn.io.graph_files import export_centroids_csv, export_traces_csv, save_graph, save_labels

KEYS = ("member", "out", "overwrite", "list", "n", "freeze")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_args(argv: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments -> dict (keys of :data:`KEYS`).

    Raises:
        ConfigError: naming a malformed, unknown or repeated key.
    """
    out: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ConfigError(arg, "arguments must be KEY=VALUE")
        if key not in KEYS:
            raise ConfigError(key, f"unknown key; expected one of {KEYS}")
        if key in out:
            raise ConfigError(key, "given twice")
        out[key] = value
    return out


def _flag(args: dict[str, str], key: str) -> bool:
    text = args.get(key, "false").lower()
    if text not in TRUE + FALSE:
        raise ConfigError(key, f"expected true or false, got {text!r}")
    return text in TRUE


def describe(m: zoo.ZooMember) -> str:
    """One line: id, family, law, signal, cells, frames, dt, k, noise, diameter, membrane, dye."""
    p = m.params
    return (
        f"{m.id:>9} {m.family:<9} {m.law:<6} {m.signal:<11} {m.n_cells:>5} cells {m.n_frames:>5} frames "
        f"dt={m.dt:<6g} k={m.k:<8g} noise={m.noise:<7g} d={p['cell_diameter']:<5g}px "
        f"{p['membrane']}/{p['dye']}"
    )


def write_member(m: zoo.ZooMember, out: Path, overwrite: bool) -> list[str]:
    """Write ``m`` to ``out`` (module docstring); return the lines to print."""
    culture = zoo.member_culture(m)
    rendered = zoo.member_movie(m, culture)
    graph = zoo.member_graph(m)
    arrays = {
        "traces": culture.traces,
        "t": culture.t,
        "gamma": culture.gamma,
        "is_driver": culture.is_driver,
        "touches_edge": culture.touches_edge,
        "edge_src": culture.edge_index[0],
        "edge_dst": culture.edge_index[1],
        "l": culture.l,
        "u": culture.u,
        "centroids": culture.centroids,
        "areas": culture.areas,
        "cell_ids": np.arange(1, len(culture.areas) + 1, dtype=np.int64),
        "hot_pixels": rendered.hot_pixels,
    }
    modelled_ids = [int(i) + 1 for i in np.flatnonzero(~culture.is_driver)]
    meta: dict[str, Any] = {
        "seed": int(m.key[-1]),
        "zoo_key": list(m.key),
        "zoo_id": m.id,
        "family": m.family,
        "law": m.law,
        "signal": m.signal,
        "params": m.params,
        "n_cells": m.n_cells,
        "n_frames": m.n_frames,
        "image_shape": list(rendered.labels.shape),
        "dt": m.dt,
        "k": m.k,
        "leak": culture.leak,
        "leak_baseline": culture.leak_baseline,
        "edge_weight_scale": culture.edge_weight_scale,
        "ode": "dy_i/dt = k/|N_i| sum_j w_ij (z_j - y_i) + gamma_i - leak (y_i - leak_baseline), "
        "w_ij = u_ij l_ij / s; z_j = y_j for modelled cells, the prescribed level for drivers "
        "(linear between frames); leak = 0 for the linear law (the paper's eq. 3)",
        "is_driver_note": "in the zoo, drivers are the edge cells and, in the stimulus and pacemaker "
        "families, some interior cells (driver_kind); fit with the drivers as border cells",
        "driver_kind": [DRIVER_KINDS[k] for k in culture.drivers.kind],
        "modelled_cell_ids": modelled_ids,
        "n_edges": int(culture.edge_index.shape[1]),
        "n_drivers": int(culture.is_driver.sum()),
    }
    write_culture_files(
        out, movie=rendered.movie, labels=rendered.labels, dt=m.dt, arrays=arrays, meta=meta,
        overwrite=overwrite,
    )
    save_graph(graph, out / "graph.pt")
    # what a lab that extracted traces elsewhere holds: a traces table and the cell centroids
    export_traces_csv(graph, out / "traces.csv")
    export_centroids_csv(graph, out / "centroids.csv")
    if rendered.nuclei is not None:
        save_labels(rendered.nuclei, out / "nuclei.tif")
    interior = int((culture.is_driver & ~culture.touches_edge).sum())
    # the movie's graph has its own cell ids: drivers are named on the true graph only
    drivers = " setup.drivers=is_driver" if interior else ""
    lines = [
        f"wrote {out}: {describe(m)}",
        f"  true graph:  python train.py experiment=setup1_neural_ode data.graph={out / 'graph.pt'}{drivers}",
        f"  from movie:  python train.py experiment=setup1_neural_ode data.movie={out / 'movie.tif'}",
        f"  lab files:   python train.py experiment=setup1_neural_ode data=lab "
        f"data.traces={out / 'traces.csv'} data.centroids={out / 'centroids.csv'} data.dt={m.dt}",
    ]
    if interior:
        lines.append(f"  {interior} interior drivers (stimulated cells, pacemakers): from the movie, "
                     "name them with setup.drivers=[cell ids of the built graph]")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 = done, 2 = bad input)."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if _flag(args, "freeze"):
            path = write_manifest(zoo.test_manifest())
            print(f"froze the test split: {path}")
        elif "list" in args:
            chosen = zoo.members(args["list"], int(args.get("n", zoo.DEV_DEFAULT)))
            print("\n".join(describe(m) for m in chosen))
        elif "member" in args:
            if "out" not in args:
                raise ConfigError("out", "missing: give the output directory as out=DIR")
            m = zoo.member(args["member"])
            print("\n".join(write_member(m, Path(args["out"]), _flag(args, "overwrite"))))
        else:
            raise ConfigError("member", "give member=ID out=DIR, list=dev|test or freeze=true")
    except (CalciumGNNError, ValueError) as err:
        print(f"make_zoo: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
