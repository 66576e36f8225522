"""`predict`: one call for one image, with the compiled predictor cached on the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from zoo.inference.predictor import Progress, TiledPredictor
from zoo.inference.tta import resolve_tta


def _cached(model: Any, settings: dict[str, Any]) -> TiledPredictor:
    """One predictor per model and settings, kept on the model (so it compiles once)."""
    cache = model.__dict__.get("_zoo_tiled_predictors")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_zoo_tiled_predictors", cache)  # bypass Keras tracking
    key = repr(sorted((k, v if k != "strategy" else id(v)) for k, v in settings.items()))
    if key not in cache:
        cache[key] = TiledPredictor(model, **settings)
    return cache[key]


def predict(
    model: Any,
    image: Any,
    tile: int | tuple[int, int] | None = 512,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 8,
    tta: str | None = None,
    output: str = "probabilities",
    scale: float | tuple[float, float] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    out: np.ndarray | None = None,
    progress: Progress | None = None,
) -> np.ndarray | None:
    """Probabilities (or logits) of `model` for one image of any size: (H, W, K) float32.

    The sliding-window prediction of `TiledPredictor` (arguments documented there); the
    predictor is cached on the model per settings, so calling this in a loop compiles once.

    Example:

    ```python
    probs = zoo.inference.predict(model, image, tile=512, overlap=0.5, tta="flip")
    mask = zoo.inference.to_mask(probs, zoo.models.base.model_mode(model))
    ```
    """
    settings = dict(
        tile=tile,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        tta=resolve_tta(model, tta, output),  # resolved here: the cache key names the views
        output=output,
        scale=scale,
        strategy=strategy,
    )
    if isinstance(settings["tile"], list):
        settings["tile"] = tuple(settings["tile"])
    if isinstance(settings["scale"], list):
        settings["scale"] = tuple(settings["scale"])
    return _cached(model, settings).predict(image, out=out, progress=progress)
