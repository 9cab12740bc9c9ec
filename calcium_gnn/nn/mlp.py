"""Multilayer perceptrons over time: the trial solutions ``t -> y_hat(t)`` of a PINN (paper sec. 2.3).

A PINN for the consensus problem (eqs. 21-22) represents the calcium levels of the G modelled cells
by one network ``u_theta: R -> R^G``. Two pieces live here:

* :class:`FourierFeatures`, the embedding
  ``phi(t) = [t, sin(pi f_1 t), cos(pi f_1 t), ..., sin(pi f_F t), cos(pi f_F t)]`` of a normalised
  time ``t`` in ``[-1, 1]``; ``f_m`` is the number of periods of feature ``m`` over the window, so
  features with ``f_m`` up to the number of calcium transients let an MLP represent fast transients
  (a plain tanh MLP of ``t`` is biased towards smooth, low-frequency functions: "spectral bias").
* :class:`MLP`, a fully connected network ``R^{d_in} -> R^{d_out}`` (``num_layers`` hidden layers of
  ``hidden_features`` units), and :class:`TimeMLP`, the two chained: ``t (B,) -> y (B, d_out)``.

Everything is plain torch and works under ``torch.func`` transforms (``jvp`` for ``dy/dt``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from calcium_gnn.errors import ConfigError

FREQUENCY_MODES: tuple[str, ...] = ("geometric", "linear", "random")


class Sine(nn.Module):
    """The activation ``sin(x)`` (smooth, non-saturating)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sin": Sine,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
}


def make_activation(name: str, key: str = "model.net.activation") -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`).

    Raises:
        ConfigError: naming ``key`` when ``name`` is unknown.
    """
    if name not in ACTIVATIONS:
        raise ConfigError(key, f"unknown activation '{name}' (use one of {tuple(ACTIVATIONS)})")
    return ACTIVATIONS[name]()


def fourier_frequencies(
    n_frequencies: int,
    max_frequency: float,
    mode: str = "geometric",
    min_frequency: float = 1.0,
    seed: int = 0,
) -> Tensor:
    """The frequencies ``f_1 < ... < f_F`` (periods per unit of half-window) of :class:`FourierFeatures`.

    * ``"geometric"``: ``f_m = f_min (f_max / f_min)^{(m-1)/(F-1)}``, evenly spaced in log scale;
    * ``"linear"``: ``f_m`` evenly spaced from ``f_min`` to ``f_max`` (with ``f_min = 1`` and
      ``F = f_max`` this is a Fourier basis on ``[-1, 1]``);
    * ``"random"``: ``|f_m| ~ |N(0, (f_max / 2)^2)|`` drawn with ``seed`` (random Fourier features,
      Tancik et al. 2020), sorted.

    Args:
        n_frequencies: F >= 1.
        max_frequency: f_max > 0.
        mode: one of :data:`FREQUENCY_MODES`.
        min_frequency: f_min, 0 < f_min <= f_max (deterministic modes).
        seed: random seed (``"random"`` only).

    Returns:
        (F,) float32 frequencies.

    Raises:
        ConfigError: for an unknown mode or out-of-range numbers.
    """
    if int(n_frequencies) != n_frequencies or n_frequencies < 1:
        raise ConfigError(
            "model.net.fourier.n_frequencies", f"must be an integer >= 1, got {n_frequencies!r}"
        )
    if not (0 < float(min_frequency) <= float(max_frequency) and math.isfinite(float(max_frequency))):
        raise ConfigError(
            "model.net.fourier.max_frequency",
            f"need 0 < min_frequency <= max_frequency < inf, got ({min_frequency}, {max_frequency})",
        )
    n = int(n_frequencies)
    if mode == "geometric":
        if n == 1:
            return torch.tensor([float(max_frequency)])
        exps = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        return (min_frequency * (max_frequency / min_frequency) ** exps).float()
    if mode == "linear":
        return torch.linspace(float(min_frequency), float(max_frequency), n)
    if mode == "random":
        gen = torch.Generator().manual_seed(int(seed))
        draws = torch.randn(n, generator=gen, dtype=torch.float64).abs() * (max_frequency / 2.0)
        return draws.sort().values.float()
    raise ConfigError("model.net.fourier.mode", f"unknown mode '{mode}' (use one of {FREQUENCY_MODES})")


class FourierFeatures(nn.Module):
    r"""Fourier embedding of a normalised time.

    .. math::
        \phi(t) = \big[t,\ \sin(\pi f_1 t),\ \cos(\pi f_1 t),\ \dots,\ \sin(\pi f_F t),\
        \cos(\pi f_F t)\big]

    with fixed (non-trained) frequencies :math:`f_m` from :func:`fourier_frequencies`; on
    :math:`t \in [-1, 1]` the feature :math:`m` makes :math:`f_m` periods.

    Args:
        n_frequencies: F (default 32).
        max_frequency: f_max (default 32.0 periods over the window).
        mode: ``"geometric"`` (default), ``"linear"`` or ``"random"``.
        min_frequency: f_min (default 0.5: half a period over the window).
        seed: seed of the ``"random"`` draw (default 0).
        include_input: prepend ``t`` itself (default True).

    Shapes:
        - **input:** ``t`` (B,).
        - **output:** (B, 2F + 1) (or (B, 2F) without ``include_input``).
    """

    def __init__(
        self,
        n_frequencies: int = 32,
        max_frequency: float = 32.0,
        mode: str = "geometric",
        min_frequency: float = 0.5,
        seed: int = 0,
        include_input: bool = True,
    ) -> None:
        super().__init__()
        freqs = fourier_frequencies(n_frequencies, max_frequency, mode, min_frequency, seed)
        self.register_buffer("angular", math.pi * freqs)
        self.include_input = bool(include_input)

    @property
    def out_features(self) -> int:
        return 2 * self.angular.numel() + int(self.include_input)

    def forward(self, t: Tensor) -> Tensor:
        phase = t.reshape(-1, 1) * self.angular.to(t.dtype)
        parts = [torch.sin(phase), torch.cos(phase)]
        if self.include_input:
            parts.insert(0, t.reshape(-1, 1))
        return torch.cat(parts, dim=-1)


class MLP(nn.Module):
    """A fully connected network ``R^{d_in} -> R^{d_out}``.

    ``h_0 = x``, ``h_l = act(W_l h_{l-1} + b_l)`` for ``l = 1..L`` (``L = num_layers`` hidden layers
    of width ``hidden_features``), output ``W_{L+1} h_L + b_{L+1}`` (no activation). Weights are
    Xavier-normal (suited to tanh), biases zero; the output layer is scaled by ``output_gain``
    (default 1; a small gain starts the network near zero).

    Args:
        in_features: d_in.
        out_features: d_out.
        hidden_features: width of each hidden layer (default 32, the paper's).
        num_layers: number of hidden layers (default 4, the paper's).
        activation: one of :data:`ACTIVATIONS` (default ``"tanh"``, the paper's).
        output_gain: scale of the output layer's initial weights (default 1.0).

    Shapes:
        - **input:** (B, d_in).
        - **output:** (B, d_out).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 32,
        num_layers: int = 4,
        activation: str = "tanh",
        output_gain: float = 1.0,
    ) -> None:
        super().__init__()
        for key, value, low in (
            ("model.net.in_features", in_features, 1),
            ("model.net.out_features", out_features, 1),
            ("model.net.hidden_features", hidden_features, 1),
            ("model.net.num_layers", num_layers, 0),
        ):
            if int(value) != value or value < low:
                raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
        widths = [int(in_features)] + [int(hidden_features)] * int(num_layers)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), make_activation(activation)]
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(widths[-1], int(out_features))
        self.output_gain = float(output_gain)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in [*self.hidden, self.output]:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.output.weight.mul_(self.output_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.hidden(x))


class TimeMLP(nn.Module):
    """A network of time ``t (B,) -> y (B, d_out)``: optional :class:`FourierFeatures`, then :class:`MLP`.

    Without ``fourier`` the input is ``t`` itself (one feature), as in the paper's PINN.

    Args:
        out_features: d_out (the number of modelled cells G).
        hidden_features, num_layers, activation, output_gain: see :class:`MLP`.
        fourier: keyword arguments of :class:`FourierFeatures`, or None (no embedding).

    Shapes:
        - **input:** ``t`` (B,).
        - **output:** (B, d_out).
    """

    def __init__(
        self,
        out_features: int,
        hidden_features: int = 32,
        num_layers: int = 4,
        activation: str = "tanh",
        output_gain: float = 1.0,
        fourier: dict | None = None,
    ) -> None:
        super().__init__()
        self.embed = FourierFeatures(**dict(fourier)) if fourier else None
        in_features = self.embed.out_features if self.embed is not None else 1
        self.mlp = MLP(in_features, out_features, hidden_features, num_layers, activation, output_gain)

    def forward(self, t: Tensor) -> Tensor:
        features = self.embed(t) if self.embed is not None else t.reshape(-1, 1)
        return self.mlp(features)


class TraceNet(nn.Module):
    r"""Trial solution of a PINN: the traces of G cells as one network of time, with optional scaling.

    .. math::
        \hat y_i(t) = \mu_i + \sigma_i\, u_\theta(\tau(t))_i, \qquad
        \tau(t) = \frac{t - c}{h}, \quad c = \tfrac{t_0 + t_1}{2}, \ h = \tfrac{t_1 - t_0}{2},

    so that the window ``[t_0, t_1]`` maps to ``tau in [-1, 1]`` and each cell's output is its mean
    ``mu_i`` plus ``sigma_i`` times an O(1) network output (:class:`TimeMLP` ``u_theta``). With
    ``scale_time=False`` the network sees the raw time ``t`` (``c = 0, h = 1``); with
    ``scale_output=False`` it returns ``u_theta`` itself (``mu = 0, sigma = 1``): the paper's raw setting.

    The time derivative follows from the chain rule,
    :math:`\dot{\hat y}_i = \sigma_i \, \partial_\tau u_\theta{}_i / h`, and :meth:`value_and_rate`
    computes all G derivatives in one forward-mode pass (``torch.func.jvp`` with tangent 1).

    Args:
        n_cells: G, the number of outputs.
        t_window: ``(t_0, t_1)`` in s (``t_1 > t_0``), the training window.
        mean: (G,) ``mu`` (default zeros); std: (G,) ``sigma`` > 0 (default ones).
        scale_time: map the window to ``[-1, 1]`` (default True).
        scale_output: use ``mu`` and ``sigma`` (default True).
        **net: keyword arguments of :class:`TimeMLP` (``hidden_features``, ``num_layers``,
            ``activation``, ``output_gain``, ``fourier``).

    Shapes:
        - **input:** ``t`` (B,) in s.
        - **output:** (G, B) (cells first, time last, like the graph's ``x``).
    """

    def __init__(
        self,
        n_cells: int,
        t_window: tuple[float, float],
        mean: Tensor | None = None,
        std: Tensor | None = None,
        scale_time: bool = True,
        scale_output: bool = True,
        **net: object,
    ) -> None:
        super().__init__()
        t0, t1 = (float(v) for v in t_window)
        if not t1 > t0:
            raise ConfigError("model.train_fraction", f"the time window must have t1 > t0, got ({t0}, {t1})")
        self.net = TimeMLP(int(n_cells), **net)  # type: ignore[arg-type]
        # new tensors on the device of the given statistics (the host when there are none)
        given = next((torch.as_tensor(v) for v in (mean, std) if v is not None), None)
        device = given.device if given is not None else None
        centre, half = ((t0 + t1) / 2.0, (t1 - t0) / 2.0) if scale_time else (0.0, 1.0)
        self.register_buffer("centre", torch.tensor(centre, dtype=torch.float64, device=device))
        self.register_buffer("half_width", torch.tensor(half, dtype=torch.float64, device=device))
        if mean is None or not scale_output:
            mu = torch.zeros(n_cells, device=device)
        else:
            mu = torch.as_tensor(mean, device=device).float()
        if std is None or not scale_output:
            sigma = torch.ones(n_cells, device=device)
        else:
            sigma = torch.as_tensor(std, device=device).float()
        if mu.shape != (n_cells,) or sigma.shape != (n_cells,) or not bool((sigma > 0).all()):
            raise ConfigError("model.scale_output", f"mean and std must be ({n_cells},) with std > 0")
        self.register_buffer("mean", mu.reshape(-1, 1))
        self.register_buffer("std", sigma.reshape(-1, 1))

    def _normalised(self, tau: Tensor) -> Tensor:
        return self.mean + self.std * self.net(tau).transpose(0, 1)

    def to_tau(self, t: Tensor) -> Tensor:
        """``tau = (t - c) / h`` in the network's dtype, shape of ``t``."""
        dtype = self.mean.dtype
        return ((t.double() - self.centre) / self.half_width).to(dtype)

    def forward(self, t: Tensor) -> Tensor:
        return self._normalised(self.to_tau(t))

    def value_and_rate(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(y_hat, dy_hat/dt)``, each (G, B), from one ``torch.func.jvp`` pass (tangent 1 on tau)."""
        tau = self.to_tau(t)
        y, dy_dtau = torch.func.jvp(self._normalised, (tau,), (torch.ones_like(tau),))
        return y, dy_dtau / self.half_width.to(y.dtype)
