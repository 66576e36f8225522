"""The quality table's plain baseline and its native-resolution evaluation.

The baseline is what a practitioner writes in an afternoon: a textbook 4-level U-Net (two 3x3
conv-BN-ReLU per level, 16-32-64-128 filters, a 256-filter bottleneck, transposed-conv
upsampling), BCE + soft Dice (multi-class: softmax CE + soft Dice), Adam at 1e-3, random
horizontal and vertical flips, whole images at native resolution (padded to a multiple of 16),
BN with PyTorch's momentum, trained until the time budget is spent. Like the app it validates
about 10 times and keeps the best weights, so all recipes are judged alike. TensorFlow starts
as in train.py (`import zoo` first: oneDNN kernels on x86), so recipes differ in nothing else.

`evaluate_native` scores any saved model on the validation images at their stored resolution
(foreground Dice pooled over all validation pixels), whatever input size the model was trained
on: images are resized to that size for the forward pass when the recipe resized them, and the
logits are resized back. This keeps recipes that resize (the previous default) comparable with
recipes that do not.

    python -m bench.quality_baseline --root DATA --budget 60 --seed 0 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_split(
    root: Path, split: str, num_classes: int = 1
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images (float32 HxWx3 in [0, 1]) and masks of root/split, with the app's readers:
    binary masks as 0/1 (0/255 mapped), class-id masks (`num_classes` > 1) as stored."""
    from zoo.data import folder
    from zoo.data.io import read_image, read_mask

    images, masks = [], []
    for image_path, mask_path in folder.find_pairs(root / split):
        images.append(read_image(image_path))
        raw = read_mask(mask_path)
        if num_classes == 1 and raw.max() > 1:
            raw = ((raw == 255) | (raw == 1)).astype(np.int32)
        masks.append(raw)
    return images, masks


def pooled_dice(preds: list[np.ndarray], masks: list[np.ndarray], num_classes: int = 1) -> float:
    """Dice over all pixels of all images (as the app's ConfusionMatrix): the foreground's for
    binary masks, else the mean over the foreground classes 1..K-1 (class 0 is background; a
    class absent from both masks and predictions is left out)."""
    scores = []
    for k in range(1, max(num_classes, 2)):
        on = (lambda a: a > 0) if num_classes == 1 else (lambda a, k=k: a == k)
        tp = sum(float(np.sum(on(p) & on(m))) for p, m in zip(preds, masks))
        fp = sum(float(np.sum(on(p) & ~on(m))) for p, m in zip(preds, masks))
        fn = sum(float(np.sum(~on(p) & on(m))) for p, m in zip(preds, masks))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 1.0


def to_labels(logits: np.ndarray) -> np.ndarray:
    """(H, W, K) logits -> (H, W) int32 predictions: logit > 0 (K = 1) or the arg-max class."""
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(np.int32)
    return np.argmax(logits, axis=-1).astype(np.int32)


def _pad(x: np.ndarray, d: int) -> np.ndarray:
    h, w = x.shape[:2]
    ph, pw = (-h) % d, (-w) % d
    return np.pad(x, ((0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 2))


def evaluate_native(
    model: Any, root: Path, resize_to: list[int] | None = None, tta: str | None = None
) -> float:
    """Foreground Dice of `model` (logits) on root/val at the stored resolution (multi-class
    models: the mean over the foreground classes, `pooled_dice`).

    A model trained on resampled images (`data.resample`: its `metadata["input_scale"]` is not
    1) or recording a test-time augmentation (`metadata["tta"]`, as `recipe=auto` does) is
    run as a user runs it, through `zoo.inference.predict`, which resamples each image to that
    scale and the probabilities back and averages the model's TTA views; `resize_to` resizes
    the input to a fixed size instead. `tta`: the views to average (None: the model's own).
    """
    import tensorflow as tf

    from zoo.inference.tta import model_tta

    k = int(model.outputs[0].shape[-1])
    images, masks = load_split(root, "val", k)
    preds = []
    scale = (getattr(model, "metadata", None) or {}).get("input_scale", [1.0, 1.0])
    tta = model_tta(model) if tta is None else tta
    if resize_to is None and (list(scale) != [1.0, 1.0] or tta != "none"):
        from zoo.inference import predict

        for image in images:
            probs = predict(model, image, tile=None, tta=tta)  # at the model's own scale
            preds.append((probs[..., 0] > 0.5).astype(np.int32) if k == 1 else to_labels(probs))
        return pooled_dice(preds, masks, k)
    for image, mask in zip(images, masks):
        h, w = mask.shape
        x = tf.convert_to_tensor(image[None])
        if resize_to is not None:
            x = tf.image.resize(x, resize_to, method="bilinear")
        logits = model(x, training=False)
        logits = tf.image.resize(tf.cast(logits, tf.float32), (h, w), method="bilinear")
        preds.append(to_labels(logits.numpy()[0]))
    return pooled_dice(preds, masks, k)


def textbook_unet(base: int = 16, levels: int = 4, num_classes: int = 1) -> Any:
    import keras
    from keras import layers

    def block(x, f, name):
        for i in (1, 2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            # PyTorch's BN momentum (0.1 there = 0.9 here), as most textbook U-Nets use: Keras'
            # 0.99 leaves the moving statistics unusable after the few hundred steps of a
            # CPU-minutes run (measured: Dice 0.3 after 40 steps with 0.99).
            x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((None, None, 3))
    x, skips = inputs, []
    for i in range(levels):
        x = block(x, base * 2**i, f"down{i}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = block(x, base * 2**levels, "bottleneck")
    for i in reversed(range(levels)):
        x = layers.Conv2DTranspose(base * 2**i, 2, strides=2, name=f"up{i}")(x)
        x = layers.Concatenate(name=f"cat{i}")([x, skips[i]])
        x = block(x, base * 2**i, f"dec{i}")
    logits = layers.Conv2D(num_classes, 1, name="head", dtype="float32")(x)
    return keras.Model(inputs, logits, name="textbook_unet")


def run_baseline(
    root: Path, budget_s: float, seed: int, batch: int = 8, num_classes: int = 1
) -> dict[str, Any]:
    """Train the textbook U-Net for `budget_s` seconds of training loop; best-on-val Dice.
    Multi-class masks (`num_classes` > 1) train with softmax CE + the classes' mean soft Dice."""
    import zoo  # noqa: F401  (first: TensorFlow starts as in train.py, oneDNN on x86)

    # isort: split
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    k = int(num_classes)
    images, masks = load_split(root, "train", k)
    x = np.stack([_pad(i, 16) for i in images]).astype(np.float32)
    y = np.stack([_pad(m, 16) for m in masks])
    y = (y[..., None] if k == 1 else np.eye(k)[y]).astype(np.float32)  # one-hot classes
    batch = max(1, min(batch, len(x) // 2 or 1))
    model = textbook_unet(num_classes=k)
    opt = keras.optimizers.Adam(1e-3)
    val_images, val_masks = load_split(root, "val", k)
    vx = [_pad(i, 16)[None] for i in val_images]

    @tf.function
    def step(xb, yb):
        flip = tf.random.uniform([2]) < 0.5
        xy = tf.concat([xb, yb], -1)
        xy = tf.cond(flip[0], lambda: tf.reverse(xy, [2]), lambda: xy)
        xy = tf.cond(flip[1], lambda: tf.reverse(xy, [1]), lambda: xy)
        xb, yb = xy[..., :3], xy[..., 3:]
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            if k == 1:
                ce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(yb, logits))
                p = tf.sigmoid(logits)
            else:
                ce = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(yb, logits))
                p = tf.nn.softmax(logits)
            axes = [0, 1, 2]  # soft Dice per channel over the batch, then the channels' mean
            inter, total = tf.reduce_sum(p * yb, axes), tf.reduce_sum(p + yb, axes)
            loss = ce + 1 - tf.reduce_mean((2 * inter + 1) / (total + 1))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    forward = tf.function(lambda xb: model(xb, training=False), reduce_retracing=True)

    def validate() -> float:
        preds = []
        for xi, m in zip(vx, val_masks):
            preds.append(to_labels(forward(xi).numpy()[0, : m.shape[0], : m.shape[1]]))
        return pooled_dice(preds, val_masks, k)

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    best, best_weights, steps, curve, val_cost, step_times = -1.0, None, 0, [], 0.0, []
    next_val = budget_s / 10
    while True:
        order = rng.permutation(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            t0 = time.perf_counter()
            step(x[order[i : i + batch]], y[order[i : i + batch]])
            step_times.append(time.perf_counter() - t0)
            steps += 1
            elapsed = time.perf_counter() - start
            last = elapsed + val_cost * 1.2 >= budget_s
            if elapsed >= next_val or last:
                t0 = time.perf_counter()
                dice = validate()
                val_cost = time.perf_counter() - t0
                curve.append([steps, round(dice, 4)])
                if dice > best:
                    best, best_weights = dice, model.get_weights()
                # The next one a tenth of the budget later (the first step's tracing can
                # overrun several tenths; validating after every step would not catch up).
                next_val = time.perf_counter() - start + budget_s / 10
            if last:
                break
        else:
            continue
        break
    train_time = time.perf_counter() - start
    if best_weights is not None:
        model.set_weights(best_weights)
    return {
        "dice": round(validate(), 4),
        "train_time_s": round(train_time, 2),
        "steps": steps,
        "first_step_s": round(step_times[0], 2),
        "step_s": round(float(np.median(step_times[1:])), 3) if len(step_times) > 1 else None,
        "batch": batch,
        "params": int(model.count_params()),
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The quality table's plain U-Net baseline")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--budget", type=float, required=True, help="training seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-classes", type=int, default=1, help="1: binary, K: class-id masks")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    result = run_baseline(args.root, args.budget, args.seed, num_classes=args.num_classes)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
