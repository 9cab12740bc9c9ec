"""Model selection: fit each candidate law on the same culture and say which one the data support.

``python train.py experiment=select_law`` (config ``configs/experiment/select_law.yaml``) or any run
with ``selection.laws=[linear,leak,...]``:

1. **fit each candidate** exactly as a single run does, by calling the single-culture fit it is given
   (``train(cfg)`` hands over :func:`calcium_gnn.train.train`; this module never imports it) on a copy
   of the config whose ``paths.output_dir`` is the candidate's own subfolder ``<run folder>/<name>/``
   and whose model is the candidate: a law of :mod:`calcium_gnn.physics.laws` (``linear``, ``leak``,
   ``stimulus``, ``leak_stimulus``) sets ``model.law`` of the run's output-error model
   (``model=neural_ode``), ``gnn_ode`` replaces the model by ``configs/model/gnn_ode.yaml`` with
   ``selection.model_overrides.gnn_ode`` merged in (``experiment=select_law`` sets there the settings
   of ``experiment=discover_law``: the learned positive conductance), and a named nonlinear law
   (``saturating``, ``threshold``, ``rectifying``: :mod:`calcium_gnn.nn.named_laws`) is
   ``configs/model/gnn_ode.yaml`` with that ``message_form`` and ``selection.named_law_model`` merged
   in. A named law has a few parameters with a meaning, so, unlike the network, it is ranked by BIC
   with the laws of the output-error model;
   With ``setup.auto_drivers`` holding ``unexplained``, the cells the fitted law cannot explain are
   decided once, with the most general law among the candidates, and made drivers of every candidate;
2. **never stop for one bad candidate**: one whose fit raises a
   :class:`~calcium_gnn.errors.CalciumGNNError` (e.g. a stimulus law without ``model.stimulus_time``)
   is reported as failed with its one-line error;
3. **compare** (:func:`calcium_gnn.evaluation.model_selection.compare_laws`): BIC on the training
   window, test-window MSE against the baselines, the chosen law, the inadequate ones and why; printed
   as a table and written to ``model_selection.json`` in the run folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from calcium_gnn.errors import CalciumGNNError, ConfigError
from calcium_gnn.evaluation.model_selection import compare_laws, selection_table
from calcium_gnn.io.atomic import atomic_write_text
from calcium_gnn.nn.named_laws import NAMED_LAWS
from calcium_gnn.physics.laws import LAWS
from calcium_gnn.utils.wandb_mode import finish_wandb

log = logging.getLogger(__name__)

SELECTION_JSON = "model_selection.json"
#: candidates that are not a law of the output-error model: their model config (``configs/model/``)
MODEL_CANDIDATES: tuple[str, ...] = ("gnn_ode",)
#: A single-culture fit: the run config -> its results (:func:`calcium_gnn.train.train`).
FitOne = Callable[[DictConfig], Mapping[str, Any]]
#: The ``unexplained`` driver rule: a run config -> ``{cell id: reason}``
#: (:func:`calcium_gnn.train.unexplained_drivers`).
DecideDrivers = Callable[[DictConfig], Mapping[int, str]]


def is_selection(cfg: DictConfig) -> bool:
    """The run compares laws (``selection.laws`` is a non-empty list)."""
    selection = cfg.get("selection")
    return bool(selection) and bool(selection.get("laws"))


def candidate_config(cfg: DictConfig, name: str, config_dir: Path) -> DictConfig:
    """The run config of one candidate (module docstring, step 1).

    Raises:
        ConfigError: an unknown candidate, or a law asked of a model that has no ``law`` option.
    """
    sub = cfg.copy()
    with open_dict(sub):
        sub.selection = None
        sub.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
        sub.task_name = f"{cfg.task_name}-{name}"
        if name in LAWS:
            if "law" not in sub.model:
                raise ConfigError("selection.laws", f"law '{name}' needs the output-error model "
                                  f"(model=neural_ode), not {sub.model.get('_target_')}")
            sub.model.law = name
        elif name in MODEL_CANDIDATES:
            sub.model = model_candidate(cfg, name, config_dir)
        elif name in NAMED_LAWS:
            sub.model = named_law_candidate(cfg, name, config_dir)
        else:
            raise ConfigError("selection.laws", f"unknown candidate '{name}' (use laws {tuple(LAWS)}, "
                              f"named laws {tuple(NAMED_LAWS)} or models {MODEL_CANDIDATES})")
    return sub


def model_candidate(cfg: DictConfig, name: str, config_dir: Path) -> DictConfig:
    """The model config of a model candidate: ``configs/model/<name>.yaml`` with the run's
    ``selection.model_overrides.<name>`` merged in (e.g. the law-discovery settings for ``gnn_ode``).

    Raises:
        ConfigError: an override names a key the model's config does not have (named), or the overrides
            of a candidate are not a mapping.
    """
    overrides = (cfg.get("selection") or {}).get("model_overrides") or {}
    return merged_model_config(config_dir, name, [(overrides.get(name), f"selection.model_overrides.{name}")])


def named_law_candidate(cfg: DictConfig, name: str, config_dir: Path) -> DictConfig:
    """The model config of a named-law candidate: ``configs/model/gnn_ode.yaml`` with
    ``selection.named_law_model`` (every named law) and then ``selection.model_overrides.<name>`` (this law
    only, e.g. ``law_start``) merged in, and ``message_form`` set to the law.

    Raises:
        ConfigError: either is not a mapping, names a key the model's config does not have, or sets
            ``message_form``.
    """
    selection = cfg.get("selection") or {}
    layers = [(selection.get("named_law_model"), "selection.named_law_model"),
              ((selection.get("model_overrides") or {}).get(name), f"selection.model_overrides.{name}")]
    merged = merged_model_config(config_dir, "gnn_ode", layers)
    for given, key in layers:
        if given and "message_form" in given:
            raise ConfigError(f"{key}.message_form", "set by the candidate's name (selection.laws), not here")
    merged.message_form = name
    return merged


def merged_model_config(config_dir: Path, model: str, layers: Sequence[tuple[Any, str]]) -> DictConfig:
    """``configs/model/<model>.yaml`` with each mapping of ``layers`` merged in, in order; a layer is
    ``(mapping or None, the config entry it came from)``, None adding nothing.

    Raises:
        ConfigError: a layer is not a mapping, or names a key the model's config does not have (named
            as ``<key>.<name>``).
    """
    config = OmegaConf.load(config_dir / "model" / f"{model}.yaml")
    for extra, key in layers:
        if extra is None:
            continue
        if not isinstance(extra, (dict, DictConfig)):
            raise ConfigError(key, f"expected a mapping of model keys, got {extra!r}")
        unknown = sorted(set(extra) - set(config))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", f"not a key of configs/model/{model}.yaml")
        config = OmegaConf.merge(config, extra)
    return config


#: the laws from the most general down: the ``unexplained`` driver rule runs once with the first listed
GENERALITY: tuple[str, ...] = ("leak_stimulus", "leak", "stimulus", "linear")


def _rules(cfg: DictConfig) -> list[str]:
    rules = cfg.setup.get("auto_drivers")
    if rules is None:
        return []
    return [str(rules)] if isinstance(rules, str) else [str(r) for r in rules]


def shared_drivers(
    cfg: DictConfig, configs: dict[str, DictConfig], decide: DecideDrivers | None
) -> dict[str, DictConfig]:
    """With ``setup.auto_drivers`` holding ``unexplained``: decide those drivers once, with the most
    general law among the candidates (:data:`GENERALITY`), and give every candidate the same ones (the
    laws are compared on the same cells). Otherwise the configs unchanged."""
    rules = _rules(cfg)
    if "unexplained" not in rules or decide is None:
        return configs
    laws = [name for name in GENERALITY if name in configs]
    if not laws:
        raise ConfigError("setup.auto_drivers", "the 'unexplained' rule needs a law among the candidates")
    log.info("model selection: drivers the fitted law cannot explain, decided with '%s'", laws[0])
    extra = decide(configs[laws[0]])
    kept = [r for r in rules if r != "unexplained"]
    out = {}
    for name, sub in configs.items():
        sub = sub.copy()
        with open_dict(sub):
            sub.setup.auto_drivers = kept or None
            sub.setup.extra_drivers = {int(c): why for c, why in extra.items()}
        out[name] = sub
    return out


def select_law(
    cfg: DictConfig, fit_one: FitOne, config_dir: Path, decide_drivers: DecideDrivers | None = None
) -> dict[str, Any]:
    """Fit every candidate of ``selection.laws`` and compare them (module docstring).

    ``decide_drivers`` (a run config -> ``{cell id: reason}``) applies the ``unexplained`` driver rule
    once for all candidates (:func:`shared_drivers`).

    Returns:
        the comparison (:func:`~calcium_gnn.evaluation.model_selection.compare_laws`), also written to
        ``model_selection.json`` in the run folder.

    Raises:
        ConfigError: an unknown candidate, or fewer than one candidate that could be fitted.
    """
    names = [str(n) for n in cfg.selection.laws]
    if len(set(names)) != len(names):
        raise ConfigError("selection.laws", f"a candidate is listed twice: {names}")
    configs = {name: candidate_config(cfg, name, config_dir) for name in names}  # all checked first
    configs = shared_drivers(cfg, configs, decide_drivers)
    results: dict[str, Mapping[str, Any]] = {}
    failed: dict[str, str] = {}
    for name, sub in configs.items():
        log.info("model selection: fitting '%s'", name)
        try:
            results[name] = fit_one(sub)
        except CalciumGNNError as err:
            failed[name] = str(err)
            log.warning("model selection: '%s' failed: %s", name, err)
        finally:
            finish_wandb()
    unevaluated = [name for name, res in results.items() if "modelled_cells" not in res]
    if unevaluated:  # evaluate=false or a fast_dev_run: training metrics only, nothing to compare
        log.warning("model selection: %s not evaluated (evaluate=false or fast_dev_run): no comparison",
                    ", ".join(unevaluated))
        return {f"{name}/{key}": value for name, res in results.items() for key, value in res.items()}
    if not results:
        raise ConfigError("selection.laws", "no candidate could be fitted: " + "; ".join(
            f"{n}: {why}" for n, why in failed.items()))
    report = compare_laws(results, failed, learned=[n for n in results if n in MODEL_CANDIDATES])
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SELECTION_JSON, json.dumps(report, indent=2, default=str))
    print(selection_table(report))
    return report
