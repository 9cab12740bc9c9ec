"""Checks of model options: a bad value is a ConfigError naming ``model.<key>``, never a deep traceback."""

from __future__ import annotations

import math
from typing import Any

from calcium_gnn.errors import ConfigError


def check_int(key: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low`` (bools refused)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or int(value) != value or int(value) < low:
        raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
    return int(value)


def check_positive(key: str, value: Any) -> float:
    """``value`` as a finite float > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a positive number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ConfigError(key, f"must be a positive number, got {value!r}")
    return v


def check_choice(key: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(key, f"unknown value {value!r} (use one of {allowed})")
    return value


def check_odd_window(key: str, value: Any) -> int:
    """An odd number of frames >= 1 (a centred window)."""
    window = check_int(key, value, 1)
    if window % 2 == 0:
        raise ConfigError(key, f"must be odd (a centred window), got {value}")
    return window
