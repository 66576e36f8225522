"""The run configuration: Hydra's composed config, checked and converted once.

`parse(cfg)` runs every check that must pass before anything is built (a few milliseconds) and
returns a `RunConfig` whose parts are typed objects: each builder then receives only its own
part (`run.model`, `run.loss`, `run.data`, `run.trainer`, `run.strategy`, `run.predict`).
Every failure is one `ConfigError` line naming the key, the value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zoo.config.checks import choice, number
from zoo.config.exports import ExportRequest, export_requests
from zoo.config.length import resolve_length
from zoo.config.model import ModelSpec, model_spec
from zoo.config.schema import Config, PredictConfig, TrainerConfig, register_configs
from zoo.errors import ConfigError

log = logging.getLogger("zoo")

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
MODES = ("train", "evaluate", "predict")
FINAL_EVALS = ("image_size", "full_resolution")
# `loss: auto` picks the usual pair for the data's mode.
AUTO_LOSS = {"binary": "wbce+dice", "multiclass": "wce+dice", "multilabel": "wbce+dice"}

__all__ = [
    "Config",
    "ConfigError",
    "ExportRequest",
    "LossSpec",
    "ModelSpec",
    "PredictConfig",
    "RunConfig",
    "TrainerConfig",
    "export_requests",
    "parse",
    "predict_options",
    "register_configs",
    "validate",
]


@dataclass(frozen=True)
class LossSpec:
    """The loss spec (with `auto` resolved), per-term options and the data's mode; under deep
    supervision the model's number of outputs and `loss_level_weights` (None: halving)."""

    spec: Any
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = "binary"
    labels: tuple[str, ...] = ()  # multilabel: the per-label metric keys (`dice_<label>`)
    level_weights: list[float] | None = None
    levels: int = 1

    def logged(self) -> list[str]:
        """Every value a training run logs (what `trainer.monitor` may name)."""
        import losses

        terms = [t for _, t in losses.parse_spec(self.spec)]
        names = ["loss", *(f"{t}_loss" for t in terms)]
        if self.levels > 1:  # deep supervision: outputs with a positive weight log terms too
            weights = losses.level_weights(self.levels, self.level_weights)
            names += [
                f"{t}_aux{k}_loss" for k in range(1, self.levels) if weights[k] for t in terms
            ]
        names += ["dice", "iou"]
        names += [f"{m}_{k}" for k in self.labels for m in ("dice", "iou")]
        return names + [f"val_{n}" for n in names]


@dataclass
class RunConfig:
    """One run's configuration, checked; see `parse`."""

    mode: str
    model: ModelSpec
    loss: LossSpec
    data: Any  # a zoo.data.DataConfig subclass
    trainer: TrainerConfig
    strategy: Any  # zoo.distribute.StrategyConfig
    predict: PredictConfig
    seed: int = 0
    deterministic: bool = False
    checkpoint: str | None = None
    experiment_name: str = "default"
    resolved: dict[str, Any] = field(default_factory=dict)  # what config.yaml records
    # Set by zoo.app.run: when the process started (time.monotonic(), for the time budget's
    # whole-process rule), the phase timer (metrics.json "timing") and the applied recipe.
    process_start: float | None = None
    timer: Any = None  # zoo.recipe.PhaseTimer
    recipe: Any = None  # zoo.recipe.apply.AppliedRecipe


def loss_spec(spec: Any, options: dict[str, Any], mode: str) -> LossSpec:
    """Resolve `auto`, parse the spec and check every term builds for the data's mode."""
    import tensorflow as tf

    import losses

    if spec == "auto":
        spec = AUTO_LOSS[mode]
    try:
        pairs = losses.parse_spec(spec)
    except ValueError as err:
        raise ConfigError(f"loss: {err}") from None
    valid = losses.list_losses()
    for term in options:
        if term not in valid:
            raise ConfigError(
                f"Unknown loss term loss_options.{term}; valid terms: {', '.join(valid)}"
            )
    for term in dict.fromkeys([t for _, t in pairs] + list(options)):
        allowed = losses.LOSSES.get(term).modes
        if mode not in allowed:
            fits = [t for t in valid if mode in losses.LOSSES.get(t).modes]
            raise ConfigError(
                f"Invalid loss={spec!r} for {mode} data: term '{term}' supports "
                f"{', '.join(allowed)} only; terms for {mode} data: {', '.join(fits)} "
                f"(e.g. loss={AUTO_LOSS[mode]}, or loss=auto)"
            )
        try:
            # Building a term is cheap (no weights) and runs its own argument checks. In a
            # throwaway graph: an eager op here would initialize TensorFlow before the strategy,
            # and MultiWorkerMirroredStrategy must configure collectives first.
            with tf.Graph().as_default():
                losses.get(term, mode=mode, **(options.get(term) or {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"loss_options.{term}: {err}") from None
    return LossSpec(spec, options, mode)


def check_trainer(t: TrainerConfig) -> None:
    """Choices and ranges of every `trainer` option (types are checked by the schema)."""
    choice("trainer.precision", t.precision, PRECISIONS)
    choice("trainer.optimizer", t.optimizer, OPTIMIZERS)
    choice("trainer.schedule", t.schedule, SCHEDULES)
    choice("trainer.monitor_mode", t.monitor_mode, ("max", "min"))
    number("trainer.epochs", t.epochs, 1, integer=True, optional=True)
    number("trainer.max_steps", t.max_steps, 1, integer=True, optional=True)
    number("trainer.val_every_steps", t.val_every_steps, 1, integer=True, optional=True)
    number("trainer.steps_per_epoch", t.steps_per_epoch, 1, integer=True, optional=True)
    number("trainer.validation_steps", t.validation_steps, 1, integer=True, optional=True)
    number("trainer.steps_per_execution", t.steps_per_execution, 1, integer=True)
    number("trainer.learning_rate", t.learning_rate, 0, open_low=True)
    number("trainer.weight_decay", t.weight_decay, 0)
    number("trainer.momentum", t.momentum, 0, 1)
    number("trainer.encoder_lr_mult", t.encoder_lr_mult, 0)
    number("trainer.clipnorm", t.clipnorm, 0, open_low=True, optional=True)
    number("trainer.ema_momentum", t.ema_momentum, 0, 0.9999, optional=True)
    number("trainer.precise_bn_batches", t.precise_bn_batches, 0, integer=True)
    number("trainer.warmup_steps", t.warmup_steps, 0, integer=True)
    number("trainer.min_lr_ratio", t.min_lr_ratio, 0, 1)
    number(
        "trainer.early_stopping_patience", t.early_stopping_patience, 1, integer=True,
        optional=True,
    )  # fmt: skip
    number("trainer.num_overlays", t.num_overlays, 0, integer=True)
    number("trainer.verbose", t.verbose, 0, 2, integer=True)
    number("trainer.backup_every_steps", t.backup_every_steps, 1, integer=True, optional=True)
    choice("trainer.final_eval", t.final_eval, FINAL_EVALS)
    export_requests(t.export)


def predict_options(p: PredictConfig) -> Any:
    """The `predict` group's prediction options, checked (`zoo.inference.settings`).

    Raises:
        ConfigError: the first bad value, named `predict.<key>`.
    """
    import dataclasses

    from zoo.inference.settings import OPTION_NAMES, check_options

    values = {k: v for k, v in dataclasses.asdict(p).items() if k in OPTION_NAMES}
    return check_options(values, name=lambda key: f"predict.{key}")


def level_weights(value: Any, model: ModelSpec) -> tuple[list[float] | None, int]:
    """`loss_level_weights` checked against the model's outputs; returns (weights, outputs).

    Raises:
        ConfigError: weights given without `model.deep_supervision=true`, or not one
            non-negative number per output with a positive sum.
    """
    import losses
    import zoo

    levels = zoo.model_info(model.name).obj.num_outputs(model.kwargs)
    if value is None:
        return None, levels
    if levels == 1:
        raise ConfigError(
            f"Invalid loss_level_weights={value!r}: model '{model.name}' has one output; set "
            "model.deep_supervision=true (models that support it: "
            f"{', '.join(zoo.models.base.deep_supervision_models())}) or loss_level_weights=null"
        )
    try:
        losses.level_weights(levels, value)
    except ValueError:
        raise ConfigError(
            f"Invalid loss_level_weights={value!r}: expected {levels} non-negative numbers with "
            f"a positive sum, one per output of model '{model.name}' with deep supervision "
            "(full resolution first, then the auxiliary outputs from finest to coarsest)"
        ) from None
    return [float(w) for w in value], levels


def check_monitor(monitor: str, loss: LossSpec) -> None:
    """`trainer.monitor` must name a value the run logs (a typo would never improve)."""
    valid = loss.logged()
    if monitor not in valid:
        close = difflib.get_close_matches(str(monitor), valid, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"Invalid trainer.monitor={monitor!r}: the run does not log it.{hint} "
            f"Logged values: {', '.join(valid)}"
        )


def check_image_size(image_size: list[int], model: ModelSpec) -> None:
    """Training sizes must be multiples of the model's divisor (unless the model pads)."""
    if model.kwargs.get("pad_to_divisor"):
        return
    divisor = model.divisor
    size = [int(s) for s in image_size]
    if any(s % divisor for s in size):
        fit = [max(divisor, round(s / divisor) * divisor) for s in size]
        raise ConfigError(
            f"Invalid data.image_size={size}: model '{model.name}' needs multiples of {divisor}; "
            f"use e.g. data.image_size=[{fit[0]},{fit[1]}], or model.pad_to_divisor=true"
        )


def parse(cfg: DictConfig, explicit: set[str] | None = None) -> RunConfig:
    """Check the composed config and convert it once into typed parts.

    Args:
        cfg: the composed config.
        explicit: dotted keys set on the command line (`zoo.recipe.user_keys_from_overrides`
            of Hydra's task overrides); they win over config files where two keys conflict
            (`trainer.epochs` vs `trainer.time_budget`). None: unknown, conflicts are errors.

    Raises:
        ConfigError: the first problem found, in one line.
    """
    from zoo.data.config import data_mode, parse_data_config
    from zoo.distribute import StrategyConfig

    resolved = OmegaConf.to_container(cfg, resolve=True)
    choice("mode", resolved["mode"], MODES)
    trainer = OmegaConf.to_object(cfg.trainer)
    check_trainer(trainer)
    resolved["trainer"].update(resolve_length(trainer, explicit))
    predict = OmegaConf.to_object(cfg.predict)
    predict_options(predict)
    data = parse_data_config(cfg.data)
    mode = resolved["mode"]
    labels: tuple[str, ...] = ()
    if data_mode(data) == "multilabel" and mode != "predict":
        from zoo.data.multilabel import resolve

        # The model's outputs are the labels: K from the label folders (or .npy channels),
        # known before the model is built. A listing and one .npy header, no mask is read.
        labels = resolve(data)
        resolved["data"]["num_classes"] = data.num_classes
        if "class_names" in resolved["data"]:
            resolved["data"]["class_names"] = list(labels)
    strategy = StrategyConfig(**resolved["strategy"])
    model = model_spec(resolved["model"], data.num_classes, data.channels)
    loss = loss_spec(resolved["loss"], resolved.get("loss_options") or {}, data_mode(data))
    weights, levels = level_weights(resolved.get("loss_level_weights"), model)
    loss = dataclasses.replace(loss, level_weights=weights, levels=levels)
    if labels:
        from zoo.metrics import label_keys

        loss = dataclasses.replace(loss, labels=tuple(label_keys(labels)))
    if mode == "train" and model.freeze_encoder and trainer.encoder_lr_mult != 1:
        log.warning(
            "trainer.encoder_lr_mult=%g has no effect: model.freeze_encoder=true keeps the "
            "encoder as it is", trainer.encoder_lr_mult,
        )  # fmt: skip
    if mode == "train":
        if data.image_size is not None:  # None: from the images (folder)
            check_image_size(data.image_size, model)
        check_monitor(trainer.monitor, loss)
        if trainer.final_eval == "full_resolution" and data.name != "folder":
            raise ConfigError(
                "trainer.final_eval=full_resolution reads the validation files at their native "
                f"size: it needs data=folder, not data={data.name} (use final_eval=image_size)"
            )
    elif not resolved.get("checkpoint"):
        raise ConfigError(f"mode={mode} needs checkpoint=<path to model.keras>")
    if mode == "predict" and not (predict.input and predict.output):
        raise ConfigError(
            "mode=predict needs predict.input=<image folder> and predict.output=<dir>"
        )
    return RunConfig(
        mode=mode,
        model=model,
        loss=loss,
        data=data,
        trainer=trainer,
        strategy=strategy,
        predict=predict,
        seed=int(resolved["seed"]),
        deterministic=bool(resolved["deterministic"]),
        checkpoint=resolved.get("checkpoint"),
        experiment_name=str(resolved.get("experiment_name", "default")),
        resolved=resolved,
    )


def validate(cfg: DictConfig, explicit: set[str] | None = None) -> RunConfig:
    """`parse` under the name the tests and notebooks use."""
    return parse(cfg, explicit)
