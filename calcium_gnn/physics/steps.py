"""One step of an explicit scheme for ``dy/dt = f(y, tau)``: classical RK4 and forward Euler.

The simulator (:mod:`calcium_gnn.physics.simulate`) and the modal propagators
(:mod:`calcium_gnn.physics.modal`) both build their interval maps from these functions, so every path
integrates exactly the same scheme.
"""

from __future__ import annotations

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
