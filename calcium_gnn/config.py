"""OmegaConf resolvers used by the configs (registered once, on import of the train module)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${cg_cwd:}``: the folder the command was started from."""
    if not OmegaConf.has_resolver("cg_cwd"):
        OmegaConf.register_new_resolver("cg_cwd", os.getcwd, use_cache=True)
