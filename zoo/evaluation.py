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
    model: Any,
    num_classes: int,
    channels: int,
    source: str | os.PathLike,
    data_mode: str | None = None,
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
            f"{source} takes images with {expected} channel(s) but the data has "
            f"data.channels={channels}: set data.channels={expected}"
        )
    mode = model_mode(model)
    if data_mode is None:
        data_mode = "binary" if int(num_classes) == 1 else "multiclass"
    if mode != data_mode:
        raise ModelFileError(
            f"{source} is a {mode} model but the data is {data_mode} (num_classes="
            f"{num_classes}): set data.mode={mode}, or evaluate it on the data it was trained for"
        )


def evaluate_model(
    model: Any,
    dataset: Any,
    num_classes: int,
    ignore_index: int | None,
    steps: int | None = None,
    mode: str | None = None,
    class_names: Any = None,
    background_class: int | None = None,
) -> dict[str, float]:
    """Exact Dice/IoU (mean and per class) of an inference model over a dataset of dicts.

    A class absent from both truth and prediction scores NaN (never 1; see zoo.metrics).
    `mode` "multilabel": per label (`dice_<label name>`, from `class_names`) and the mean;
    None: the model's own (`model_mode`). `background_class`: multiclass, the class left out
    of the mean.

    Raises:
        EvaluationError: no pixel was evaluated (an empty dataset, or only ignored pixels).
    """
    multilabel = (mode or model_mode(model)) == "multilabel"
    names = list(class_names) if multilabel and class_names is not None else None
    cm = ConfusionMatrix(
        num_classes, ignore_index, per_class=True, multilabel=multilabel, class_names=names,
        background_class=None if multilabel else background_class,
    )  # fmt: skip
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
    text = f"Validation Dice: {dice:.4f}  IoU: {iou:.4f}"
    labels = results.get("labels")
    if labels:  # multilabel: each label's Dice (the keys use `zoo.metrics.label_keys`)
        from zoo.metrics import label_keys

        per = [results.get(f"{prefix}dice_{k}") for k in label_keys(labels)]
        text += "  per label: " + ", ".join(
            f"{name} {v:.4f}" for name, v in zip(labels, per) if isinstance(v, float)
        )
    return text


def _no_validation(name: str) -> EvaluationError:
    return EvaluationError(
        f"data '{name}' has no validation samples (data.val_ratio=0, or an empty val/ "
        "folder): nothing to evaluate; give it a validation split"
    )


def full_resolution_scores(
    model: Any, data_cfg: Any, predict_cfg: Any = None, strategy: Any = None
) -> dict[str, Any] | None:
    """Dice/IoU of `model` on the validation files of folder data, each at its native size.

    Every validation image is read as stored (memory-mapped where the format allows),
    predicted by the tiled predictor with the `predict` group's options (tile, overlap,
    blend, batch size, TTA, threshold; the model's `input_scale` resamples it to the
    training scale) and scored strip by strip against its mask, with the dataset's mask rules
    and `ignore_index` (`zoo.inference.evaluate`).

    Args:
        model: the model to score.
        data_cfg: a folder data config; its split gives the validation files.
        predict_cfg: a `PredictConfig` (or None: the defaults).
        strategy: spreads each step's tiles over its replicas; only the chief gets scores.

    Returns:
        ``{"val_dice", "val_iou", "val_dice_<k>", ..., "val_images", "scored_at":
        "full_resolution"}`` (with ``"skipped"`` when `data.skip_corrupt` passed files over);
        None on non-chief workers.

    Raises:
        EvaluationError: no validation files, or no pixel counted.
    """
    from zoo.config import PredictConfig, predict_options
    from zoo.data.folder import split_pairs
    from zoo.inference import evaluate, folder_eval_pairs
    from zoo.inference.settings import check_tile_for

    options = predict_options(predict_cfg if predict_cfg is not None else PredictConfig())
    check_tile_for(model, options, lambda key: f"predict.{key}")
    if not split_pairs(data_cfg)[1]:
        raise _no_validation(data_cfg.name)
    skipped: list[str] = []
    scores = evaluate(
        model,
        folder_eval_pairs(data_cfg, "val", skipped),
        ignore_index=data_cfg.ignore_index,
        threshold=options.threshold,
        strategy=strategy,
        **options.predictor_kwargs(),
    )
    if scores is None:
        return None
    results: dict[str, Any] = {
        f"val_{k}": v for k, v in scores.items() if k not in ("images", "scored_at")
    }
    results.update(val_images=scores["images"], scored_at="full_resolution")
    if skipped:
        results["skipped"] = skipped
    return results


def final_scores(model: Any, run: Any, bundle: Any) -> dict[str, Any]:
    """The end-of-training scores of `model` as `trainer.final_eval` asks (chief only).

    "image_size": the validation tensors (resized or cropped like training, as every epoch's
    val_dice); "full_resolution": every validation file at its native size, tiled
    (`full_resolution_scores`, on this process: no collective of the training strategy).
    """
    t, info = run.trainer, bundle.info
    if t.final_eval == "full_resolution":
        return with_labels(full_resolution_scores(model, run.data, run.predict), model)
    scores = evaluate_model(model, bundle.val, info.num_classes, info.ignore_index,
                            t.validation_steps, info.mode, info.class_names,
                            info.background_class)  # fmt: skip
    results = {**{f"val_{k}": v for k, v in scores.items()}, "scored_at": "image_size"}
    return with_labels(results, model)


def _background(info: Any, model: Any) -> int | None:
    """The data's background class, else the one the model was trained with (a recipe's)."""
    if info.background_class is not None or info.mode != "multiclass":
        return info.background_class
    bg = (getattr(model, "metadata", None) or {}).get("background_class")
    return bg if isinstance(bg, int) and 0 <= bg < info.num_classes else None


def with_labels(results: dict[str, Any], model: Any) -> dict[str, Any]:
    """Multilabel models: `labels`, the label names whose `val_dice_<label>` the results hold."""
    meta = getattr(model, "metadata", None) or {}
    if results and meta.get("mode") == "multilabel" and meta.get("class_names"):
        results["labels"] = list(meta["class_names"])
    return results


def adopt_model_mode(model: Any, data: Any) -> None:
    """Folder data with `data.mode: auto` scored by a multilabel model reads its masks as
    labels, in the model's label order: the saved model says how its logits become masks, so
    `data.mode` need not be repeated."""
    meta = getattr(model, "metadata", None) or {}
    if getattr(data, "mode", None) != "auto" or meta.get("mode") != "multilabel":
        return
    from zoo.data.multilabel import resolve

    data.mode = "multilabel"
    if data.class_names is None and meta.get("class_names"):
        data.class_names = list(meta["class_names"])
    resolve(data)


def evaluate_checkpoint(run: Any, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Dice/IoU of `run.checkpoint` on the validation split of `run.data` -> eval_metrics.json.

    Folder data is scored at full resolution: every validation file at its native size,
    predicted with the `predict` options, tiles spread over the replicas of `run.strategy`
    (`full_resolution_scores`). Other data (shapes, pets) is scored on its validation tensors
    at `data.image_size`. `"scored_at"` in the results says which.

    Args:
        run: a `zoo.config.RunConfig` with `checkpoint` set.
        run_dir: where eval_metrics.json is written (by the chief).

    Raises:
        ModelFileError: the checkpoint does not fit the data (checked before the data loads).
        EvaluationError: the data has no validation samples.
    """
    from zoo.data.config import FolderDataConfig, data_mode
    from zoo.outputs import write_json
    from zoo.saving import load_segmentation_model

    if isinstance(run.data, FolderDataConfig):
        from zoo.distribute import build_strategy

        strategy = build_strategy(run.strategy)
        with strategy.scope():
            model = load_segmentation_model(run.checkpoint)
        adopt_model_mode(model, run.data)
        check_model_fits_data(
            model, run.data.num_classes, run.data.channels, run.checkpoint, data_mode(run.data)
        )
        results = full_resolution_scores(model, run.data, run.predict, strategy)
        if results is None:  # a non-chief worker: the chief writes the scores
            return {}
    else:
        from zoo.data import build_datasets

        model = load_segmentation_model(run.checkpoint)
        check_model_fits_data(
            model, run.data.num_classes, run.data.channels, run.checkpoint, data_mode(run.data)
        )
        bundle = build_datasets(run.data, global_batch_size=run.data.batch_size, seed=run.seed)
        info = bundle.info
        if info.val_size == 0:
            raise _no_validation(info.name)
        scores = evaluate_model(
            model, bundle.val, info.num_classes, info.ignore_index, None, info.mode,
            info.class_names, _background(info, model),
        )  # fmt: skip
        results = {f"val_{k}": v for k, v in scores.items()}
        results["scored_at"] = "image_size"
    with_labels(results, model)
    results["checkpoint"] = str(run.checkpoint)
    write_json(Path(run_dir) / "eval_metrics.json", results)
    print(summary(results))
    return results
