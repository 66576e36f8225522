"""Verification of an exported artifact: probe images, calibration images, the comparison.

`zoo.export.export` runs every artifact on `probe_images` and accepts it when `compare` finds
no problem against `zoo.export.graph.reference_outputs` of the Keras model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from zoo.export.graph import OUTPUT_NAMES, Signature

# Verification on the probe images. Float32 formats: max |logits - Keras| / max(1, max |Keras|).
# Quantized ones: root-mean-square error relative to the logits' RMS, and mask agreement.
FLOAT_TOLERANCE = {"saved_model": 1e-5, "onnx": 1e-4, "litert": 1e-4}
QUANT_TOLERANCE = {"float16": (0.02, 0.99), "int8": (0.25, 0.95), "int8-full": (0.35, 0.9)}
# Quantized masks are compared where the probability is this far from the threshold.
QUANT_MARGIN = 0.1


def compare(
    outputs: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    sig: Signature,
    fmt: str,
    quantize: str | None,
) -> tuple[float, float, str | None]:
    """(logits error, mask agreement, the first problem or None) of an artifact's outputs."""
    if sorted(outputs) != sorted(OUTPUT_NAMES):
        return np.inf, 0.0, f"outputs {sorted(outputs)}, expected {sorted(OUTPUT_NAMES)}"
    for name in OUTPUT_NAMES:
        got, want = np.asarray(outputs[name]), expected[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            return (
                np.inf,
                0.0,
                f"output {name!r} is {got.dtype}{list(got.shape)}, "
                f"expected {want.dtype}{list(want.shape)}",
            )
    logits, want = np.asarray(outputs["logits"], np.float64), expected["logits"].astype(np.float64)
    if not np.all(np.isfinite(logits)):
        return np.inf, 0.0, "non-finite logits"
    agreement = float(np.mean(outputs["mask"] == expected["mask"]))
    if quantize is None:
        error = float(np.max(np.abs(logits - want)) / max(1.0, float(np.max(np.abs(want)))))
        if error > FLOAT_TOLERANCE[fmt]:
            return (
                error,
                agreement,
                f"logits differ from Keras by {error:.3g} (> {FLOAT_TOLERANCE[fmt]})",
            )
        clear = _clearly_decided(expected, sig)
        if np.any((outputs["mask"] != expected["mask"])[clear]):
            return error, agreement, "mask differs from Keras where the logits agree"
        return error, agreement, None
    scale = max(float(np.sqrt(np.mean(want**2))), 1e-6)
    error = float(np.sqrt(np.mean((logits - want) ** 2)) / scale)
    max_error, min_agreement = QUANT_TOLERANCE[quantize]
    if error > max_error:
        return error, agreement, f"logits RMS error {error:.3g} of their RMS (> {max_error})"
    # Quantization may flip pixels near the threshold; those decided by a margin must agree
    # (an untrained model, all logits near 0, has none: then the RMS error decides).
    clear = _clearly_decided(expected, sig, margin=QUANT_MARGIN)
    if clear.any():
        clear_agreement = float(np.mean((outputs["mask"] == expected["mask"])[clear]))
        if clear_agreement < min_agreement:
            return (
                error,
                agreement,
                f"mask agrees on {clear_agreement:.3f} of the clearly decided pixels "
                f"(< {min_agreement})",
            )
    return error, agreement, None


def _clearly_decided(
    expected: Mapping[str, np.ndarray], sig: Signature, margin: float = 1e-4
) -> np.ndarray:
    """Pixels whose mask no rounding can flip (shaped like the mask): the probability is
    `margin` away from the threshold, or the top class `margin` above the second."""
    probabilities = expected["probabilities"]
    if sig.mode == "multiclass":
        top2 = np.sort(probabilities, axis=-1)[..., -2:]
        return (top2[..., 1] - top2[..., 0]) > margin
    clear = np.abs(probabilities - sig.threshold) > margin
    return clear[..., 0] if sig.mode == "binary" else clear


def probe_images(sig: Signature, calibration: np.ndarray | None = None) -> np.ndarray:
    """Images the artifact is verified on: calibration images when there are some, else
    built-in shapes images; at a dynamic size a batch of 2 whose size needs padding."""
    if sig.input_size is not None:
        size, batch = sig.input_size, sig.batch_size or 2
    else:
        d = sig.divisor
        size, batch = (2 * d + 3, 3 * d - 5 if d > 5 else 3 * d + 1), 2
    if calibration is not None and tuple(calibration.shape[1:3]) == tuple(size):
        images = calibration[:batch]
    else:
        from zoo.data import generate_shapes

        images = generate_shapes(batch, size, seed=20170, split="val").images
        images = images.astype(np.float32) / 255.0
    channels = sig.channels
    if images.shape[-1] != channels:
        images = np.resize(images.transpose(3, 0, 1, 2), (channels, *images.shape[:3]))
        images = images.transpose(1, 2, 3, 0)
    if sig.input_dtype == "uint8":
        return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    return images.astype(np.float32)


def representative_images(data: Any, sig: Signature, samples: int, what: str) -> np.ndarray:
    """float32 [0, 1] images (N, H, W, C) at the export size for int8-full calibration."""
    import tensorflow as tf

    if data is None:
        raise ValueError(
            f"Invalid value for argument `representative_data`: int8-full ({what}) calibrates "
            "on training images: pass a data config (--data conf/data/NAME.yaml) or images. "
            "Received: representative_data=None"
        )
    if isinstance(data, (str, os.PathLike)) or isinstance(data, Mapping):
        images = _config_images(data, samples)
    else:
        arrays = [np.asarray(a) for a in (data if isinstance(data, Iterable) else [data])]
        images = np.concatenate([a if a.ndim == 4 else a[None] for a in arrays])[:samples]
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if tuple(images.shape[1:3]) != tuple(sig.input_size):
        images = tf.image.resize(images, sig.input_size, method="bilinear").numpy()
    return images


def _config_images(data: Any, samples: int) -> np.ndarray:
    from omegaconf import OmegaConf

    from zoo.data import build_datasets

    if isinstance(data, (str, os.PathLike)):
        cfg = OmegaConf.to_container(OmegaConf.load(str(data)), resolve=True)
        cfg = cfg.get("data", cfg)  # a run's config.yaml or a conf/data/NAME.yaml
        cfg = {k: v for k, v in cfg.items() if k != "defaults"}
    else:
        cfg = dict(data)
    batch = max(1, min(samples, 16))
    bundle = build_datasets(cfg, global_batch_size=batch, seed=0)
    images = []
    for example in bundle.train.take(-(-samples // batch)):
        images.append(example["image"].numpy())
    return np.concatenate(images)[:samples]
