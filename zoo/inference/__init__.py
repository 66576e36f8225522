"""Inference on images of any size: sliding windows, blending, test-time augmentation.

    import zoo.inference as inf
    probs = inf.predict(model, image, tile=512, overlap=0.5, blend="gaussian", tta="flip")
    mask = inf.to_mask(probs, inf.model_mode(model), inf.mask_threshold(model))

`TiledPredictor` keeps the compiled step between images and streams rows (`strips`) so that
memory depends on the tile and batch size, not the image size; `evaluate` scores native-size
(image, mask) pairs with a streaming confusion matrix; `FilePredictor` writes masks,
probability maps and overlays of image files strip by strip (what `python -m zoo.predict`
runs, with options checked by `check_options`); images are read by `zoo.data.io.read_pixels`
(also `zoo.inference.io.read_image`) and `zoo.inference.writers` writes in strips or tiles.
See docs/inference.md.
"""

from zoo.inference import io, writers
from zoo.inference.api import predict
from zoo.inference.evaluate import evaluate, folder_eval_pairs, read_eval_pair
from zoo.inference.files import FilePredictor
from zoo.inference.masks import mask_threshold, to_mask
from zoo.inference.predictor import OUTPUTS, TiledPredictor
from zoo.inference.receptive import has_global_context, receptive_field, receptive_overlap
from zoo.inference.scale import input_scale_from_sizes
from zoo.inference.settings import PredictOptions, check_options
from zoo.inference.tiling import BLENDS, tile_starts
from zoo.inference.tta import TTA_MODES
from zoo.models.base import model_mode

__all__ = [
    "BLENDS",
    "OUTPUTS",
    "TTA_MODES",
    "FilePredictor",
    "PredictOptions",
    "TiledPredictor",
    "check_options",
    "evaluate",
    "folder_eval_pairs",
    "has_global_context",
    "io",
    "input_scale_from_sizes",
    "mask_threshold",
    "model_mode",
    "predict",
    "read_eval_pair",
    "receptive_field",
    "receptive_overlap",
    "tile_starts",
    "to_mask",
    "writers",
]
