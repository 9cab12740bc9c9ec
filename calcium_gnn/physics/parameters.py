"""The fitted parameters of the consensus problem, shared by every model (CRLSM, PINN, neural ODE)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class FittedParameters:
    """Parameters of eqs. (1)-(3) identified by a model.

    Attributes:
        k: coupling constant (1/s), for the weights ``w = u*l / edge_weight_scale``.
        gamma: (N,) feed term per cell (1/s in intensity units); 0 for cells that are not modelled
            (border and other cells follow the data), the same value on every modelled cell when
            ``gamma_mode`` is ``"shared"``, all 0 for ``"none"``.
        edge_weight_scale: the scale ``s`` the fit used (``K_ij = k u_ij l_ij / s`` in eq. 4).
        gamma_mode: ``"none"`` (eq. 1 without feed), ``"shared"`` (eq. 2) or ``"per_cell"`` (eq. 3).
    """

    k: float
    gamma: Tensor
    edge_weight_scale: float
    gamma_mode: str

    def k_at_scale(self, scale: float) -> float:
        """``k`` expressed for another edge-weight scale (``k / s`` is invariant)."""
        return self.k * float(scale) / self.edge_weight_scale
