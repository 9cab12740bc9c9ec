"""Label image -> cell graph.

The ``Data`` contract itself is :mod:`calcium_gnn.io.graph_schema` (it is also the ``graph.pt`` file
contract, and ``io`` is the bottom layer).

- :mod:`.geometry`: per-cell area, centroid, image-edge flag, shapely polygons;
- :mod:`.adjacency`: shared borders ``l_ij`` on the membrane midline (Crofton estimate), adjacency;
- :mod:`.traces`: per-cell mean intensity traces by sparse products;
- :mod:`.build`: :func:`~.build.build_graph`, the PyG ``Data`` of a label image and its traces;
- :mod:`.plots`: outlines, polygons coloured by intensity (paper Fig. 6), graph over image (Fig. 7).

Submodules are imported explicitly (``from calcium_gnn.graphs.build import build_graph``).
"""
