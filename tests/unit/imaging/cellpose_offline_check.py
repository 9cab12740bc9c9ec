"""Run by test_imaging_cellpose.py in a fresh interpreter (so CELLPOSE_LOCAL_MODELS_PATH is set
before Cellpose is first imported): train a tiny Cellpose 3 network from scratch on synthetic
Voronoi cells, save it, and use it through our backend, all offline. Prints one JSON line.

Usage: python cellpose_offline_check.py <work folder>
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

work = Path(sys.argv[1])
models_dir = work / "empty_models"
models_dir.mkdir(parents=True, exist_ok=True)
os.environ["CELLPOSE_LOCAL_MODELS_PATH"] = str(models_dir)
assert "cellpose" not in sys.modules

from calcium_gnn.errors import SegmentationError  # noqa: E402
from calcium_gnn.imaging.segmentation import segment, segment_cellpose  # noqa: E402
from calcium_gnn.io.masks import read_labels  # noqa: E402


def voronoi(seed: int, size: int = 128, spacing: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = np.arange(spacing // 2, size, spacing)
    centres = np.array([(y, x) for y in grid for x in grid]) + rng.integers(-5, 6, (grid.size**2, 2))
    centres = np.clip(centres, 0, size - 1)
    seeds = np.zeros((size, size), np.int32)
    seeds[centres[:, 0], centres[:, 1]] = np.arange(1, len(centres) + 1)
    _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    walls = ndi.morphological_gradient(labels, size=3) > 0
    image = rng.uniform(0.6, 1.0, labels.max() + 1)[labels]
    image[walls] = 0.2
    image = ndi.gaussian_filter(image, 1.0) + rng.normal(0, 0.03, image.shape)
    return image.astype(np.float32), labels.astype(np.int32)


result: dict[str, object] = {}
images, labels = zip(*(voronoi(s) for s in range(4)), strict=True)

from cellpose import io, models, train  # noqa: E402

result["model_dir"] = str(models.MODEL_DIR)
net = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None, diam_mean=30.0, nchan=2)
model_file = train.train_seg(net.net, train_data=list(images), train_labels=list(labels), channels=[0, 0],
                             normalize=True, n_epochs=2, batch_size=4, bsize=128, nimg_per_epoch=4,
                             save_path=str(work), model_name="tiny_voronoi", min_train_masks=1)[0]
result["model_file_exists"] = Path(model_file).is_file()

test_image, _ = voronoi(10)
masks = segment_cellpose(test_image, model=model_file, diameter=24.0)
result["shape"] = list(masks.shape)
result["dtype"] = str(masks.dtype)
result["n_cells"] = int(masks.max())

for name, model in [("missing_path", str(work / "no_such_model")), ("absent_weights", "cyto3")]:
    try:
        segment(test_image, backend="cellpose", model=model, allow_download=False)
        result[name] = "no error"
    except SegmentationError as exc:
        result[name] = str(exc)
result["downloaded"] = sorted(p.name for p in models_dir.iterdir())

# a real Cellpose GUI-style _seg.npy written by Cellpose's own io, read back through our 'masks' reader
_, truth = voronoi(11)
flows = [np.zeros((*truth.shape, 3), np.uint8), np.zeros((2, *truth.shape), np.float32),
         np.zeros(truth.shape, np.float32)]
io.masks_flows_to_seg(test_image, truth, flows, str(work / "culture.tif"), diams=24.0, channels=[0, 0])
result["seg_npy_round_trip"] = bool(np.array_equal(read_labels(work / "culture_seg.npy"), truth))
print("RESULT " + json.dumps(result))
