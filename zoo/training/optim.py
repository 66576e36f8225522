"""The optimizer and learning-rate schedule of a run, from the `trainer` options."""

from __future__ import annotations

from typing import Any

import keras

from zoo import optimizers


def build_optimizer(
    trainer: Any, total_steps: int, settable: bool = False
) -> keras.optimizers.Optimizer:
    """Optimizer and schedule from `trainer` (a `zoo.config.TrainerConfig`).

    Cosine decay over `total_steps` after a linear warmup of `warmup_steps` (shortened when the
    run is shorter), or a constant rate. AdamW and SGD decay conv/dense kernels only
    (`weight_decay`, decoupled); Adam does not decay. `settable`: the
    cosine schedule is a `zoo.recipe.BudgetCosineDecay` whose length a time budget sets after
    its warm-up steps (`total_steps` is then provisional). The `zoo.optimizers` classes
    scale the encoder's learning rate (and weight decay) by `encoder_lr_mult`.
    """
    lr: Any = trainer.learning_rate
    if trainer.schedule == "cosine" and settable:
        from zoo.recipe.schedule import BudgetCosineDecay

        lr = BudgetCosineDecay(
            trainer.learning_rate,
            total_steps=max(int(total_steps), 1),
            warmup_steps=min(trainer.warmup_steps, max(int(total_steps) - 1, 0)),
            alpha=trainer.min_lr_ratio,
        )
    elif trainer.schedule == "cosine":
        warmup = min(trainer.warmup_steps, max(total_steps - 1, 0))
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else trainer.learning_rate,
            decay_steps=max(total_steps - warmup, 1),
            alpha=trainer.min_lr_ratio,
            warmup_target=trainer.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    common = {
        "learning_rate": lr,
        "clipnorm": trainer.clipnorm,
        # The encoder's variables (marked by SegmentationModel) train at lr x this.
        "encoder_lr_mult": trainer.encoder_lr_mult,
    }
    if trainer.ema_momentum is not None:
        common.update(use_ema=True, ema_momentum=trainer.ema_momentum)
    if trainer.optimizer == "adam":  # plain Adam: no weight decay (that is AdamW)
        return optimizers.Adam(**common)
    if trainer.optimizer == "adamw":  # always given: Keras' AdamW defaults to 0.004
        opt = optimizers.AdamW(weight_decay=trainer.weight_decay, **common)
    else:  # SGD with decoupled decay (SGDW), as AdamW decays; None: none
        decay = trainer.weight_decay or None
        opt = optimizers.SGD(momentum=trainer.momentum, nesterov=True, weight_decay=decay, **common)
    if trainer.weight_decay:  # decaying BN scales and biases hurts and is unusual
        opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return opt
