"""The degree-weighted profile loss of the output-error fit, mode by mode, in O(G T) per ``k``.

What it is for: the border-noise correction of ``k`` (:mod:`calcium_gnn.physics.border_noise`) scans
the profile loss over ``k``. At 10,000 cells one unweighted profile fit costs tens of conjugate-gradient
iterations of O(T G^2) each; in the degree-weighted metric the same scan costs O(G T) per ``k``.

Why it separates. In the eigenbasis of the consensus operator (:mod:`calcium_gnn.physics.modal`,
``A_1 = V Lambda V^{-1}``, ``V^T D V = I`` with ``D = diag(|N_i|)``) the simulated traces of G are
``y = V xi`` with, per mode ``m``,

.. math::
    \\xi_m(t_n) = E_{nm}\\, a_m + F_{nm}\\, c_m + [S_{nm}\\, s_m] + k\\, R_m(t_n),

``a = V^{-1} y_0``, ``c = V^{-1} \\gamma`` (``s`` the same for a per-cell switched feed), ``E, F, S``
the modal responses to a unit initial state, feed and switched feed, and ``R_m`` the response of mode
``m`` to the border drive at unit ``k``, ``beta = V^{-1} (D^{-1} S_{GB} x_B)``. Since ``V^T D V = I``
the weighted residual is ``||y - x_G||_D^2 = ||xi - V^{-1} x_G||^2``: one least-squares problem with
``n_b`` (2 or 3) unknowns per mode. The profile over the linear parameters (without their box) is then

.. math::
    \\mathrm{RSS}_w(k) = \\sum_m \\min_{a_m, c_m} \\|E_m a_m + F_m c_m - (V^{-1} x_G - k R)_m\\|^2.

The same split gives the expected residual energy of unit white noise on every cell after profiling
(the denominator of the correction): the observed traces of G contribute ``tr(D) (T - n_b)`` exactly
(mode ``m`` of ``V^{-1} z_G`` is white in time with variance ``(V^{-1} V^{-T})_{mm}``, and these sum
to ``tr D``), the border inputs ``sum_m s_m k^2 E||(I - P_m) L_m w||^2``, ``L_m`` the mode's response
filter, ``P_m`` the projection on its ``n_b`` columns, ``s_m = ||(V^{-1} D^{-1} S_{GB})_{m,:}||^2`` the
variance of the mode's border drive per unit noise and ``w`` unit white noise in time. Only each mode's
own variance enters (the sum runs over modes), so the Hutchinson probes are drawn independently per
mode: the estimate averages ``G n_p`` independent terms.

Cost: ``V^{-1} x_G`` and ``V^{-1}`` of the border drive once, O(T G^2); then O(G T (1 + n_p)) per
``k``. Applies with a modal basis, ``y0`` fitted and only per-cell linear parameters
(:func:`weighted_profile_unavailable`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from calcium_gnn.physics.modal import frame_major, modal_input_response
from calcium_gnn.physics.output_error import OutputErrorProblem

RIDGE: float = 1e-12
"""Ridge on each mode's ``n_b x n_b`` normal matrix of unit-norm columns (a finite solve for a mode
whose columns are nearly collinear)."""


def weighted_profile_unavailable(problem: OutputErrorProblem) -> str | None:
    """Why the weighted profile does not separate by mode (``None`` when it does), in one line."""
    unavailable = problem.modal_unavailable()
    if unavailable is not None:
        return unavailable
    if not problem.fit_initial_state:
        return "y0 is not fitted (fit_initial_state=false)"
    shared = [name for name, mode in (("gamma", problem.gamma_mode), ("stimulus", problem.stimulus_mode))
              if mode == "shared"]
    if shared:
        return f"a shared {shared[0]} couples the modes"
    return None


class ModalWeightedProfile:
    """``RSS_w(k)`` and the noise energy of the weighted profile (module docstring), evaluated per ``k``.

    Args:
        problem: the output-error problem (its current leak rate is held fixed).
        n_probes: Hutchinson probes per mode for the border-noise energy.
        seed: seed of the probes (fixed: the energy is smooth in ``k``).
    """

    def __init__(self, problem: OutputErrorProblem, n_probes: int = 8, seed: int = 0) -> None:
        reason = weighted_profile_unavailable(problem)
        if reason is not None:
            raise ValueError(f"the weighted profile does not separate by mode: {reason}")
        basis = problem.modal_basis()
        assert basis is not None  # weighted_profile_unavailable checked it
        self.problem = problem
        self.basis = basis
        theta = problem.theta()
        self.theta = theta
        self.leak = float(problem.unpack(theta).leak)
        index, dtype = problem.index, torch.float64
        n_frames = int(problem.x_train.shape[1])
        #: (G, B) border inputs -> modal drive at unit k; (G, T) the observed border drive and x_G, modal
        self.border_map, self.drive, self.target = modal_data(problem)
        #: (G,) variance of each mode's border drive per unit white noise on the border inputs
        self.border_variance = self.border_map.pow(2).sum(dim=1)
        gen = torch.Generator().manual_seed(seed)
        white = torch.randn(index.numel(), n_frames, n_probes, generator=gen, dtype=dtype)
        self.probes = frame_major(white.to(theta.device) * self.border_variance.sqrt().reshape(-1, 1, 1))
        #: border-noise energy per ``k`` evaluated (it depends on ``k`` only, not on the data: the
        #: bootstrap's replicates reuse it)
        self._border_energy: dict[float, float] = {}
        self.n_blocks = len(problem._modal_design(theta, basis, with_k=False)[1])
        #: the observed traces' share of the noise energy, tr(D) (T - n_b), exact
        self.interior_energy = float(problem.degrees().sum()) * (n_frames - self.n_blocks)

    def _columns(self, k: float) -> Tensor:
        """(G, T, n_b) the modal responses of the linear parameters at ``k`` (``F``, ``S``, ``E``)."""
        theta = self.theta.clone()
        theta[0] = k
        blocks = self.problem._modal_design(theta, self.basis, with_k=False)[1]  # (T, G) each
        return torch.stack([b.T for b in blocks], dim=2)

    def _response(self, k: float, forcing: Tensor) -> Tensor:
        """(G, T, K) modal responses at ``k`` to K modal border drives given at unit ``k``."""
        problem = self.problem
        rate = k * self.basis.lam - self.leak
        return k * modal_input_response(
            rate, problem.interval_lengths, problem.interval_group, problem.substeps, forcing,
            problem.ode_method,
        )

    @staticmethod
    def _projector(columns: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Per mode, the least-squares projector on ``columns`` (G, T, n_b): its unit columns (G, T, n_b)
        and the LU factors of their Gram matrix (G, n_b, n_b), ridged by :data:`RIDGE`."""
        norms = columns.norm(dim=1, keepdim=True).clamp(min=1e-300)
        unit = columns / norms  # unit columns per mode (conditioning)
        gram = torch.einsum("gtb,gtc->gbc", unit, unit)
        gram = gram + RIDGE * torch.eye(unit.shape[2], dtype=gram.dtype, device=gram.device)
        return unit, torch.linalg.lu_factor(gram)

    @staticmethod
    def _project(projector: tuple[Tensor, tuple[Tensor, Tensor]], stacked: Tensor) -> tuple[Tensor, Tensor]:
        """Per mode, least squares of ``stacked`` (G, T, K) on the projector's columns
        (:meth:`_projector`): the residual norms (G, K) and the fitted part (G, T, K)."""
        unit, factor = projector
        rhs = torch.einsum("gtb,gtp->gbp", unit, stacked)
        coefficients = torch.linalg.lu_solve(*factor, rhs)
        explained = (rhs * coefficients).sum(dim=1)
        return stacked.pow(2).sum(dim=1) - explained, torch.einsum("gtb,gbp->gtp", unit, coefficients)

    def border_energy(self, k: float, projector: tuple[Tensor, tuple[Tensor, Tensor]] | None = None) -> float:
        """``sum_m s_m k^2 E||(I - P_m) L_m w||^2``: the border inputs' share of the noise energy at ``k``
        (module docstring), by the Hutchinson probes; cached per ``k`` (it does not depend on the data)."""
        if not self.probes.shape[2]:
            return 0.0
        if k not in self._border_energy:
            projector = self._projector(self._columns(k)) if projector is None else projector
            left, _ = self._project(projector, self._response(k, self.probes))
            self._border_energy[k] = float(left.sum(dim=0).mean())
        return self._border_energy[k]

    def evaluate(
        self, k: float, target: Tensor | None = None, drive: Tensor | None = None
    ) -> tuple[float, float]:
        """``(RSS_w(k), noise energy(k))``: the weighted profile's residual sum of squares and the
        expected weighted residual energy of unit white noise on every cell (module docstring).
        ``target``, ``drive`` (G, T): modal data in place of the problem's (a bootstrap replicate)."""
        target = self.target if target is None else target
        drive = self.drive if drive is None else drive
        projector = self._projector(self._columns(k))
        response = self._response(k, drive.unsqueeze(-1))[:, :, 0]
        left, _ = self._project(projector, (target - response).unsqueeze(-1))
        return float(left.sum()), self.interior_energy + self.border_energy(k, projector)

    def fitted(self, k: float) -> Tensor:
        """(G, T) the modal trajectory ``xi`` of the weighted profile fit at ``k`` (observed border drive)."""
        response = self._response(k, self.drive.unsqueeze(-1))[:, :, 0]
        _, part = self._project(self._projector(self._columns(k)), (self.target - response).unsqueeze(-1))
        return part[:, :, 0] + response

    def replicate(self, fitted: Tensor, sigma: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A parametric-bootstrap replicate of the modal data: the fit ``fitted`` (G, T) (:meth:`fitted`)
        observed with white noise ``sigma`` on every cell (``V^{-1}`` of the noise on G, the border map of
        the noise on the border inputs, added to the observed drive). Returns ``(target, drive)``."""
        n_g, n_frames = self.target.shape
        device = self.target.device
        interior = torch.randn(n_g, n_frames, generator=generator, dtype=torch.float64).to(device)
        border = torch.randn(self.border_map.shape[1], n_frames, generator=generator, dtype=torch.float64)
        target = fitted + sigma * (self.basis.v_inv @ interior)
        drive = self.drive + sigma * (self.border_map @ border.to(device))
        return target, drive


def modal_data(problem: OutputErrorProblem) -> tuple[Tensor, Tensor, Tensor]:
    """The data of the weighted profile in the eigenbasis, computed once per problem (cached with its
    other derived values): ``V^{-1} D^{-1} S_GB`` (G, B), the map from border inputs to the modal drive
    at unit ``k``; ``V^{-1}`` of the observed border drive (G, T); and ``V^{-1} x_G`` (G, T).

    O(T G^2) for ``V^{-1} x_G``; the border terms use only the cells of G that touch the border."""
    cached = problem._derived.get("weighted_profile_data")
    if cached is not None:
        return cached
    basis = problem.modal_basis()
    if basis is None:
        raise ValueError("the weighted profile needs the eigenbasis of the consensus operator")
    index, dtype, device = problem.index, torch.float64, problem.x_train.device
    unit_k = torch.ones((), dtype=dtype, device=device)

    def coupling(inputs: Tensor) -> Tensor:
        """``D^{-1} S_GB inputs`` at unit ``k``: the border drive of G (G, F) for inputs (N, F)."""
        zero = torch.zeros(inputs.shape[0], dtype=dtype, device=inputs.device)
        out = problem.conv(torch.zeros_like(inputs), inputs, problem.edge_index, problem.edge_weight,
                           problem.modelled, k=unit_k, gamma=zero, leak=torch.zeros_like(unit_k))
        return out[index].double()

    border = (~problem.modelled).nonzero().reshape(-1)
    identity = torch.zeros(problem.modelled.shape[0], border.numel(), dtype=dtype, device=device)
    identity[border, torch.arange(border.numel(), device=device)] = 1.0
    per_border = coupling(identity)  # (G, B)
    reached = per_border.abs().sum(dim=1).nonzero().reshape(-1)  # cells of G touching the border
    v_inv = basis.v_inv[:, reached]
    drive = problem.drive_train.double().clone()
    drive[problem.modelled] = 0.0
    out = (v_inv @ per_border[reached], v_inv @ coupling(drive)[reached],
           basis.v_inv @ problem.x_train[index].double())
    problem._derived["weighted_profile_data"] = out
    return out
