"""OmegaConf resolvers used by the configs (registered once, on import of the train module).

* ``${cg_cwd:}``: the folder the command was started from (cached: it must not move during a run);
* ``${stdout_is_tty:}``: whether standard output is a terminal, read each time it is resolved.
  ``configs/trainer/default.yaml`` sets ``enable_progress_bar: ${stdout_is_tty:}``: a live progress
  bar in a terminal, none when the output goes to a log file or a pipe (where a bar only writes
  control characters and redrawn lines). Override with ``trainer.enable_progress_bar=true``.
"""

from __future__ import annotations

import os
import sys

from omegaconf import OmegaConf


def stdout_is_tty() -> bool:
    """True when ``sys.stdout`` is an interactive terminal (False for a file, a pipe, a capture, or no
    stdout at all)."""
    stream = sys.stdout
    if stream is None:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def register_resolvers() -> None:
    """Register the resolvers of the module docstring (idempotent)."""
    if not OmegaConf.has_resolver("cg_cwd"):
        OmegaConf.register_new_resolver("cg_cwd", os.getcwd, use_cache=True)
    if not OmegaConf.has_resolver("stdout_is_tty"):
        OmegaConf.register_new_resolver("stdout_is_tty", stdout_is_tty, use_cache=False)
