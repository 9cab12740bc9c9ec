"""The model family around the paper's consensus law: each member a configuration of one layer.

Every law is :class:`~calcium_gnn.nn.consensus.ConsensusConv` with some of its terms switched on, fitted
by the same output-error problem (:mod:`calcium_gnn.physics.output_error`) and simulated by the same
integrator (:func:`calcium_gnn.physics.simulate.integrate`). For a modelled cell ``i``

.. math::
    \\frac{dy_i}{dt} = \\frac{k}{|N_i|} \\sum_{j \\in N_i} w_{ij} (z_j - y_i) + \\gamma_i
        - \\delta \\, (y_i - b_i) + s_i \\, H(t - t_s),

=====================  ===========================================================================
law                    terms
=====================  ===========================================================================
``linear``             the paper's eq. (3): coupling and a constant feed ``gamma_i``
``leak``               plus a leak back to a baseline, ``- delta (y_i - b_i)`` (one ``delta`` for
                       the culture; only ``gamma_i + delta b_i`` is identifiable, so the feed absorbs
                       ``delta b_i``): a transient returns to baseline without a neighbour pulling it
``stimulus``           the linear law plus a feed ``s_i`` switched on at the stimulus time ``t_s``
``leak_stimulus``      both
=====================  ===========================================================================

``H`` is the unit step, sampled at the frame times and linear between frames like every input (the
switch ramps over the frame interval that holds ``t_s``). Each extra term adds parameters: the leak
one (``delta``), the switched feed one per modelled cell (or one shared, ``stimulus_feed="shared"``).
All laws stay affine in the states, so the exact modal simulation and normal equations apply: the leak
shifts every mode's rate by ``-delta``.
"""

from __future__ import annotations

import math

from torch import Tensor

from calcium_gnn.errors import ConfigError

#: law name -> (leak_mode, has a switched feed)
LAWS: dict[str, tuple[str, bool]] = {
    "linear": ("none", False),
    "leak": ("shared", False),
    "stimulus": ("none", True),
    "leak_stimulus": ("shared", True),
}
#: how the feed switched on at the stimulus is shared: one per modelled cell, or one for the culture
STIMULUS_FEED_MODES: tuple[str, ...] = ("none", "shared", "per_cell")


#: one line per law for results.json
DESCRIPTIONS: dict[str, str] = {
    "linear": "dy_i/dt = k/|N_i| sum_j w_ij (z_j - y_i) + gamma_i (the paper's eq. 3)",
    "leak": "eq. 3 - delta (y_i - b_i): a leak back to baseline (gamma_i absorbs delta b_i)",
    "stimulus": "eq. 3 + s_i H(t - t_s): a feed switched on at the stimulus",
    "leak_stimulus": "eq. 3 - delta (y_i - b_i) + s_i H(t - t_s)",
}


def law_description(law: str) -> str:
    """The law's equation in one line (module table)."""
    return DESCRIPTIONS[law]


def law_terms(law: str, stimulus_time: float | None, stimulus_feed: str = "per_cell") -> tuple[str, str]:
    """``(leak_mode, stimulus_feed_mode)`` of a law (module table), checked.

    Raises:
        ConfigError: an unknown law (``model.law``), an unknown ``stimulus_feed`` mode, or a law with a
            switched feed and no ``stimulus_time``.
    """
    if law not in LAWS:
        raise ConfigError("model.law", f"unknown law '{law}' (use one of {tuple(LAWS)})")
    if stimulus_feed not in STIMULUS_FEED_MODES[1:]:
        raise ConfigError("model.stimulus_feed",
                          f"unknown mode '{stimulus_feed}' (use 'shared' or 'per_cell')")
    leak_mode, switched = LAWS[law]
    if switched:
        if stimulus_time is None or not math.isfinite(float(stimulus_time)):
            raise ConfigError("model.stimulus_time", f"law '{law}' needs the stimulus time in seconds "
                              "(model.stimulus_time=..., the time axis of the graph's t)")
        return leak_mode, stimulus_feed
    return leak_mode, "none"


def stimulus_switch(t: Tensor, stimulus_time: float | None) -> Tensor | None:
    """``H(t_n - t_s)`` (T,) float64 at the frame times (1 from the first frame at or after ``t_s``);
    None without a stimulus time."""
    if stimulus_time is None:
        return None
    return (t.double() >= float(stimulus_time)).double()


def feed_series(gamma: Tensor, stimulus_feed: Tensor | None, switch: Tensor | None) -> Tensor:
    """The feeds of the law: ``gamma`` (N,) alone, or ``gamma_i + s_i H(t_n - t_s)`` (N, T).

    Args:
        gamma: (N,) constant feeds. stimulus_feed: (N,) switched feeds ``s_i`` or None.
        switch: (T,) ``H(t_n - t_s)`` (:func:`stimulus_switch`) or None.
    """
    if stimulus_feed is None or switch is None:
        return gamma
    return gamma.reshape(-1, 1) + stimulus_feed.reshape(-1, 1) * switch.to(gamma).reshape(1, -1)
