"""Build the cell graph of a calcium-imaging movie and write it with its exports and figures.

    python scripts/build_graph.py data.movie=PATH out=DIR [segmentation=cellpose] [graph.max_gap=1] ...

writes into DIR: graph.pt, labels.tif, cells.geojson, traces.csv, graph.graphml and three figures
(see ``calcium_gnn.pipeline.write_outputs``). Config: ``configs/build_graph.yaml``.

The movie is streamed: an uncompressed TIFF or ``.npy`` is memory-mapped and read chunk by chunk,
so the peak memory is about ``preprocessing.memory_budget_mb`` (default 1024 MB) plus a few
frame-sized images, not the movie (``benchmarks/bench_movie_memory.py`` measures it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from calcium_gnn.config import register_resolvers
from calcium_gnn.errors import CalciumGNNError

register_resolvers()

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def build(cfg: DictConfig) -> dict[str, Path]:
    """Run the pipeline for ``cfg`` and write the outputs; return the written paths."""
    from calcium_gnn.pipeline import (
        check_output_folder,
        movie_to_graph_full,
        options_from_config,
        write_outputs,
    )

    container = OmegaConf.to_container(cfg, resolve=True)
    options = options_from_config(container["segmentation"], container["preprocessing"], container["graph"],
                                  container["data"])
    out = check_output_folder(cfg.out, overwrite=bool(cfg.overwrite))  # refuse before the long run
    result = movie_to_graph_full(cfg.data.movie, progress=bool(cfg.progress), **options)
    return write_outputs(result, out, overwrite=bool(cfg.overwrite), frame=int(cfg.figures.frame),
                         dpi=int(cfg.figures.dpi))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="build_graph")
def main(cfg: DictConfig) -> None:
    """Entry point: one-line error messages (exit status 2) instead of tracebacks for bad input."""
    try:
        paths = build(cfg)
    except CalciumGNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(paths)} files into {Path(cfg.out)}")


if __name__ == "__main__":
    main()
