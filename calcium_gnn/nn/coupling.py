"""CouplingConv: the consensus ODE with a learned (MLP) correction of the linear message.

The paper's message from a neighbour ``j`` to cell ``i`` is linear in the level difference
(eqs. 1-3). The learned coupling keeps that law and adds a small network of the difference and of
the geometry of the shared border:

.. math::
    \\frac{dy_i}{dt} = \\frac{k}{|N_i|} \\sum_{j \\in N(i)} m_{ij} + \\gamma_i, \\qquad
    m_{ij} = w_{ij} \\Delta_{ij} + \\phi_\\theta(\\Delta_{ij}, \\tilde u_{ij}, \\tilde l_{ij})
             - \\phi_\\theta(0, \\tilde u_{ij}, \\tilde l_{ij}),

with ``Delta_ij = z_j - z_i`` (``z`` as in :class:`~calcium_gnn.nn.consensus.ConsensusConv`),
``w_ij = u_ij l_ij / s`` and ``u~ = u / mean(u)``, ``l~ = l / mean(l)`` the normalised centroid
distance and shared border length. Subtracting ``phi(0, ...)`` makes the message vanish between
equal levels by construction (no flux without a gradient), so the correction cannot imitate the
feed ``gamma_i`` and ``gamma`` stays identifiable. ``phi`` is an :class:`~calcium_gnn.nn.mlp.MLP`
whose output layer starts at zero (``output_gain=0``): at initialisation the layer *is* the linear
law, and training moves away from it only as far as the data ask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from calcium_gnn.errors import GraphError
from calcium_gnn.nn.consensus import PAPER_GAMMA_BOUNDS, PAPER_K_BOUNDS, ConsensusConv
from calcium_gnn.nn.mlp import MLP


def normalised_edge_features(u: Tensor, l: Tensor) -> Tensor:
    """``(u / mean(u), l / mean(l))`` per edge, (E, 2) (a mean of 0 leaves the feature at 0)."""
    u, l = u.reshape(-1).double(), l.reshape(-1).double()
    mu, ml = u.mean() if u.numel() else u.new_ones(()), l.mean() if l.numel() else l.new_ones(())
    return torch.stack([u / mu if mu > 0 else u, l / ml if ml > 0 else l], dim=1)


class CouplingConv(ConsensusConv):
    r"""Consensus right-hand side with an MLP correction of the message (module docstring).

    .. math::
        m_{ij} = w_{ij} \Delta_{ij} + \phi_\theta(\Delta_{ij}, \tilde u_{ij}, \tilde l_{ij})
        - \phi_\theta(0, \tilde u_{ij}, \tilde l_{ij})

    Args:
        num_nodes: number of cells N.
        edge_features: (E, 2) normalised ``(u~, l~)`` of the graph's edges, in ``edge_index`` order
            (:func:`normalised_edge_features`).
        gamma_mode, k_bounds, gamma_bounds, k_init, gamma_init: as :class:`ConsensusConv`.
        hidden_features: width of the MLP's hidden layers (default 16).
        num_layers: number of hidden layers (default 2).
        activation: hidden activation (default ``"tanh"``).

    Shapes:
        - **input:** ``y`` (N, B), ``x`` (N, B), ``edge_index`` (2, E), ``edge_weight`` (E,),
          ``modelled`` (N,) bool or None.
        - **output:** ``dy/dt`` (N, B).
    """

    #: the learned message is nonlinear in the state: the simulator integrates it step by step
    affine_in_state: bool = False

    def __init__(
        self,
        num_nodes: int,
        edge_features: Tensor,
        gamma_mode: str = "per_cell",
        k_bounds: tuple[float, float] = PAPER_K_BOUNDS,
        gamma_bounds: tuple[float, float] = PAPER_GAMMA_BOUNDS,
        k_init: float = 0.01,
        gamma_init: float = 0.0,
        hidden_features: int = 16,
        num_layers: int = 2,
        activation: str = "tanh",
    ) -> None:
        super().__init__(num_nodes, gamma_mode, k_bounds, gamma_bounds, k_init, gamma_init)
        if edge_features.dim() != 2 or edge_features.shape[1] != 2:
            raise GraphError(
                "edge_features", f"expected (E, 2) features (u~, l~), got {tuple(edge_features.shape)}"
            )
        self.register_buffer("edge_features", edge_features.detach().clone())
        #: (E, 1) ``phi(0, u~, l~)`` while a simulation runs (:meth:`simulation`), else None
        self.register_buffer("phi_at_zero", None, persistent=False)
        self.phi = MLP(
            3,
            1,
            hidden_features=int(hidden_features),
            num_layers=int(num_layers),
            activation=activation,
            output_gain=0.0,
        )

    def reset_parameters(self) -> None:
        """k, gamma back to their initial values; the MLP correction back to zero."""
        super().reset_parameters()
        if hasattr(self, "phi"):
            self.phi.reset_parameters()

    def _phi(self, level: Tensor) -> Tensor:
        """``phi(level_ij, u~_ij, l~_ij)`` for (E, B) levels -> (E, B)."""
        e, b = level.shape
        if self.phi.output.weight.dtype != level.dtype:  # converted once, not walked at every call
            self.phi.to(level.dtype)
        feats = self.edge_features.to(level.dtype).unsqueeze(1).expand(e, b, 2)
        return self.phi(torch.cat([level.unsqueeze(-1), feats], dim=-1)).squeeze(-1)

    @contextmanager
    def simulation(self, dtype: torch.dtype) -> Iterator[None]:
        """``phi(0, u~, l~)`` depends on the weights only: computed once per simulation (in its autograd
        graph) instead of at each of its ``4 x substeps x (T - 1)`` RK4 stages, half the MLP work."""
        zero = self.edge_features.new_zeros(self.edge_features.shape[0], 1, dtype=dtype)
        self.phi_at_zero = self._phi(zero)
        try:
            yield
        finally:
            self.phi_at_zero = None

    def correction(self, delta: Tensor) -> Tensor:
        """``phi(Delta, u~, l~) - phi(0, u~, l~)`` for (E, B) differences -> (E, B)."""
        at_zero = self.phi_at_zero
        if at_zero is None or at_zero.dtype != delta.dtype:
            at_zero = self._phi(torch.zeros_like(delta[:, :1]))
        return self._phi(delta) - at_zero

    def message(self, z_i: Tensor, z_j: Tensor, edge_weight: Tensor) -> Tensor:
        """``m_ij = w_ij Delta_ij + phi(Delta_ij, u~, l~) - phi(0, u~, l~)`` for each edge j -> i, (E, B)."""
        if z_j.shape[0] != self.edge_features.shape[0]:
            raise GraphError(
                "edge_index",
                f"{z_j.shape[0]} edges, but the layer was built for {self.edge_features.shape[0]}",
            )
        delta = z_j - z_i
        return edge_weight.unsqueeze(-1) * delta + self.correction(delta)
