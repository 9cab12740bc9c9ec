"""Exact integration of a zoo member's law for drivers that are linear between frames.

The modelled cells ``o`` (every cell that is not a driver) follow

.. math::
    \\dot y_i = \\frac{k}{|N_i|} \\sum_{j \\in N_i} w_{ij} (z_j - y_i) + \\gamma_i - \\lambda (y_i - b),
    \\qquad w_{ij} = u_{ij} l_{ij} / s,

the paper's eq. (3) (``law = "linear"``: ``lambda = 0``) or eq. (3) with a leak back to the baseline
``b`` (``law = "leak"``), with ``z_j = y_j`` for modelled cells and ``z_j = d_j(t)`` for drivers. In
matrix form ``dy/dt = A y + B d(t) + g`` with ``A = A_3 - lambda I`` and ``B`` those of eq. (3)
(:func:`calcium_gnn.data.synthetic_dynamics.consensus_system`) and ``g = gamma + lambda b``.
(With a leak only ``gamma_i + lambda b`` can be identified from data.)

``A`` is similar to a symmetric matrix: with ``D = diag(|N_i|)``, ``S = D^{1/2} A D^{-1/2}`` has
entries ``k w_ij / sqrt(|N_i| |N_j|)``, so ``S = V diag(-r) V^T`` (``r > 0`` the decay rates: every
group of modelled cells touches a driver) and the modes ``z = V^T D^{1/2} y`` decouple,
``dz_m/dt = -r_m z_m + phi_m(t)``. Between frames ``t_n`` and ``t_{n+1} = t_n + Delta`` the drivers,
hence the modal forcing ``phi``, are linear in time, and each mode is solved exactly:

.. math::
    z(t_{n+1}) = e^{x} z(t_n) + \\Delta\\, \\varphi_1(x)\\, \\phi_n
                 + \\Delta\\, \\varphi_2(x)\\, (\\phi_{n+1} - \\phi_n), \\qquad x = -r \\Delta,
    \\quad \\varphi_1(x) = \\frac{e^x - 1}{x}, \\quad \\varphi_2(x) = \\frac{e^x - 1 - x}{x^2}.

The start is the steady state for the drivers frozen at ``t_0``: ``z(t_0) = phi_0 / r``. Cost: one
symmetric eigendecomposition of (M, M) (2 s at M = 2,000 on 2 cores) plus two (M, M) x (M, T) products;
accurate to rounding (about 1e-12 relative), which is what lets a right estimator get the truth back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from calcium_gnn.data.synthetic_dynamics import consensus_system

#: below this ``|x|`` the phi functions use their Taylor series to ``x**4`` (error < 2e-13; the closed
#: forms lose about 2e-16 / x**2 to cancellation above)
SERIES_BELOW: float = 1e-2


def phi1(x: np.ndarray) -> np.ndarray:
    """``(e^x - 1) / x`` (1 at ``x = 0``), elementwise."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < SERIES_BELOW
    safe = np.where(small, 1.0, x)
    series = 1.0 + x / 2.0 + x**2 / 6.0 + x**3 / 24.0 + x**4 / 120.0
    return np.where(small, series, np.expm1(safe) / safe)


def phi2(x: np.ndarray) -> np.ndarray:
    """``(e^x - 1 - x) / x^2`` (1/2 at ``x = 0``), elementwise."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < SERIES_BELOW
    safe = np.where(small, 1.0, x)
    series = 0.5 + x / 6.0 + x**2 / 24.0 + x**3 / 120.0 + x**4 / 720.0
    return np.where(small, series, (np.expm1(safe) - safe) / safe**2)


@dataclass
class LawSystem:
    """``dy_o/dt = A y_o + B d(t) + g`` in its eigenbasis (module docstring). ``M`` modelled, ``D`` drivers.

    Attributes:
        rates: (M,) decay rates ``r > 0`` (1/s); ``A = D^{-1/2} V diag(-r) V^T D^{1/2}``.
        basis: (M, M) orthonormal ``V``.
        sqrt_degree: (M,) ``sqrt(|N_i|)`` of the modelled cells.
        B: (M, D) sparse driver coupling of eq. (3).
        ode_nodes: (M,) node indices of the modelled cells; driver_nodes: (D,) of the drivers.
    """

    rates: np.ndarray
    basis: np.ndarray
    sqrt_degree: np.ndarray
    B: sp.csr_matrix
    ode_nodes: np.ndarray
    driver_nodes: np.ndarray

    @property
    def slowest_rate(self) -> float:
        """The smallest decay rate (1/s): a constant feed ``c`` moves the steady state by up to ``c / r``."""
        return float(self.rates.min())

    def to_modes(self, y: np.ndarray) -> np.ndarray:
        """``V^T D^{1/2} y`` for (M,) or (M, K) ``y``."""
        return self.basis.T @ (self.sqrt_degree.reshape((-1,) + (1,) * (y.ndim - 1)) * y)

    def from_modes(self, z: np.ndarray) -> np.ndarray:
        """``D^{-1/2} V z`` for (M,) or (M, K) ``z``."""
        return (self.basis @ z) / self.sqrt_degree.reshape((-1,) + (1,) * (z.ndim - 1))

    def matrix(self) -> np.ndarray:
        """The dense (M, M) ``A`` (for tests and references)."""
        return self.from_modes(-self.rates[:, None] * self.to_modes(np.eye(len(self.rates))))


def law_system(
    n_nodes: int,
    edge_index: np.ndarray,
    weight: np.ndarray,
    k: float,
    is_driver: np.ndarray,
    leak: float = 0.0,
) -> LawSystem:
    """Assemble and diagonalise the law of the modelled cells ``~is_driver``.

    Args:
        n_nodes: N. edge_index: (2, E) undirected pairs (each once). weight: (E,) ``w_ij``.
        k: coupling constant (1/s). is_driver: (N,) bool. leak: ``lambda`` (1/s, 0 = the linear law).

    Raises:
        ConfigError: a modelled cell without neighbours, or a group of modelled cells touching no
            driver (from :func:`~calcium_gnn.data.synthetic_dynamics.consensus_system`).
    """
    system = consensus_system(n_nodes, edge_index, weight, k, np.zeros(n_nodes), is_driver)
    degree = np.bincount(edge_index.ravel(), minlength=n_nodes).astype(float)[system.ode_nodes]
    root = np.sqrt(degree)
    symmetric = system.A.toarray() * root[:, None] / root[None, :]
    symmetric = 0.5 * (symmetric + symmetric.T) - leak * np.eye(len(root))
    eigenvalues, basis = sla.eigh(symmetric, driver="evr")
    return LawSystem(-eigenvalues, basis, root, system.B, system.ode_nodes, system.driver_nodes)


def integrate_exact(system: LawSystem, drivers: np.ndarray, t: np.ndarray, feed: np.ndarray) -> np.ndarray:
    """The modelled cells' levels (M, T) at the frame times ``t`` (T,), from the steady state at ``t_0``.

    Args:
        system: the diagonalised law.
        drivers: (D, T) driver levels at the frame times (linear in between).
        t: (T,) frame times, strictly increasing.
        feed: (M,) the constant forcing ``g = gamma + lambda b`` of the modelled cells.
    """
    t = np.asarray(t, dtype=float)
    forcing = system.to_modes(system.B @ drivers + feed[:, None])  # (M, T)
    delta = np.diff(t)
    x = -system.rates[:, None] * delta[None, :]
    decay, p1, p2 = np.exp(x), phi1(x) * delta, phi2(x) * delta
    modes = np.empty_like(forcing)
    z = forcing[:, 0] / system.rates
    modes[:, 0] = z
    for n in range(len(t) - 1):
        z = decay[:, n] * z + p1[:, n] * forcing[:, n] + p2[:, n] * (forcing[:, n + 1] - forcing[:, n])
        modes[:, n + 1] = z
    return system.from_modes(modes)
