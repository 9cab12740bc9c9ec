"""The ``cellpose`` segmentation backend: the real Cellpose library (Stringer et al., 2021).

Cellpose is imported here, inside the function, so ``import calcium_gnn`` stays fast. A built-in
model name is looked up in Cellpose's model folder (``$CELLPOSE_LOCAL_MODELS_PATH`` or
``~/.cellpose/models``, read by Cellpose when ``cellpose.models`` is first imported); when its
weights are missing Cellpose downloads them (as it does on its own), unless
``allow_download=False``; offline, the failure is one clear error naming the offline backends. A
model path is checked to exist by us (Cellpose would silently fall back to downloading its default).

Versions (chosen by ``importlib.metadata.version("cellpose")``):

- **3.x** (installed and tested here, 3.1.1.3): ``CellposeModel(gpu, pretrained_model=path)`` or
  ``CellposeModel(gpu, model_type=name)`` (default ``"cyto3"``), then
  ``eval(image, channels=[cyto, nucleus], diameter, flow_threshold, cellprob_threshold)``;
  ``channels=(0, 0)`` means greyscale. Weight files: ``cyto``/``cyto2``/``nuclei`` are stored as
  ``<name>torch_0``, the others under their name.
- **4.x** (Cellpose-SAM; NOT exercised here: 4.x cannot run with this machine's torch/torchvision
  and cannot train from scratch): ``CellposeModel(gpu, pretrained_model=path_or_name)`` with the
  built-in ``"cpsam"`` model (weights fetched from the Hugging Face hub, so name them by path
  offline); ``eval`` has no ``channels`` argument (the first three channels are used) and
  ``diameter`` is optional (the model is size-invariant). 3.x model files do not load in 4.x.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from calcium_gnn.errors import ConfigError, SegmentationError

OFFLINE_BACKENDS = "use backend='watershed' (no weights) or backend='masks' (your own label image)"
_CELLPOSE3_SPECIAL_FILES = {"cyto": "cytotorch_0", "cyto2": "cyto2torch_0", "nuclei": "nucleitorch_0"}


def cellpose_major_version() -> int:
    """The installed Cellpose major version (3 or 4).

    Raises:
        SegmentationError: Cellpose is not installed.
    """
    try:
        return int(version("cellpose").split(".")[0])
    except PackageNotFoundError:
        problem = f"Cellpose is not installed; {OFFLINE_BACKENDS}"
        raise SegmentationError("segmentation.backend", problem) from None


def _looks_like_path(model: str) -> bool:
    return os.sep in model or "/" in model or Path(model).suffix != "" or model.startswith(".")


def segment_cellpose(
    image: np.ndarray,
    *,
    model: str | Path = "cyto3",
    diameter: float | None = None,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
    channels: Sequence[int] = (0, 0),
    gpu: bool = False,
    normalize: bool = True,
    allow_download: bool = True,
) -> np.ndarray:
    """Segment a reference image (Y, X) with Cellpose.

    Args:
        image: (Y, X) reference image.
        model: a built-in model name (``"cyto3"``, ``"nuclei"``... in 3.x; ``"cpsam"`` in 4.x) or
            the path of a custom / trained model file.
        diameter: cell diameter in pixels; None uses the model's own (30 px for 3.x models).
        flow_threshold: maximum flow error of a mask (Cellpose default 0.4).
        cellprob_threshold: cell-probability threshold (Cellpose default 0.0).
        channels: ``[cytoplasm, nucleus]`` channel indices for 3.x (``(0, 0)``: greyscale); ignored
            by 4.x.
        gpu: run on the GPU if Cellpose finds one.
        normalize: Cellpose's percentile normalisation of the input.
        allow_download: let Cellpose download missing built-in weights (needs internet).

    Returns:
        (Y, X) int32 labels, 0 = background (may hold no cell).

    Raises:
        SegmentationError: the model file is missing, the weights are absent offline, or Cellpose
            failed (one line, naming the model).
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise SegmentationError("segmentation.image", f"expected a 2-D image (Y, X), got shape {img.shape}")
    if diameter is not None and not diameter > 0:
        raise ConfigError("segmentation.diameter", f"must be > 0 pixels or None, got {diameter!r}")
    major = cellpose_major_version()
    if major not in (3, 4):
        problem = f"Cellpose {version('cellpose')} is not supported (only 3.x and 4.x)"
        raise SegmentationError("segmentation.backend", problem)

    model_str = str(model)
    path = Path(model_str).expanduser()
    is_path = path.exists() or _looks_like_path(model_str)
    if is_path and not path.is_file():
        raise SegmentationError(model_str, "Cellpose model file not found")

    from cellpose import models  # lazy: importing Cellpose (and torch) takes seconds

    if not is_path and not allow_download:
        weights = Path(models.MODEL_DIR) / _CELLPOSE3_SPECIAL_FILES.get(model_str, model_str)
        if major == 3 and not weights.is_file():
            raise SegmentationError(
                model_str,
                f"weights of Cellpose model '{model_str}' are not in {models.MODEL_DIR} and cannot be "
                f"downloaded offline (allow_download is off); copy them there or give a model path, or "
                f"{OFFLINE_BACKENDS}",
            )
        if major == 4:
            raise SegmentationError(
                model_str, f"Cellpose 4 fetches built-in weights from the internet; give a model path, or "
                           f"{OFFLINE_BACKENDS}")
    try:
        if is_path:
            net = models.CellposeModel(gpu=gpu, pretrained_model=str(path))
        elif major == 3:
            net = models.CellposeModel(gpu=gpu, model_type=model_str)
        else:
            net = models.CellposeModel(gpu=gpu, pretrained_model=model_str)
        kwargs = {"diameter": diameter, "flow_threshold": flow_threshold,
                  "cellprob_threshold": cellprob_threshold, "normalize": normalize}
        if major == 3:
            kwargs["channels"] = list(channels)
        masks = net.eval(img.astype(np.float32), **kwargs)[0]
    except SegmentationError:
        raise
    except OSError as exc:  # urllib's URLError is an OSError: no network
        raise SegmentationError(model_str, f"Cellpose could not load the model offline ({exc}); "
                                           f"{OFFLINE_BACKENDS}") from None
    except Exception as exc:  # noqa: BLE001 - Cellpose raises many kinds of errors
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SegmentationError(model_str, f"Cellpose failed: {type(exc).__name__}: {first}") from None
    return np.asarray(masks).astype(np.int32)
