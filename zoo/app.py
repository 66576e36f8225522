"""The application behind `train.py`: check the config, then train, evaluate or predict.

train.py (Hydra composes conf/) -> zoo.app.run(cfg, run_dir)
    zoo.config.parse       every check, before anything is built; typed parts
    mode=train             zoo.training.train   (setup -> build -> fit -> finalize)
    mode=evaluate          zoo.evaluation.evaluate_checkpoint (folder data: native size, tiled)
    mode=predict           zoo.predict.predict_folder (tiles spread over the strategy's replicas)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from zoo import config as zconfig


def explicit_keys() -> set[str] | None:
    """Dotted keys set on the command line of this Hydra job (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    from zoo.recipe.choices import user_keys_from_overrides

    if not HydraConfig.initialized():
        return None
    return user_keys_from_overrides(HydraConfig.get().overrides.task)


def run(
    cfg: DictConfig,
    run_dir: str | os.PathLike,
    process_start: float | None = None,
    explicit: set[str] | None = None,
) -> Any:
    """Run the composed config `cfg` in `run_dir`; returns the monitored metric (train) or Dice.

    Args:
        cfg: the composed config.
        run_dir: the run directory.
        process_start: `time.monotonic()` when the process (or sweep job) started: a time
            budget of a minute or more keeps the whole process within the budget + 30 s.
        explicit: keys set on the command line (default: Hydra's task overrides).
    """
    from zoo.distribute import hydra_worker_overrides
    from zoo.recipe import PhaseTimer
    from zoo.recipe.apply import apply_recipe

    explicit = explicit_keys() if explicit is None else explicit
    timer = PhaseTimer()
    if cfg.get("recipe") and cfg.get("mode", "train") == "train":
        with timer.phase("fingerprint"):
            # Only the chief writes the run directory (non-chief workers get Hydra overrides).
            cfg, applied = apply_recipe(
                cfg, explicit=explicit, run_dir=run_dir, write=not hydra_worker_overrides()
            )
    else:
        applied = None
    run = zconfig.parse(cfg, explicit)
    run.process_start, run.timer, run.recipe = process_start, timer, applied
    if run.mode == "train":
        from zoo.training import train

        results = train(run, Path(run_dir))
        return results.get(run.trainer.monitor, results.get("val_dice"))
    if run.mode == "evaluate":
        from zoo.evaluation import evaluate_checkpoint

        return evaluate_checkpoint(run, run_dir).get("val_dice")
    from zoo.distribute import build_strategy
    from zoo.predict import predict_folder

    options = zconfig.predict_options(run.predict).as_dict()
    threshold, skip_corrupt = options.pop("threshold"), options.pop("skip_corrupt")
    return predict_folder(
        run.checkpoint, run.predict.input, run.predict.output, threshold, skip_corrupt,
        strategy=build_strategy(run.strategy), option_name=lambda key: f"predict.{key}", **options,
    )  # fmt: skip


def unwritable_output(argv: Sequence[str]) -> str | None:
    """Why the run (or sweep) directory named on the command line cannot be written, or None.

    Checked before Hydra starts (Hydra writes its own files there first and would end with a
    traceback): the nearest existing folder of `hydra.run.dir` (`hydra.sweep.dir` with
    `--multirun`; default `outputs/` or `multirun/`) must take a new file.
    """
    multirun = "--multirun" in argv or "-m" in argv
    key, default = ("hydra.sweep.dir=", "multirun") if multirun else ("hydra.run.dir=", "outputs")
    value = next((a[len(key) :] for a in argv if a.startswith(key)), default)
    path = Path(value.split("${", 1)[0] or ".").expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    option = key.rstrip("=")
    if not path.is_dir():
        return f"Cannot create {option}={value}: {path} is a file, not a folder; pick another"
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return f"Cannot write {option}={value} ({path}: {err.strerror}); pick a writable folder"
    return None
