"""Structured-config schemas for the Hydra app and the checks that run before anything is built.

Typed dataclasses registered in Hydra's ConfigStore make a typo in a key, a wrong type or an
unknown choice fail while composing (about a second). `validate(cfg)` adds the semantic checks
Hydra cannot do (model keys against the model's constructor, the loss spec, loss options, data
and model agreeing) and raises `ConfigError` with one line naming the key, the value and the
valid choices.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
MODES = ("train", "evaluate", "predict")


class ConfigError(ValueError):
    """A configuration value that cannot work; raised before any model is built."""


@dataclass
class TrainerConfig:
    """`trainer` group: optimization, precision, callbacks and outputs."""

    epochs: int = 4
    steps_per_epoch: int | None = None  # None: one pass over the training set
    validation_steps: int | None = None  # None: the whole validation set
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    clipnorm: float | None = None
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of learning_rate
    precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1
    monitor: str = "val_dice"
    monitor_mode: str = "max"
    early_stopping_patience: int | None = None  # epochs without improvement; None: off
    tensorboard: bool = True
    num_overlays: int = 4
    verbose: int = 1
    # Fault tolerance (docs/reliability.md).
    resume: str | None = None  # a run directory to continue; default: this run's own backup
    backup_every_steps: int | None = None  # None: back up at the end of every epoch
    nan_guard: bool = True


@dataclass
class PredictConfig:
    """`predict` group used by `mode=predict`: folder in, PNG masks out."""

    input: str | None = None
    output: str | None = None
    threshold: float = 0.5


@dataclass
class Config:
    """The primary config (conf/config.yaml)."""

    model: Any = MISSING
    data: Any = MISSING
    strategy: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: Any = "wbce+dice"  # a spec string ("0.5*wbce+dice") or a list of term names
    loss_options: dict[str, Any] = field(default_factory=dict)  # per-term options by term name
    seed: int = 0
    deterministic: bool = False
    mode: str = "train"
    checkpoint: str | None = None  # model.keras for mode=evaluate / mode=predict
    predict: PredictConfig = field(default_factory=PredictConfig)
    experiment_name: str = "default"


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (called by train.py before composing)."""
    from zoo.data.config import DATA_SCHEMAS
    from zoo.distribute import StrategyConfig

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="strategy", name="strategy_schema", node=StrategyConfig)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="data", name=f"{name}_schema", node=node)


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"Invalid {key}={value!r}; choose one of: {', '.join(choices)}")


def _plain(node: Any) -> Any:
    return (
        OmegaConf.to_container(node, resolve=True)
        if isinstance(node, DictConfig | ListConfig)
        else node
    )


def model_kwargs(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The registry name and constructor kwargs of `cfg.model`, checked against the constructor."""
    import zoo

    model_cfg = dict(_plain(cfg.model))
    name = model_cfg.pop("name", None)
    if name is None:
        raise ConfigError("model config has no `name` key; e.g. model=unet")
    try:
        entry = zoo.model_info(name)
    except ValueError as err:
        raise ConfigError(f"model.name: {err}") from None
    params = inspect.signature(entry.obj.__init__).parameters
    accepted = [p for p in params if p not in ("self", "kwargs", "args")]
    for key, value in model_cfg.items():
        if key not in accepted:
            raise ConfigError(
                f"Unknown key model.{key}={value!r} for model '{name}'; valid keys: "
                f"{', '.join(accepted)}"
            )
    model_cfg["num_classes"] = int(cfg.data.num_classes)
    model_cfg["input_shape"] = (None, None, 3)
    return name, model_cfg


def loss_spec(cfg: DictConfig) -> tuple[Any, dict[str, dict[str, Any]]]:
    """`cfg.loss` and `cfg.loss_options` as plain values, after checking that every term builds."""
    import losses

    spec = _plain(cfg.loss)
    try:
        losses.parse_spec(spec)
    except ValueError as err:
        raise ConfigError(f"loss: {err}") from None
    options = _plain(cfg.loss_options) or {}
    valid = losses.list_losses()
    for term, opts in options.items():
        if term not in valid:
            raise ConfigError(
                f"Unknown loss term loss_options.{term}; valid terms: {', '.join(valid)}"
            )
        try:
            # Building a term is cheap (no weights) and runs its own argument checks.
            losses.get(term, **(opts or {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"loss_options.{term}: {err}") from None
    return spec, options


def validate(cfg: DictConfig) -> None:
    """Semantic checks that must pass before any model or dataset is built."""
    t = cfg.trainer
    _choice("mode", cfg.mode, MODES)
    _choice("trainer.precision", t.precision, PRECISIONS)
    _choice("trainer.optimizer", t.optimizer, OPTIMIZERS)
    _choice("trainer.schedule", t.schedule, SCHEDULES)
    _choice("trainer.monitor_mode", t.monitor_mode, ("max", "min"))
    for key in ("epochs", "steps_per_execution"):
        if t[key] < 1:
            raise ConfigError(f"Invalid trainer.{key}={t[key]}; expected an integer >= 1")
    if t.learning_rate <= 0:
        raise ConfigError(f"Invalid trainer.learning_rate={t.learning_rate}; expected > 0")
    if int(cfg.data.num_classes) < 1:
        raise ConfigError(f"Invalid data.num_classes={cfg.data.num_classes}; expected >= 1")
    model_kwargs(cfg)
    loss_spec(cfg)
    if cfg.mode in ("evaluate", "predict") and not cfg.checkpoint:
        raise ConfigError(f"mode={cfg.mode} needs checkpoint=<path to model.keras>")
    if cfg.mode == "predict" and not (cfg.predict.input and cfg.predict.output):
        raise ConfigError(
            "mode=predict needs predict.input=<image folder> and predict.output=<dir>"
        )
