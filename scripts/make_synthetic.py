"""Write a synthetic calcium culture with ground truth to a directory.

Usage::

    python scripts/make_synthetic.py out=DIR [seed=0] [n_cells=108] [noise=1.0] [overwrite=false] [KEY=VALUE]

Writes ``movie.tif``, ``labels.tif``, ``truth.json`` and ``truth.npz`` (format:
``calcium_gnn.io.culture_files``). Every keyword of ``calcium_gnn.data.synthetic.make_culture``
is accepted as ``KEY=VALUE`` (pairs such as ``gamma_range=0.0002,0.001`` are comma-separated).
``noise`` is the imaging-noise multiplier of the movie (``make_culture(imaging_noise=...)``):
1 = Poisson shot noise plus camera read noise, 0 = noiseless rendering except the rounding to
integers (hot pixels are set by ``hot_frames``, 0 for none).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from calcium_gnn.data.synthetic import make_culture
from calcium_gnn.data.synthetic_files import save_culture
from calcium_gnn.errors import CalciumGNNError, ConfigError

ALIASES = {"noise": "imaging_noise"}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_args(argv: list[str]) -> tuple[Path, bool, dict[str, Any]]:
    """``KEY=VALUE`` arguments -> (output directory, overwrite, make_culture keyword arguments).

    Values take the type of the keyword's default in :func:`make_culture`.

    Raises:
        ConfigError: naming the key that is unknown, repeated, missing or has a bad value.
    """
    defaults = {
        name: p.default for name, p in inspect.signature(make_culture).parameters.items() if name != "render"
    }
    out, overwrite, params = None, False, {}
    for arg in argv:
        key, sep, text = arg.partition("=")
        if not sep or not key:
            raise ConfigError(arg, "arguments must be KEY=VALUE")
        name = ALIASES.get(key, key)
        if name in params or (key == "out" and out is not None):
            raise ConfigError(key, "given twice")
        if key == "out":
            out = Path(text)
        elif key == "overwrite":
            overwrite = _convert(key, text, False)
        elif name in defaults:
            params[name] = _convert(key, text, defaults[name])
        else:
            raise ConfigError(
                key, f"unknown key; expected out, overwrite, noise or one of {sorted(defaults)}"
            )
    if out is None:
        raise ConfigError("out", "missing: give the output directory as out=DIR")
    return out, overwrite, params


def _convert(key: str, text: str, default: Any) -> Any:
    """``text`` as the type of ``default`` (bool, int, float, or a tuple of those)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in TRUE + FALSE:
                raise ValueError(text)
            return text.lower() in TRUE
        if isinstance(default, tuple):
            parts = text.strip("()[]").split(",")
            if len(parts) != len(default):
                raise ValueError(text)
            return tuple(_convert(key, part.strip(), d) for part, d in zip(parts, default, strict=True))
        return type(default)(text)
    except ValueError:
        raise ConfigError(key, f"cannot read {text!r} as {type(default).__name__}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 = written, 2 = bad input)."""
    try:
        out, overwrite, params = parse_args(sys.argv[1:] if argv is None else argv)
        culture = make_culture(**params, render=True)
        save_culture(culture, out, overwrite=overwrite)
    except CalciumGNNError as err:
        print(f"make_synthetic: {err}", file=sys.stderr)
        return 2
    drivers = int(culture.is_driver.sum())
    print(
        f"wrote {out}: {culture.n_cells} cells ({drivers} drivers), {culture.edge_index.shape[1]} edges, "
        f"movie {culture.movie.shape} uint16, k={culture.k}, s={culture.edge_weight_scale:.6g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
