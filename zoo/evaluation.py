"""Scoring segmentation models: exact Dice/IoU over a dataset, and a saved model on a data config.

Used at the end of training (`zoo.training`), by `train.py mode=evaluate` and by anything else
that scores a model; it imports neither the trainer nor the prediction CLI.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from zoo.errors import EvaluationError, ModelFileError
from zoo.metrics import ConfusionMatrix
from zoo.models.base import model_mode


def check_model_fits_data(
    model: Any, num_classes: int, channels: int, source: str | os.PathLike
) -> None:
    """A model must predict the data's classes from the data's channels.

    Raises:
        ModelFileError: output channels differ from `num_classes`, or input channels from
            `channels` (names the file and both numbers).
    """
    out = int(model.outputs[0].shape[-1])
    if out != int(num_classes):
        raise ModelFileError(
            f"{source} predicts {out} channel(s) but the data has data.num_classes={num_classes}: "
            "evaluate it on data with the classes it was trained for"
        )
    expected = model.inputs[0].shape[-1]
    if expected is not None and int(expected) != int(channels):
        raise ModelFileError(
            f"{source} takes images with {expected} channel(s) but the data has {channels}"
        )
    mode = model_mode(model)
    if (mode == "binary") != (int(num_classes) == 1):
        raise ModelFileError(
            f"{source} is a {mode} model but the data has num_classes={num_classes}"
        )


def evaluate_model(
    model: Any,
    dataset: Any,
    num_classes: int,
    ignore_index: int | None,
    steps: int | None = None,
) -> dict[str, float]:
    """Exact Dice/IoU (mean and per class) of an inference model over a dataset of dicts.

    A class absent from both truth and prediction scores NaN (never 1; see zoo.metrics).

    Raises:
        EvaluationError: no pixel was evaluated (an empty dataset, or only ignored pixels).
    """
    cm = ConfusionMatrix(num_classes, ignore_index, per_class=True)
    for i, batch in enumerate(dataset):
        if steps is not None and i >= steps:
            break
        cm.update_state(batch["mask"], model(batch["image"], training=False))
    if float(cm.total()) == 0:
        raise EvaluationError(
            "The evaluation counted no pixels (no validation batches, or every pixel ignored): "
            "there is nothing to score"
        )
    return {k: float(v) for k, v in cm.result().items()}


def summary(results: dict[str, Any], prefix: str = "val_") -> str:
    """ "Validation Dice: 0.9734  IoU: 0.9481" (or why there is no score)."""
    dice, iou = results.get(f"{prefix}dice"), results.get(f"{prefix}iou")
    if dice is None or (isinstance(dice, float) and math.isnan(dice)):
        return "Validation Dice: n/a (no foreground in the validation masks or predictions)"
    return f"Validation Dice: {dice:.4f}  IoU: {iou:.4f}"


def evaluate_checkpoint(run: Any, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Dice/IoU of `run.checkpoint` on the validation split of `run.data` -> eval_metrics.json.

    Args:
        run: a `zoo.config.RunConfig` with `checkpoint` set.
        run_dir: where eval_metrics.json is written.

    Raises:
        ModelFileError: the checkpoint does not fit the data (checked before the data loads).
        EvaluationError: the data has no validation samples.
    """
    from zoo.data import build_datasets
    from zoo.outputs import write_json
    from zoo.saving import load_segmentation_model

    model = load_segmentation_model(run.checkpoint)
    check_model_fits_data(model, run.data.num_classes, 3, run.checkpoint)
    data = run.data
    if data.image_size is None:  # `image_size: null`: the size the model was trained at
        import dataclasses

        trained = (getattr(model, "metadata", None) or {}).get("image_size")
        data = dataclasses.replace(data, image_size=list(trained) if trained else None)
    bundle = build_datasets(data, global_batch_size=data.batch_size, seed=run.seed)
    info = bundle.info
    if info.val_size == 0:
        raise EvaluationError(
            f"data '{info.name}' has no validation samples (data.val_ratio=0, or an empty val/ "
            "folder): nothing to evaluate; give it a validation split"
        )
    results: dict[str, Any] = {
        f"val_{k}": v
        for k, v in evaluate_model(model, bundle.val, info.num_classes, info.ignore_index).items()
    }
    results["checkpoint"] = str(run.checkpoint)
    write_json(Path(run_dir) / "eval_metrics.json", results)
    print(summary(results))
    return results
