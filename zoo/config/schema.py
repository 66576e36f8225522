"""Structured-config schemas of the Hydra app (conf/), stored in Hydra's ConfigStore.

A typo in a key, a wrong type or an unknown choice in the `trainer`, `predict`, `data` and
`strategy` groups fails while Hydra composes the config (about a second). The `model` group is
checked against each model's constructor signature (`zoo.config.model`), before any data is
read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TrainerConfig:
    """`trainer` group: optimization, precision, callbacks and outputs."""

    # How long to train (docs/training.md): a time budget ("3m", "90s", "1h"), a number of steps,
    # or epochs; null everywhere: 4 epochs of at least 512 samples each.
    epochs: int | None = None
    max_steps: int | None = None
    time_budget: str | None = None
    val_every_steps: int | None = None  # validate every N steps (a Keras epoch); None: planned
    steps_per_epoch: int | None = None  # Keras' name for val_every_steps (give one of the two)
    validation_steps: int | None = None  # None: the whole validation set
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    # The encoder's learning rate (and decoupled weight decay) is learning_rate x this: 0.1 for
    # a pretrained encoder that should move slowly; 1 trains it like the rest.
    encoder_lr_mult: float = 1.0
    clipnorm: float | None = None
    # Validate, checkpoint and export an exponential moving average of the weights with this
    # momentum (Keras' use_ema / ema_momentum, warmed up as (1 + step) / (10 + step)); None: off.
    ema_momentum: float | None = None
    # Before each validation, set the batch-norm statistics to their mean over this many
    # training batches under the validated weights (precise BN, zoo.training.precise_bn); 0: off.
    precise_bn_batches: int = 0
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
    # image_size: the final scores on the validation tensors (resized/cropped like training);
    # full_resolution: every validation file at its native size, tiled (folder data).
    final_eval: str = "image_size"
    # Deployment artifacts written next to model.keras at the end of the run, verified against
    # it (`zoo.export`): a list of `format` or `format:quantize` entries, e.g.
    # [saved_model, onnx, litert:int8]; empty: model.keras only.
    export: Any = field(default_factory=list)


@dataclass
class PredictConfig:
    """`predict` group: `mode=predict` (images in, masks out) and the tiled prediction of
    `mode=evaluate` / `trainer.final_eval=full_resolution` (docs/inference.md)."""

    input: str | None = None  # an image or a folder (mode=predict)
    output: str | None = None  # the output folder (mode=predict)
    tile: Any = "auto"  # auto | whole | N | [h, w] (auto: whole up to 2x the training size)
    overlap: float = 0.5
    blend: str = "gaussian"  # gaussian | uniform | center
    batch_size: int = 8  # tiles per replica per step
    # none | hflip | flip | d4; null: the model's own (metadata "tta", else none). In a
    # training run: the views its final full-resolution scores average, recorded in the model.
    tta: str | None = None
    threshold: float | None = None  # null: the model's metadata threshold, else 0.5
    probabilities: str | None = None  # null | npy | png: also write probability maps
    overlays: bool = False  # also write image + mask overlays
    skip_corrupt: bool = False  # true: skip unreadable images (named in the log)


@dataclass
class RecipeConfig:
    """`recipe` group (`recipe=auto`): plan the run from a fingerprint of the data."""

    name: str = "auto"
    device: str = "auto"  # auto | cpu | gpu: the planner's hardware tier
    # Time a small convolution workload on this CPU for the plan's step estimates (cached);
    # false: the reference machine's costs scaled by core count and bfloat16.
    cpu_probe: bool = True


@dataclass
class Config:
    """The primary config (conf/config.yaml)."""

    model: Any = MISSING
    data: Any = MISSING
    strategy: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: Any = "auto"  # a spec string ("0.5*wbce+dice"), a list of term names, or "auto"
    loss_options: dict[str, Any] = field(default_factory=dict)  # per-term options by term name
    # Deep supervision: relative loss weight of each model output (null: halving per level).
    loss_level_weights: Any = None
    seed: int = 0
    deterministic: bool = False
    mode: str = "train"
    checkpoint: str | None = None  # model.keras for mode=evaluate / mode=predict
    predict: PredictConfig = field(default_factory=PredictConfig)
    experiment_name: str = "default"
    recipe: Any = None  # `recipe=auto` selects conf/recipe/auto.yaml (RecipeConfig)


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (called by train.py before composing)."""
    from zoo.data.config import DATA_SCHEMAS
    from zoo.distribute import StrategyConfig

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="strategy", name="strategy_schema", node=StrategyConfig)
    cs.store(group="recipe", name="recipe_schema", node=RecipeConfig)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="data", name=f"{name}_schema", node=node)
