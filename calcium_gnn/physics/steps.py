"""One step of an explicit scheme for ``dy/dt = f(y, tau)``: classical RK4 and forward Euler.

The simulator (:mod:`calcium_gnn.physics.simulate`) and the modal propagators
(:mod:`calcium_gnn.physics.modal`) both build their interval maps from these functions, so every path
integrates exactly the same scheme.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

METHODS: tuple[str, ...] = ("rk4", "euler")

#: ``f(y, tau)``: right-hand side at state ``y`` and time ``tau`` (seconds from the interval start).
VectorField = Callable[[Tensor, Tensor], Tensor]


def rk4_step(f: VectorField, y: Tensor, tau: Tensor, h: Tensor) -> Tensor:
    """One classical Runge-Kutta step of size ``h`` for ``dy/dt = f(y, tau)`` from time ``tau``.

    .. math::
        k_1 = f(y, \\tau),\\ k_2 = f(y + \\tfrac{h}{2} k_1, \\tau + \\tfrac{h}{2}),\\
        k_3 = f(y + \\tfrac{h}{2} k_2, \\tau + \\tfrac{h}{2}),\\ k_4 = f(y + h k_3, \\tau + h),\\
        y^+ = y + \\tfrac{h}{6}(k_1 + 2 k_2 + 2 k_3 + k_4)
    """
    k1 = f(y, tau)
    k2 = f(y + 0.5 * h * k1, tau + 0.5 * h)
    k3 = f(y + 0.5 * h * k2, tau + 0.5 * h)
    k4 = f(y + h * k3, tau + h)
    return y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def euler_step(f: VectorField, y: Tensor, tau: Tensor, h: Tensor) -> Tensor:
    """One forward Euler step of size ``h``: ``y^+ = y + h f(y, tau)`` (paper eq. 5)."""
    return y + h * f(y, tau)


STEPS: dict[str, Callable[[VectorField, Tensor, Tensor, Tensor], Tensor]] = {
    "rk4": rk4_step,
    "euler": euler_step,
}


def stiffness_substeps(
    k: float, edge_index: Tensor, edge_weight: Tensor, modelled: Tensor, t: Tensor, step_rate: float,
    slope: float = 1.0,
) -> int:
    """Steps per frame interval so that ``h rho <= step_rate`` on the longest interval.

    ``rho = 2 slope max_i c_i`` bounds the spectral radius of the consensus Jacobian (Gershgorin: the
    diagonal ``-c_i`` and off-diagonals summing to at most ``c_i``), with ``c_i = k / |N_i| sum_j w_ij``
    the coupling rate of modelled cell ``i`` and ``slope`` the largest conductance of the message
    relative to the linear law's (1 for eq. 3). RK4 is stable up to ``h rho = 2.78`` on the real axis;
    its error per step in a mode decaying at rate ``rho`` is about ``(h rho)^5 / 120``.

    Args:
        k: coupling constant. edge_index: (2, E). edge_weight: (E,) ``w_ij``. modelled: (N,) bool.
        t: (T,) frame times. step_rate: the bound on ``h rho``. slope: see above.
    """
    n = modelled.shape[0]
    dst = edge_index[1]
    w = edge_weight.reshape(-1).double()
    total = w.new_zeros(n).index_add_(0, dst, w)
    degree = w.new_zeros(n).index_add_(0, dst, w.new_ones(w.shape)).clamp_min(1.0)
    rates = (float(k) * total / degree)[modelled.to(dst.device)]
    if rates.numel() == 0 or t.numel() < 2:
        return 1
    rho = 2.0 * float(slope) * float(rates.max())
    longest = float((t[1:] - t[:-1]).max())
    return max(1, math.ceil(longest * rho / float(step_rate) - 1e-9))
