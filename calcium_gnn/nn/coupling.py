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

With ``source_level=True`` the network also sees the sending cell's level ``z_j``,
``phi_theta(Delta_ij, z_j, u~_ij, l~_ij) - phi_theta(0, z_j, u~_ij, l~_ij)``: a junction whose
conductance depends on the level of the cell calcium leaves (calcium-induced release above a threshold,
:mod:`calcium_gnn.data.zoo_laws`) becomes expressible. The message still vanishes between equal levels;
the subtracted term now depends on the state, so each evaluation runs the MLP twice.

``message_form="conductance"`` learns the junction's conductance instead of a correction of its flux:

.. math::
    m_{ij} = w_{ij} \\Delta_{ij}\\, c_\\theta(\\hat\\Delta_{ij}, \\hat z_j, \\tilde u_{ij}, \\tilde l_{ij}),
    \\qquad c_\\theta = \\operatorname{softplus}(\\log(e - 1) + \\psi_\\theta) > 0,

with the levels standardised by the training window's statistics (``hat Delta = Delta / s``,
``hat z = (z - c) / s``, :attr:`CouplingConv.level_center`, :attr:`CouplingConv.level_scale`). ``psi``'s
output layer starts at zero, so ``c = 1`` and the start is again the linear law. The conductance is
positive whatever the weights: calcium always flows down its gradient (a passive junction), each cell's
rate is a positively weighted pull toward its neighbours, and the ODE obeys a maximum principle
(the levels stay within the drivers' range, shifted by the feeds), so no learned law can blow up
between frames it was not fitted on, as long as the integration step stays inside the integrator's
stability limit. The message vanishes between equal levels through the factor ``Delta``,
without a second network call: each evaluation runs the MLP once. Every law of the zoo
(:mod:`calcium_gnn.data.zoo_laws`) has this form: saturation ``c = tanh(Delta/sigma) / (Delta/sigma)``,
release ``c = 1 + a S((z_j - theta)/epsilon)``, rectification ``c = 1`` or ``r`` by the sign of ``Delta``.

``message_form`` may also name a closed-form law (``"saturating"``, ``"threshold"``, ``"rectifying"``,
:mod:`calcium_gnn.nn.named_laws`): the same message ``w_ij Delta_ij c`` with the conductance of that law,
a few parameters with a meaning instead of a network (the layer then has no ``phi``).

``node_term=True`` adds a term of the cell's own level, for what happens inside a cell rather than
across its junctions (a leak back to a baseline, ``- delta (y_i - b_i)``; a pump that saturates):

.. math::
    \frac{dy_i}{dt} = \\dots + \\gamma_i + \nu(y_i), \\qquad
    \nu(y) = -\\delta\\, y + r\\, s\\, G\\, \big[h_\theta(\\hat y) - h_\theta(0)\big],
    \\quad \\hat y = (y - c) / s,

with ``delta`` a learned leak rate (:attr:`CouplingConv.node_leak`, 0 at construction;
:class:`~calcium_gnn.models.gnn_ode.GNNODEModule` starts it at the leak law's fit), ``h`` a second
network of one input whose output layer starts at zero, ``c``, ``s`` the levels' centre and scale,
``G`` the conductance gain and ``r`` (:attr:`CouplingConv.node_rate`) a fixed rate scale, the linear
start's ``k``, so that ``h``'s outputs are of the order of the conductance network's. The leak law's
``- delta (y_i - b_i)`` is ``- delta y_i`` plus the per-cell constant ``delta b_i`` that ``gamma_i``
carries; ``h(y^) - h(0)`` vanishes at the centre level and leaves constants to the feeds. The
network's part is bounded (a tanh network's output is); unlike the conductance it can push a cell away
from its neighbours and outside the drivers' range, so a learned node term that does so on frames it
was not fitted on is for the validation window to reject.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from calcium_gnn.errors import GraphError
from calcium_gnn.nn.consensus import PAPER_GAMMA_BOUNDS, PAPER_K_BOUNDS, ConsensusConv
from calcium_gnn.nn.mlp import MLP
from calcium_gnn.nn.named_laws import NAMED_LAWS, NamedConductance

#: ``message_form`` values: a learned correction of the linear flux, a learned positive conductance, or the
#: conductance of a named law (:mod:`calcium_gnn.nn.named_laws`)
MESSAGE_FORMS: tuple[str, ...] = ("correction", "conductance", *NAMED_LAWS)
#: the message forms ``w Delta c`` with a positive conductance ``c``
CONDUCTANCE_FORMS: tuple[str, ...] = ("conductance", *NAMED_LAWS)
#: ``softplus(CONDUCTANCE_OFFSET) = 1``: the conductance form starts at the linear law
CONDUCTANCE_OFFSET: float = float(math.log(math.e - 1.0))


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
        source_level: the MLP also sees the sending cell's level ``z_j`` (default False).
        message_form: ``"correction"`` (default, ``phi`` above), ``"conductance"`` (a positive learned
            conductance ``c``, module docstring) or a named law's conductance (``"saturating"``,
            ``"threshold"``, ``"rectifying"``: :mod:`calcium_gnn.nn.named_laws`; no network ``phi``).
        level_center, level_scale: ``c``, ``s`` of the standardised levels the conductance network sees
            (default 0, 1; :class:`~calcium_gnn.models.gnn_ode.GNNODEModule` passes the training
            window's median and standard deviation).
        conductance_gain: ``G`` in ``psi = G net(...)`` (default 1; of a named law's raw parameters too):
            a fixed preconditioner of the network's weights. At the linear start the output-error gradient
            reaching the network is orders of magnitude below the one reaching the window starts (1.8e-6
            against 5.5e-4 on the zoo's ``saturating-35``), which a quasi-Newton step with one scalar
            initial scale does not undo; ``G`` multiplies the network's gradient by ``G`` and its
            curvature by ``G^2``.
        node_term: add the learned node term ``nu(y_i)`` (module docstring; default False).

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
        source_level: bool = False,
        message_form: str = "correction",
        level_center: float = 0.0,
        level_scale: float = 1.0,
        conductance_gain: float = 1.0,
        node_term: bool = False,
    ) -> None:
        super().__init__(num_nodes, gamma_mode, k_bounds, gamma_bounds, k_init, gamma_init)
        self.source_level = bool(source_level)
        if message_form not in MESSAGE_FORMS:
            raise GraphError("message_form",
                             f"unknown message form {message_form!r} (use one of {MESSAGE_FORMS})")
        self.message_form = message_form
        if not (math.isfinite(level_scale) and level_scale > 0 and math.isfinite(level_center)):
            raise GraphError("level_scale", "the levels' scale must be finite and > 0 and their centre "
                                            f"finite, got scale {level_scale!r}, centre {level_center!r}")
        if not (math.isfinite(conductance_gain) and conductance_gain > 0):
            raise GraphError("conductance_gain", f"must be finite and > 0, got {conductance_gain!r}")
        self.conductance_gain = float(conductance_gain)
        self.register_buffer("level_center", torch.tensor(float(level_center), dtype=torch.float64))
        self.register_buffer("level_scale", torch.tensor(float(level_scale), dtype=torch.float64))
        if edge_features.dim() != 2 or edge_features.shape[1] != 2:
            raise GraphError(
                "edge_features", f"expected (E, 2) features (u~, l~), got {tuple(edge_features.shape)}"
            )
        self.register_buffer("edge_features", edge_features.detach().clone())

        #: (E, 1) ``phi(0, u~, l~)`` while a simulation runs (:meth:`simulation`), else None
        self.register_buffer("phi_at_zero", None, persistent=False)
        #: a named law's conductance (``message_form`` in :data:`NAMED_LAWS`), else None
        self.named = NamedConductance(message_form, self.conductance_gain) if message_form in NAMED_LAWS \
            else None
        self.phi = None if self.named is not None else MLP(
            4 if self.source_level else 3,
            1,
            hidden_features=int(hidden_features),
            num_layers=int(num_layers),
            activation=activation,
            output_gain=0.0,
        )
        #: the node term's network ``h(y^)`` and leak rate ``delta`` (``node_term=True``), else None
        self.node = MLP(1, 1, hidden_features=int(hidden_features), num_layers=int(num_layers),
                        activation=activation, output_gain=0.0) if node_term else None
        self.node_leak = nn.Parameter(torch.zeros((), dtype=torch.float64)) if node_term else None
        #: ``r``, the node term's rate scale (1/s): the linear start's ``k`` (:meth:`set_node_rate`)
        self.register_buffer("node_rate", torch.tensor(float(k_init), dtype=torch.float64))

    def reset_parameters(self) -> None:
        """k, gamma back to their initial values; the MLP correction (and the node term) back to zero, a
        named law back to its start."""
        super().reset_parameters()
        if getattr(self, "phi", None) is not None:
            self.phi.reset_parameters()
        if getattr(self, "named", None) is not None:
            self.named.reset_parameters()
        if getattr(self, "node", None) is not None:
            self.node.reset_parameters()
            with torch.no_grad():
                self.node_leak.zero_()

    @torch.no_grad()
    def set_node_rate(self, rate: float | Tensor) -> None:
        """Set ``r`` of the node term (module docstring; > 0 and finite)."""
        value = float(rate)
        if not (math.isfinite(value) and value > 0):
            raise GraphError("node_rate", f"the node term's rate scale must be finite and > 0, got {rate!r}")
        self.node_rate.fill_(value)

    def node_flux(self, level: Tensor) -> Tensor:
        """``nu(y) = - delta y + r s G (h((y - c) / s) - h(0))`` for levels of any shape (module
        docstring); zeros without a node term."""
        if self.node is None:
            return torch.zeros_like(level)
        if self.node.output.weight.dtype != level.dtype:  # converted once, not walked at every call
            self.node.to(level.dtype)
        scale, center = self.level_scale.to(level.dtype), self.level_center.to(level.dtype)
        inputs = torch.cat([((level - center) / scale).reshape(-1, 1), level.new_zeros(1, 1)])
        h = self.node(inputs).reshape(-1)
        gain = self.node_rate.to(level.dtype) * scale * self.conductance_gain
        return (gain * (h[:-1] - h[-1])).reshape(level.shape) - self.node_leak.to(level.dtype) * level

    def node_term(self, z: Tensor) -> Tensor | None:
        """``nu(z_i)`` (N, B) where the layer has a node term (module docstring), else None."""
        return None if self.node is None else self.node_flux(z)

    def _phi(self, level: Tensor, source: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        """``phi(level, [z_j,] u~, l~)`` for (E, B) levels (and source levels) on the graph's edges, or on
        the edges whose (E, 2) ``features`` are given -> (E, B)."""
        e, b = level.shape
        if self.phi.output.weight.dtype != level.dtype:  # converted once, not walked at every call
            self.phi.to(level.dtype)
        features = self.edge_features if features is None else features
        feats = features.to(level.dtype).unsqueeze(1).expand(e, b, 2)
        inputs = [level.unsqueeze(-1)] + ([source.unsqueeze(-1)] if self.source_level else []) + [feats]
        return self.phi(torch.cat(inputs, dim=-1)).squeeze(-1)

    def flux_per_weight(self, delta: Tensor, source: Tensor, edges: Tensor, edge_weight: Tensor) -> Tensor:
        """``k (Delta + (phi(Delta, [z_j,] ...) - phi(0, [z_j,] ...)) / w)`` (S,) at samples on edges.

        Args:
            delta: (S,) ``z_j - y_i``; source: (S,) ``z_j``; edges: (S,) edge ids (``edge_index`` order);
            edge_weight: (S,) ``w`` of those edges.
        """
        features = self.edge_features[edges]
        d, z = delta.reshape(-1, 1), source.reshape(-1, 1)
        if self.message_form in CONDUCTANCE_FORMS:
            return self.k * delta * self.conductance(d, z, features).reshape(-1)
        correction = (self._phi(d, z, features) - self._phi(torch.zeros_like(d), z, features)).reshape(-1)
        return self.k * (delta + correction / edge_weight)

    @contextmanager
    def simulation(self, dtype: torch.dtype) -> Iterator[None]:
        """``phi(0, u~, l~)`` depends on the weights only: computed once per simulation (in its autograd
        graph) instead of at each of its ``4 x substeps x (T - 1)`` RK4 stages, half the MLP work."""
        if self.source_level or self.message_form in CONDUCTANCE_FORMS:  # nothing to compute ahead
            yield
            return
        zero = self.edge_features.new_zeros(self.edge_features.shape[0], 1, dtype=dtype)
        self.phi_at_zero = self._phi(zero)
        try:
            yield
        finally:
            self.phi_at_zero = None

    def conductance(self, delta: Tensor, source: Tensor | None = None, features: Tensor | None = None
                    ) -> Tensor:
        """``c = softplus(log(e - 1) + G net(Delta / s, [(z_j - c) / s,] u~, l~))`` (E, B) > 0 for (E, B)
        differences (and source levels), on the graph's edges or those whose ``features`` are given; a
        named law's ``c(Delta / s, (z_j - c) / s)`` (:mod:`calcium_gnn.nn.named_laws`)."""
        scale, center = self.level_scale.to(delta.dtype), self.level_center.to(delta.dtype)
        z = None if source is None else (source - center) / scale
        if self.named is not None:
            return self.named(delta / scale, z)
        if self.source_level and z is None:
            raise GraphError("source", "this coupling's message needs the sending cells' levels z_j")
        psi = self.conductance_gain * self._phi(delta / scale, z, features)
        return torch.nn.functional.softplus(CONDUCTANCE_OFFSET + psi)

    def correction(self, delta: Tensor, source: Tensor | None = None) -> Tensor:
        """``phi(Delta, [z_j,] u~, l~) - phi(0, [z_j,] u~, l~)`` for (E, B) differences (and source
        levels ``z_j``, needed with ``source_level``) -> (E, B)."""
        if self.source_level:
            if source is None:
                raise GraphError("source", "this coupling's message needs the sending cells' levels z_j")
            return self._phi(delta, source) - self._phi(torch.zeros_like(delta), source)
        at_zero = self.phi_at_zero
        if at_zero is None or at_zero.dtype != delta.dtype:
            at_zero = self._phi(torch.zeros_like(delta[:, :1]))
        return self._phi(delta) - at_zero

    def message(self, z_i: Tensor, z_j: Tensor, edge_weight: Tensor) -> Tensor:
        """``m_ij = w_ij Delta_ij + phi(Delta_ij, [z_j,] u~, l~) - phi(0, [z_j,] u~, l~)`` for each edge
        j -> i, (E, B)."""
        if z_j.shape[0] != self.edge_features.shape[0]:
            raise GraphError(
                "edge_index",
                f"{z_j.shape[0]} edges, but the layer was built for {self.edge_features.shape[0]}",
            )
        delta = z_j - z_i
        if self.message_form in CONDUCTANCE_FORMS:
            return edge_weight.unsqueeze(-1) * delta * self.conductance(delta, z_j)
        return edge_weight.unsqueeze(-1) * delta + self.correction(delta, z_j)
