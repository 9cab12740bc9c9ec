"""Normalised edge weights ``w_ij`` and the per-cell coupling rate (paper eqs. 1-3).

The paper couples neighbours through ``u_ij * l_ij`` (centroid distance times shared border).
Its raw magnitude depends on the unit (px or um), so every fit here works with

.. math::
    w_{ij} = \\frac{u_{ij} l_{ij}}{s}, \\qquad s = \\operatorname{mean}_{(i,j) \\in E} u_{ij} l_{ij}
    \\ \\text{(default)}

so that ``w`` is O(1) and ``k`` is a rate (1/s). ``K_ij = k u_ij l_ij`` of eq. (4) is then
``k w_ij s``: two fits with different scales ``s`` are comparable through ``k / s`` or through the
coupling rate :func:`coupling_rate`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from calcium_gnn.errors import ConfigError, GraphError

SCALE_KEY = "model.edge_weight_scale"


def edge_weights(edge_attr: Tensor, scale: float | str = "mean") -> tuple[Tensor, float]:
    """Normalise the paper's edge weights: ``w_ij = u_ij * l_ij / s``.

    Args:
        edge_attr: ``u * l`` per directed edge, shape (E, 1) (schema) or (E,).
        scale: ``"mean"`` (default): ``s = mean(u * l)`` over all edges of the graph; or a positive
            number used as ``s`` directly (e.g. to reuse the scale of an earlier fit).

    Returns:
        ``(w, s)``: ``w`` of shape (E,) (same dtype as ``edge_attr``) and the scale ``s`` as a float.

    Raises:
        ConfigError: ``scale`` is neither ``"mean"`` nor a positive finite number.
        GraphError: the weights are negative / non-finite, or ``"mean"`` is asked of a graph without
            edges (or whose weights are all zero).
    """
    ul = edge_attr.reshape(-1) if edge_attr.dim() == 2 and edge_attr.shape[-1] == 1 else edge_attr
    if ul.dim() != 1:
        raise GraphError("edge_attr", f"expected shape (E, 1) or (E,), got {tuple(edge_attr.shape)}")
    if ul.numel() and not bool(torch.isfinite(ul).all() and (ul >= 0).all()):
        raise GraphError("edge_attr", "edge weights u*l must be finite and non-negative")
    if isinstance(scale, str):
        if scale != "mean":
            raise ConfigError(SCALE_KEY, f"unknown scale '{scale}' (use 'mean' or a positive number)")
        if ul.numel() == 0:
            raise GraphError("edge_attr", "the graph has no edges: cannot normalise by the mean u*l")
        s = float(ul.detach().double().mean())
        if not s > 0:
            raise GraphError("edge_attr", "all edge weights u*l are zero: cannot normalise by their mean")
    else:
        try:
            s = float(scale)
        except (TypeError, ValueError):
            raise ConfigError(SCALE_KEY, f"expected 'mean' or a positive number, got {scale!r}") from None
        if not (s > 0 and math.isfinite(s)):
            raise ConfigError(SCALE_KEY, f"the scale must be a positive finite number, got {scale!r}")
    return ul / s, s


def coupling_rate(k: Tensor | float, w: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    """Per-cell coupling rate ``c_i = k / |N_i| * sum_{j in N(i)} w_ij`` (1/s).

    ``c_i`` is the rate at which cell ``i`` relaxes towards its neighbours in eqs. (1)-(3)
    (``dy_i/dt = -c_i y_i + ...``); it does not depend on the choice of the scale ``s``.
    Messages flow ``j = edge_index[0] -> i = edge_index[1]``; cells without neighbours get 0.

    Args:
        k: coupling constant, scalar.
        w: normalised edge weights, shape (E,).
        edge_index: (2, E) adjacency.
        num_nodes: N.

    Returns:
        ``c`` of shape (N,).
    """
    target = edge_index[1]
    total = torch.zeros(num_nodes, dtype=w.dtype, device=w.device).index_add(0, target, w)
    degree = torch.zeros(num_nodes, dtype=w.dtype, device=w.device).index_add(
        0, target, torch.ones_like(w)
    )
    return k * total / degree.clamp(min=1)
