"""Full-resolution evaluation: every (image, mask) pair scored at its native size.

The tiled predictor streams rows of probabilities; each strip becomes a mask strip and goes
straight into a `zoo.metrics.ConfusionMatrix` with the matching rows of the ground truth, so
no full-size probability array exists and the scores (Dice, IoU, per class) are exact over
the whole set, with the same conventions as training-time validation: binary scores are the
foreground's, multiclass means skip classes absent from both truth and prediction, and pixels
equal to `ignore_index` are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConfigError, DataError, EvaluationError
from zoo.inference.masks import mask_threshold, to_mask
from zoo.inference.predictor import Progress, TiledPredictor

log = logging.getLogger(__name__)


def _pseudo_logits(pred: np.ndarray, k: int) -> np.ndarray:
    """Logits whose decision (logit > 0, or arg-max) is `pred`: ConfusionMatrix's input."""
    if k == 1:
        return np.where(pred[..., None] > 0, 1.0, -1.0).astype(np.float32)
    return np.eye(k, dtype=np.float32)[pred]


def evaluate(
    model: Any,
    pairs: Iterable[tuple[Any, Any]],
    ignore_index: int | None = None,
    threshold: Any = None,
    progress: Progress | None = None,
    **predict_kwargs: Any,
) -> dict[str, Any] | None:
    """Dice and IoU of `model` on native-size (image, mask) pairs, predicted tile by tile.

    Args:
        model: a segmentation model (its `metadata` gives the mode and threshold).
        pairs: (image, mask) arrays; masks are (H, W) class ids (binary: 0/1), or (H, W, L)
            0/1 labels for multilabel models, with the image's height and width.
        ignore_index: mask value excluded from the counts; None reads
            `model.metadata["ignore_index"]` (none when absent).
        threshold: probability cut for binary/multilabel masks (default: metadata or 0.5).
        progress: forwarded to `TiledPredictor.strips` for every image.
        **predict_kwargs: `TiledPredictor` settings (tile, overlap, blend, batch_size, tta,
            scale, strategy).

    Returns:
        ``{"dice", "iou", "dice_<k>", "iou_<k>", "images", "scored_at": "full_resolution"}``
        (per class: multiclass classes 0..K-1; binary 0 = background, 1 = foreground;
        multilabel: `dice_<label name>` per label, names from the model's metadata, and the
        mean over the labels that occur). None on non-chief workers of a
        multi-worker strategy (every worker must call it: the steps are collective).

    Example:

    ```python
    pairs = zoo.inference.folder_eval_pairs(cfg.data)
    scores = zoo.inference.evaluate(model, pairs, tile=512, overlap=0.5)
    ```
    """
    from zoo.metrics import ConfusionMatrix

    predictor = TiledPredictor(model, output="probabilities", **predict_kwargs)
    if ignore_index is None:
        ignore_index = getattr(model, "metadata", {}).get("ignore_index")
    threshold = mask_threshold(model, threshold)
    k, mode = predictor.num_outputs, predictor.mode
    multilabel = mode == "multilabel"
    names = getattr(model, "metadata", {}).get("class_names") if multilabel else None
    background = getattr(model, "metadata", {}).get("background_class")  # trained with
    matrix = ConfusionMatrix(
        num_classes=1 if mode == "binary" else k, ignore_index=ignore_index, per_class=True,
        multilabel=multilabel, class_names=names if names and len(names) == k else None,
        background_class=background if mode == "multiclass" and background is not None
        and 0 <= background < k else None,
    )  # fmt: skip
    images = 0
    for index, (image, mask) in enumerate(pairs):
        mask = np.asarray(mask)
        want = (image.shape[0], image.shape[1]) + ((k,) if mode == "multilabel" else ())
        if mask.shape != want:
            raise DataError(
                f"Pair {index}: the mask has shape {mask.shape} but the image is "
                f"{image.shape[0]}x{image.shape[1]}; expected a mask of shape {want}"
            )
        for row, rows in predictor.strips(image, progress):
            pred = to_mask(rows, mode, threshold)
            truth = mask[row : row + rows.shape[0]]
            if multilabel:  # per-label decisions: +-1 pseudo logits, label by label
                logits = np.where(pred > 0, 1.0, -1.0).astype(np.float32)
            else:
                logits = _pseudo_logits(pred, matrix.num_classes)
            matrix.update_state(truth[None], logits[None])
        images += 1
    if not predictor.chief:
        return None
    if float(matrix.total()) == 0:
        raise EvaluationError(
            "The evaluation counted no pixels (no validation images, or every pixel ignored): "
            "there is nothing to score"
        )
    results: dict[str, Any] = {"images": images, "scored_at": "full_resolution"}
    results.update({key: float(v) for key, v in matrix.result().items()})
    return results


def read_eval_pair(image_path: Any, mask_path: Any, data_cfg: Any) -> tuple[Any, np.ndarray]:
    """One folder-dataset pair at native size: the raw image and the mapped class mask.

    The image is read by `zoo.data.io.read_pixels` (TIFFs memory-mapped, the intensity rule
    checked); the mask goes
    through the folder dataset's own value rules (`zoo.data.folder.map_mask`: 0/255 binary
    masks, range checks, ignore_index), without any resizing.
    """
    from zoo.data.colors import read_class_mask
    from zoo.data.config import parse_data_config
    from zoo.data.folder import map_mask
    from zoo.data.io import read_pixels

    c = data_cfg if hasattr(data_cfg, "mask_type") else parse_data_config(data_cfg)
    image = read_pixels(image_path)
    if c.mode == "multilabel":  # (H, W, K) 0/1 labels (zoo.data.multilabel)
        from zoo.data.multilabel import read_labels

        labels = read_labels(mask_path, c)
        if tuple(image.shape[:2]) != labels.shape[:2]:
            raise DataError(
                f"Image '{image_path}' is {image.shape[0]}x{image.shape[1]} but its mask "
                f"'{labels.source}' is {labels.shape[0]}x{labels.shape[1]} (HxW); they must match"
            )
        return image, labels.labels
    raw = read_class_mask(mask_path, c)
    if tuple(image.shape[:2]) != raw.shape:
        raise DataError(
            f"Image '{image_path}' is {image.shape[0]}x{image.shape[1]} but its mask "
            f"'{mask_path}' is {raw.shape[0]}x{raw.shape[1]} (HxW); they must match"
        )
    mask, _ = map_mask(raw, Path(mask_path), c)
    return image, mask


def folder_eval_pairs(
    data_cfg: Any, split: str = "val", skipped: list[str] | None = None
) -> Iterator[tuple[Any, np.ndarray]]:
    """Native-size (image, mask) pairs of a folder dataset's split, read one at a time.

    The split is the training split (`zoo.data.folder.split_pairs`). With
    ``data.skip_corrupt`` unreadable files are logged, appended to `skipped` and passed
    over; otherwise they raise, naming the file.
    """
    from zoo.data.config import FolderDataConfig, parse_data_config
    from zoo.data.folder import split_pairs
    from zoo.data.io import UnreadableFileError

    c = parse_data_config(data_cfg)
    if not isinstance(c, FolderDataConfig):
        raise ConfigError(
            f"Full-resolution evaluation reads files: it needs data=folder, not data.name="
            f"{c.name!r}"
        )
    if split not in ("train", "val"):
        raise ValueError(
            f"Invalid value for argument `split`: expected 'train' or 'val'. "
            f"Received: split={split!r}"
        )
    train, val = split_pairs(c)
    for image_path, mask_path in train if split == "train" else val:
        try:
            yield read_eval_pair(image_path, mask_path, c)
        except UnreadableFileError as e:
            if not c.skip_corrupt:
                raise
            log.warning("Skipping unreadable sample: %s", e)
            if skipped is not None:
                skipped.append(str(image_path))
