"""Comparing two segmentations: intersection over union (IoU) of every pair of cells."""

from __future__ import annotations

import numpy as np


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true cell with every predicted cell.

    ``IoU(a, b) = |a & b| / |a | b|`` in pixels, from the contingency table of the two label images.

    Args:
        true, pred: (Y, X) non-negative integer label images of the same shape (0 = background).

    Returns:
        (max(true), max(pred)) float64; row i - 1 is true label i, column j - 1 predicted label j.
    """
    true = np.asarray(true, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} vs {pred.shape}")
    n_true, n_pred = int(true.max(initial=0)), int(pred.max(initial=0))
    joint = np.bincount((true * (n_pred + 1) + pred).ravel(), minlength=(n_true + 1) * (n_pred + 1))
    joint = joint.reshape(n_true + 1, n_pred + 1)
    inter = joint[1:, 1:].astype(np.float64)
    union = joint.sum(axis=1)[1:, None] + joint.sum(axis=0)[None, 1:] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def matched_fraction(true: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.7) -> float:
    """Fraction of the true cells (those present in ``true``) matched by a predicted cell at IoU >= threshold.

    With a threshold above 0.5 a predicted cell can match at most one true cell, so the matching
    is one-to-one without an assignment step.
    """
    iou = iou_matrix(true, pred)
    present = np.bincount(np.asarray(true, dtype=np.int64).ravel())[1:] > 0
    if not present.any():
        return 0.0
    best = iou.max(axis=1) if iou.shape[1] else np.zeros(iou.shape[0])
    return float((best[present] >= iou_threshold).mean())
