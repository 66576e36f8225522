"""The quality table's plain baseline and its native-resolution evaluation.

The baseline is what a practitioner writes in an afternoon: a textbook 4-level U-Net (two 3x3
conv-BN-ReLU per level, 16-32-64-128 filters, a 256-filter bottleneck, transposed-conv
upsampling), BCE + soft Dice, Adam at 1e-3, random horizontal and vertical flips, whole images at
native resolution (padded to a multiple of 16), BN with PyTorch's momentum, trained until the
time budget is spent. Like the
app it validates about 10 times and keeps the best weights, so all recipes are judged alike.

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


def load_split(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images (float32 HxWx3 in [0, 1]) and binary masks of root/split, with the app's readers."""
    from zoo.data import folder
    from zoo.data.io import read_image, read_mask

    images, masks = [], []
    for image_path, mask_path in folder.find_pairs(root / split):
        images.append(read_image(image_path))
        raw = read_mask(mask_path)
        masks.append(((raw == 255) | (raw == 1)).astype(np.int32) if raw.max() > 1 else raw)
    return images, masks


def pooled_dice(preds: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Foreground Dice over all pixels of all images (as the app's ConfusionMatrix)."""
    tp = sum(float(np.sum((p > 0) & (m > 0))) for p, m in zip(preds, masks))
    fp = sum(float(np.sum((p > 0) & (m == 0))) for p, m in zip(preds, masks))
    fn = sum(float(np.sum((p == 0) & (m > 0))) for p, m in zip(preds, masks))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _pad(x: np.ndarray, d: int) -> np.ndarray:
    h, w = x.shape[:2]
    ph, pw = (-h) % d, (-w) % d
    return np.pad(x, ((0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 2))


def evaluate_native(model: Any, root: Path, resize_to: list[int] | None = None) -> float:
    """Foreground Dice of `model` (logits) on root/val at the stored resolution.

    A model trained on resampled images (`data.resample`: its `metadata["input_scale"]` is not
    1) is run as a user runs it, through `zoo.inference.predict`, which resamples each image
    to that scale and the logits back; `resize_to` resizes the input to a fixed size instead.
    """
    import tensorflow as tf

    images, masks = load_split(root, "val")
    preds = []
    scale = (getattr(model, "metadata", None) or {}).get("input_scale", [1.0, 1.0])
    if resize_to is None and list(scale) != [1.0, 1.0]:
        from zoo.inference import predict

        for image in images:
            logits = predict(model, image, tile=None, output="logits")
            preds.append((logits[..., 0] > 0).astype(np.int32))
        return pooled_dice(preds, masks)
    for image, mask in zip(images, masks):
        h, w = mask.shape
        x = tf.convert_to_tensor(image[None])
        if resize_to is not None:
            x = tf.image.resize(x, resize_to, method="bilinear")
        logits = model(x, training=False)
        logits = tf.image.resize(tf.cast(logits, tf.float32), (h, w), method="bilinear")
        preds.append((logits.numpy()[0, ..., 0] > 0).astype(np.int32))
    return pooled_dice(preds, masks)


def textbook_unet(base: int = 16, levels: int = 4) -> Any:
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
    logits = layers.Conv2D(1, 1, name="head", dtype="float32")(x)
    return keras.Model(inputs, logits, name="textbook_unet")


def run_baseline(root: Path, budget_s: float, seed: int, batch: int = 8) -> dict[str, Any]:
    """Train the textbook U-Net for `budget_s` seconds of training loop; best-on-val Dice."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    images, masks = load_split(root, "train")
    x = np.stack([_pad(i, 16) for i in images]).astype(np.float32)
    y = np.stack([_pad(m, 16) for m in masks]).astype(np.float32)[..., None]
    batch = max(1, min(batch, len(x) // 2 or 1))
    model = textbook_unet()
    opt = keras.optimizers.Adam(1e-3)
    val_images, val_masks = load_split(root, "val")
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
            bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(yb, logits))
            p = tf.sigmoid(logits)
            dice = 1 - (2 * tf.reduce_sum(p * yb) + 1) / (tf.reduce_sum(p) + tf.reduce_sum(yb) + 1)
            loss = bce + dice
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    forward = tf.function(lambda xb: model(xb, training=False), reduce_retracing=True)

    def validate() -> float:
        preds = []
        for xi, m in zip(vx, val_masks):
            logits = forward(xi).numpy()[0, : m.shape[0], : m.shape[1], 0]
            preds.append((logits > 0).astype(np.int32))
        return pooled_dice(preds, val_masks)

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
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    result = run_baseline(args.root, args.budget, args.seed)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
