"""Which of `trainer.time_budget`, `trainer.max_steps` and `trainer.epochs` decides the length.

A time budget may be capped by `max_steps`; `epochs` goes with neither. When `epochs` and one of
the others are both set, the one given on the command line wins over the one a config file
(an experiment, a recipe) set, with a note in the log; given both on the command line (or both
by config files) is one `ConfigError` line. `val_every_steps` and Keras' `steps_per_epoch` are
two names of one value (the steps between validations).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from zoo.errors import ConfigError

log = logging.getLogger("zoo")

DEFAULT_EPOCHS = 4  # the length when nothing else decides (with MIN_EPOCH_SAMPLES)
MIN_EPOCH_SAMPLES = 512  # default epochs are at least this many samples (small folders)


def _given(key: str, explicit: Collection[str] | None) -> bool:
    return explicit is not None and f"trainer.{key}" in explicit


def resolve_length(trainer: Any, explicit: Collection[str] | None = None) -> dict[str, Any]:
    """Check the length keys of `trainer` and drop the one that loses (set to None).

    Args:
        trainer: a `TrainerConfig` (changed in place).
        explicit: dotted keys set on the command line (`zoo.recipe.user_keys_from_overrides` of
            Hydra's task overrides); None when unknown (every set key counts as given).

    Returns:
        {key: None} for every trainer key that was dropped (to update the recorded config).

    Raises:
        ConfigError: both `epochs` and `time_budget` (or `max_steps`) given the same way, a
            budget that is not a duration, or `val_every_steps` and `steps_per_epoch` differ.
    """
    from zoo.recipe.budget import parse_duration

    if trainer.time_budget is not None:
        parse_duration(trainer.time_budget)  # BudgetError (a ConfigError): one line
    every, spe = trainer.val_every_steps, trainer.steps_per_epoch
    if every is not None and spe is not None and every != spe:
        raise ConfigError(
            f"trainer.val_every_steps={every} and trainer.steps_per_epoch={spe} name the same "
            "thing (steps between validations, Keras' epoch); give one of them"
        )
    dropped: dict[str, Any] = {}
    for other in ("time_budget", "max_steps"):
        value = getattr(trainer, other)
        if trainer.epochs is None or value is None:
            continue
        by_hand = _given("epochs", explicit), _given(other, explicit)
        if by_hand[0] == by_hand[1]:
            where = (
                ""
                if explicit is None
                else " on the command line"
                if by_hand[0]
                else " by config files"
            )
            raise ConfigError(
                f"trainer.epochs={trainer.epochs} and trainer.{other}={value} are both set"
                f"{where}; give one of them (trainer.{other} decides the number of steps; set "
                f"the other to null)"
            )
        loser = other if by_hand[0] else "epochs"
        log.info(
            "trainer.%s=%s (from the config) is not used: trainer.%s is set on the command line",
            loser, getattr(trainer, loser), "epochs" if loser == other else other,
        )  # fmt: skip
        setattr(trainer, loser, None)
        dropped[loser] = None
    return dropped


def length_kind(trainer: Any) -> str:
    """ "budget", "steps" or "epochs" (after `resolve_length`); "epochs" also for the default."""
    if trainer.time_budget is not None:
        return "budget"
    if trainer.max_steps is not None:
        return "steps"
    return "epochs"
