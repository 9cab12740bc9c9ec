"""``train(cfg)``: build the cell graph, fit a consensus model with Lightning, evaluate it.

The one function a run needs, usable from a notebook with a composed config; ``main()`` is the thin
``@hydra.main`` command line (``python train.py experiment=setup1_crlsm``).

Steps: (1) the cell graph from ``cfg.data`` (a saved graph, a movie, or the built-in synthetic
culture); (2) the modelled group and border cells from ``cfg.setup``; (3) the model from
``cfg.model`` (a LightningModule exposing ``fitted_parameters()``) trained by ``cfg.trainer`` with
``cfg.logger`` (W&B offline by default, or CSV); (4) evaluation by simulating the fitted
consensus problem: ``results.json`` and figures in the run folder.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict
from torch_geometric.data import Data

from calcium_gnn.config import register_resolvers
from calcium_gnn.data.datamodule import CellGraphDataModule
from calcium_gnn.data.sources import load_cell_graph
from calcium_gnn.errors import CalciumGNNError, ConfigError, OutputError
from calcium_gnn.models.base import ConsensusModel
from calcium_gnn.physics.setups import Setup, auto_rules, resolve_setup
from calcium_gnn.utils.console import quiet_library_messages
from calcium_gnn.utils.wandb_mode import ensure_offline_unless_configured, finish_wandb

if TYPE_CHECKING:
    from calcium_gnn.evaluation.diagnostics import DiagnosticRule

log = logging.getLogger(__name__)
register_resolvers()
#: the project's Hydra configs (``configs/`` beside the package)
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a config group (callbacks, loggers)."""
    if not group:
        return []
    entries = [v for v in group.values() if isinstance(v, DictConfig) and "_target_" in v]
    return [hydra.utils.instantiate(v) for v in entries]


def _resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, task_dir: Path) -> str | None:
    """``"last"``: the newest ``checkpoints/last.ckpt`` of an earlier run of this task (its runs live
    under ``task_dir``); otherwise the given path (checked) or None."""
    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError("ckpt_path", f"checkpoint {ckpt_path} does not exist")
        return str(ckpt_path)
    candidates = [p for p in task_dir.rglob("checkpoints/last.ckpt") if output_dir not in p.parents]
    if not candidates:
        raise ConfigError("ckpt_path", f"'last' asked for, but no checkpoints/last.ckpt under {task_dir}")
    return str(max(candidates, key=lambda p: p.stat().st_mtime))


def _plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved run config as plain Python, without Hydra's own section."""
    run_cfg = cfg.copy()
    with open_dict(run_cfg):
        run_cfg.pop("hydra", None)
    return OmegaConf.to_container(run_cfg, resolve=True)


def _check_keys(group: str, keys: Any, target: Any, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a config key that ``target`` (a function or class) does not take, naming it."""
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in keys:
        if key not in params and key not in ignore and not str(key).startswith("_"):
            raise ConfigError(f"{group}.{key}", f"unknown key (known: {', '.join(sorted(params))})")


def instantiate_model(model_cfg: DictConfig, data: Data, setup: Setup) -> ConsensusModel:
    """The model of the ``model`` config group on the cell graph ``data`` and its setup.

    Raises:
        ConfigError: ``_target_`` is not a :class:`ConsensusModel`, or a key the model does not take.
    """
    model_class = hydra.utils.get_class(model_cfg._target_)
    if not (isinstance(model_class, type) and issubclass(model_class, ConsensusModel)):
        raise ConfigError("model._target_", f"{model_cfg._target_} is not a calcium_gnn ConsensusModel")
    _check_keys("model", model_cfg, model_class, ignore=("data", "setup"))
    # partial first: Hydra would turn the Setup dataclass into a DictConfig if passed to instantiate
    return hydra.utils.instantiate(model_cfg, _partial_=True, _recursive_=False, _convert_="all")(
        data=data, setup=setup
    )


def _single_process_if_exact(cfg: DictConfig, model: ConsensusModel) -> dict[str, Any]:
    """Trainer overrides that run a model in one process when a data-parallel strategy is asked but the
    model does not split its fit (``model.data_parallel`` False).

    Data parallelism splits a loss over processes (the PINN's collocation points); CRLSM and
    Levenberg-Marquardt solve the whole problem exactly in every step, and the GNN ODE does not split
    its windows yet, so W processes would compute the same fit W times. The run says so in one line.
    """
    strategy = str(cfg.trainer.get("strategy", "auto") or "auto")
    if not strategy.startswith("ddp") or model.data_parallel:
        return {}
    log.warning(
        "%s does not split its fit between processes (strategy=%s would run it W times): running in one "
        "process", model.method_name, strategy,
    )
    return {"strategy": "auto", "devices": 1, "num_nodes": 1}


def train(cfg: DictConfig) -> dict[str, Any] | list[dict[str, Any]]:
    """Fit the configured model on the configured culture and evaluate it.

    Args:
        cfg: the composed config (``configs/train.yaml``).

    Returns:
        The results (the content of ``results.json``), or the training metrics when
        ``cfg.evaluate`` is false; with ``data=culture_folder``, one summary row per culture
        (:func:`calcium_gnn.batch.fit_cultures`); with ``selection.laws``, the comparison of the laws
        (:func:`calcium_gnn.selection.select_law`).
    """
    from calcium_gnn.batch import fit_cultures, is_culture_folder
    from calcium_gnn.selection import is_selection, select_law

    if is_culture_folder(cfg):
        return fit_cultures(cfg, train)
    if is_selection(cfg):
        return select_law(cfg, train, Path(CONFIG_DIR), decide_drivers=unexplained_drivers)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(output_dir, f"cannot create the run folder: {err.strerror}") from None

    from calcium_gnn.pipeline import options_from_config

    build_options = options_from_config(cfg.segmentation, cfg.preprocessing, cfg.graph, cfg.data)
    source = load_cell_graph(cfg.data, build_options)
    data = source.data
    log.info("cell graph: %d cells, %d frames, %d edges from %s", data.num_nodes, data.x.shape[1],
             data.edge_index.shape[1], source.origin)
    setup_cfg = OmegaConf.to_container(cfg.setup, resolve=True)
    _check_keys("setup", setup_cfg, resolve_setup)
    if "unexplained" in auto_rules(setup_cfg.get("auto_drivers")):
        setup = _unexplained_drivers(cfg, data, setup_cfg)  # resolves (and checks) the setup first
    else:
        setup = resolve_setup(data, **setup_cfg)
    for line in setup.driver_lines():
        log.info("driver %s", line)
    model = instantiate_model(cfg.model, data, setup)
    quiet_library_messages(no_optimizer=not model.uses_optimizer)

    if cfg.get("logger"):
        ensure_offline_unless_configured()
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"))
    callbacks = _instantiate_group(cfg.get("callbacks"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, **_single_process_if_exact(cfg, model)
    )
    hparams = _plain_config(cfg)
    for lg in loggers:
        lg.log_hyperparams(hparams)

    # Lightning moves its batches to the device in place: it gets a copy, `data` stays on the host
    datamodule = CellGraphDataModule(data.clone(), steps_per_epoch=model.steps_per_epoch)
    ckpt = _resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, Path(cfg.paths.log_dir) / cfg.task_name)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt)
    fit_seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if not trainer.is_global_zero:  # strategy=ddp: every process runs train(); rank 0 alone reports
        return metrics
    if not cfg.get("evaluate", True) or trainer.fast_dev_run:
        return metrics

    from calcium_gnn.evaluation.diagnostics import DiagnosticRule, check_training_metrics
    from calcium_gnn.evaluation.report import evaluate_fit
    from calcium_gnn.evaluation.summary import run_summary

    check_training_metrics(metrics, model.method_name)
    rule = DiagnosticRule.from_config(cfg.evaluation.get("diagnostics"))
    reference = _reference_fit(cfg, model, data, setup, rule)

    # the model's own results (intervals, anomaly scores, ...) and, for a learned law, its right-hand
    # side; the simulation runs where the model is, the results come back to the host
    results = evaluate_fit(
        data,
        setup,
        model.fitted_parameters(),
        train_fraction=model.train_fraction,
        substeps=int(cfg.evaluation.substeps),
        out_dir=output_dir,
        labels=source.labels,
        cells_to_plot=cfg.evaluation.cells_to_plot,
        method_name=model.method_name,
        fit_seconds=fit_seconds,
        extra={"data": source.origin, "training_metrics": metrics, "config": hparams},
        model_results=model.extra_results(data),
        field=model.simulator(),
        device=model.device,
        own_trajectory=model.own_trajectory(),
        reference=reference,
        diagnostic_rule=rule,
        waves=_plain(cfg.evaluation.get("waves")),
    )
    figures = [Path(p) for p in results.get("figure_paths", [])]
    _log_results(loggers, results, figures)
    for reason in results["diagnostics"]["reasons"]:
        log.warning("%s fit: %s", model.method_name, reason)
    print(run_summary(results, output_dir / "results.json"))
    return results


def unexplained_drivers(cfg: DictConfig) -> dict[int, str]:
    """The drivers the ``unexplained`` rule adds for this run's data, setup and model ``{cell id: reason}``
    (model selection decides them once, with its most general law, for every candidate)."""
    from calcium_gnn.evaluation.unexplained import UNEXPLAINED_REASON
    from calcium_gnn.pipeline import options_from_config

    build_options = options_from_config(cfg.segmentation, cfg.preprocessing, cfg.graph, cfg.data)
    data = load_cell_graph(cfg.data, build_options).data
    setup_cfg = OmegaConf.to_container(cfg.setup, resolve=True)
    _check_keys("setup", setup_cfg, resolve_setup)
    found = _unexplained_drivers(cfg, data, setup_cfg)
    return {c: why for c, why in found.drivers.items() if why.startswith(UNEXPLAINED_REASON)}


def _unexplained_drivers(cfg: DictConfig, data: Data, setup_cfg: dict[str, Any]) -> Setup:
    """The ``unexplained`` rule of ``setup.auto_drivers`` (:func:`calcium_gnn.evaluation.unexplained.
    find_unexplained`): quiet fits (no logger, no checkpoint) of the run's model; the run's own fit then
    uses the setup this returns."""
    from calcium_gnn.evaluation.unexplained import FitOutcome, UnexplainedRule, find_unexplained

    given: dict[int, str] = dict(setup_cfg.get("extra_drivers") or {})

    def setup_with(extra: dict[int, str]) -> Setup:
        return resolve_setup(data, **{**setup_cfg, "extra_drivers": {**given, **extra}})

    def fit(setup: Setup) -> FitOutcome:
        model = instantiate_model(cfg.model, data, setup)
        quiet_library_messages(no_optimizer=not model.uses_optimizer)
        trainer: L.Trainer = hydra.utils.instantiate(
            cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
            **_single_process_if_exact(cfg, model),
        )
        batches = CellGraphDataModule(data.clone(), steps_per_epoch=model.steps_per_epoch)
        trainer.fit(model, datamodule=batches)
        return FitOutcome(model.fitted_parameters(), model.train_fraction, model.simulator())

    default = UnexplainedRule()
    rule = UnexplainedRule(
        threshold=float(setup_cfg.get("unexplained_z", default.threshold)),
        try_z=float(setup_cfg.get("unexplained_try_z", default.try_z)),
        gain=float(setup_cfg.get("unexplained_gain", default.gain)),
        rounds=int(setup_cfg.get("unexplained_rounds", default.rounds)),
    )
    extra = find_unexplained(data, setup_with, fit, rule, substeps=int(cfg.evaluation.substeps))
    return setup_with(extra)


def _reference_fit(
    cfg: DictConfig, model: ConsensusModel, data: Data, setup: Setup, rule: DiagnosticRule
) -> Any:
    """The output-error reference for ``k`` (:mod:`calcium_gnn.evaluation.reference_fit`) for the models
    that want one (:meth:`~calcium_gnn.models.base.ConsensusModel.wants_k_reference`); None when off or
    not applicable."""
    options = cfg.evaluation.get("reference_fit")
    if not options or not options.get("enabled", False) or not model.wants_k_reference():
        return None
    from calcium_gnn.evaluation.reference_fit import reference_fit

    fitted = model.fitted_parameters()
    return reference_fit(
        data, setup, train_fraction=model.train_fraction, edge_weight_scale=fitted.edge_weight_scale,
        k_bounds=tuple(cfg.physics.k_bounds), gamma_bounds=tuple(cfg.physics.gamma_bounds),
        level=float(options.level), max_iterations=int(options.max_iterations),
        max_modelled_cells=int(options.max_modelled_cells),
        leak_rejection=(rule.law_rejection_z, rule.law_rejection_share) if options.get("leak_check", True)
        else None,
    )


def _plain(node: Any) -> Any:
    """A config node as plain Python (None stays None)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _log_results(loggers: list[Logger], results: dict[str, Any], figures: list[Path]) -> None:
    """Send the scalar results (``eval/...``) and the figures to every logger."""
    scalars = {f"eval/{k}": float(v) for k, v in results.items() if isinstance(v, (int, float))}
    for lg in loggers:
        lg.log_metrics(scalars)
        if isinstance(lg, WandbLogger):
            for fig in figures:
                lg.log_image(key=f"figures/{fig.stem}", images=[str(fig)])
            summary = {k: v for k, v in results.items() if k != "figure_paths"}
            lg.experiment.summary["results"] = json.loads(json.dumps(summary, default=str))
        lg.finalize("success")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> None:
    """Command line: ``python train.py experiment=setup1_crlsm [key=value ...]``."""
    try:
        train(cfg)
    except CalciumGNNError as err:
        log.error("%s", err)
        raise SystemExit(f"error: {err}") from None
    finally:
        finish_wandb()


if __name__ == "__main__":
    main()
