"""`TiledPredictor`: sliding-window prediction of images of any size in bounded memory.

One predictor holds one compiled function per tile shape (a `tf.function` with a fixed input
signature: it traces once) and streams an image through it: tiles are cut (and resampled to
the model's scale) batch by batch, run, blended into a band of output rows, and every row is
handed out as soon as no later tile touches it. Memory therefore depends on the tile, the
batch and the image width (the band), never on the image height or area; `predict` copies
the rows into a caller-owned output (which may be a memory map) and `strips` hands them to
any consumer (mask writers, evaluators) without a full-size array at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data.io import check_intensity
from zoo.errors import ConfigError, DataError
from zoo.inference import scale as scaling
from zoo.inference.masks import _bad, mask_threshold, to_mask
from zoo.inference.tiles import cut_tile, tile_contribution
from zoo.inference.tiling import BLENDS, AxisPlan, plan_axis
from zoo.inference.tta import TRANSFORMS, forward, inverse, resolve_tta
from zoo.models.base import model_mode

OUTPUTS = ("probabilities", "logits")
Progress = Callable[[int, int], None]
# tile="auto": images up to this many training sizes per side (after scaling) run whole.
AUTO_WHOLE_FACTOR = 2


def _round_up(n: int, d: int) -> int:
    return -(-n // d) * d


class TiledPredictor:
    """Sliding-window predictor of one model with fixed settings.

    Args:
        model: a segmentation model (logits or, if built with `activation`, probabilities)
            taking (B, H, W, C) float32 images in [0, 1].
        tile: tile (height, width) or one int for square tiles, a multiple of the model's
            divisor; None predicts every image as a single tile (padded to the divisor);
            "auto" predicts an image whole when its scaled size is at most twice the
            training size (`model.metadata["image_size"]`) per side, and otherwise tiles it
            with the training size (rounded up to the divisor); whole when no training size
            is recorded.
        overlap: fraction of a tile shared with its neighbour, in [0, 1); tile starts are
            ``floor(tile * (1 - overlap))`` apart at most.
        blend: "gaussian" (nnU-Net importance weights, sigma = tile / 8), "uniform" (plain
            average) or "center" (each pixel from the tile whose center is nearest; gives the
            whole-image logits exactly when ``2 * radius + 1 <= tile - step`` for the model's
            receptive-field radius, see `receptive_overlap`).
        batch_size: tiles per replica per step.
        tta: "none", "hflip" (identity and left-right), "flip" (4 flips) or "d4" (8 rotations
            and reflections), averaged in probability space; None: the model's own
            (``metadata["tta"]``, `recipe=auto` records the flips it trained with), "none"
            when it records none or for ``output="logits"``.
        output: "probabilities" (sigmoid for binary/multilabel, softmax for multiclass) or
            "logits" (only without TTA: an average of probabilities has no logits).
        scale: model pixels per native pixel, a number or (sy, sx); None reads
            `model.metadata["input_scale"]` (1 when absent). See `zoo.inference.scale`.
        strategy: a `tf.distribute` strategy whose replicas share each step's tiles (build or
            load the model under its scope); only the chief blends and returns output.

    Example:

    ```python
    predictor = TiledPredictor(model, tile=512, overlap=0.5, tta="flip")
    for path in paths:
        probabilities = predictor.predict(zoo.inference.read_image(path))
    ```
    """

    def __init__(
        self,
        model: Any,
        tile: int | tuple[int, int] | str | None = 512,
        overlap: float = 0.5,
        blend: str = "gaussian",
        batch_size: int = 8,
        tta: str | None = None,
        output: str = "probabilities",
        scale: float | tuple[float, float] | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        self.model = model
        self.divisor = int(getattr(model, "divisor", 1) or 1)
        shape = tuple(model.inputs[0].shape)
        self.channels = int(shape[-1])
        self.static_hw = tuple(shape[1:3])
        self.num_outputs = int(model.outputs[0].shape[-1])
        self.mode = model_mode(model)
        self.tile = self._check_tile(tile)
        if (
            isinstance(overlap, bool)
            or not isinstance(overlap, (int, float))
            or not (0 <= overlap < 1)
        ):
            raise _bad("overlap", overlap, "expected a fraction of the tile in [0, 1)")
        self.overlap = float(overlap)
        if blend not in BLENDS:
            raise _bad("blend", blend, f"expected one of {BLENDS}")
        self.blend = blend
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise _bad("batch_size", batch_size, "expected a positive integer")
        self.batch_size = batch_size
        if output not in OUTPUTS:
            raise _bad("output", output, f"expected one of {OUTPUTS}")
        self.tta = resolve_tta(model, tta, output)
        # The activation a zoo model applies to its own logits ("sigmoid"/"softmax"), or None.
        own = (getattr(model, "_config", None) or {}).get("activation")
        if output == "logits" and (self.tta != "none" or own is not None):
            why = "a TTA average of probabilities" if self.tta != "none" else f"{own} outputs"
            raise _bad("output", output, f"logits are not defined for {why}; use 'probabilities'")
        self.output = output
        # Sigmoid per channel for binary/multilabel, softmax for multiclass; none when the
        # model already applies one or logits are wanted.
        self.activation = None
        if output == "probabilities" and own is None:
            self.activation = "softmax" if self.mode == "multiclass" else "sigmoid"
        self.scale = scaling.resolve_scale(model, scale)
        self.strategy = strategy
        self.replicas = int(strategy.num_replicas_in_sync) if strategy is not None else 1
        self.chief = True
        if strategy is not None:
            from zoo.distribute import is_chief

            self.chief = is_chief(strategy)
        self._fns: dict[tuple[int, int], Any] = {}

    # ------------------------------------------------------------------ checks and plans

    def _check_tile(self, tile: Any) -> tuple[int, int] | str | None:
        # self._tiled: the tile shape when an image is tiled (None: whole images only).
        self._tiled: tuple[int, int] | None = None
        self._training_size: tuple[int, int] | None = None
        if tile is None:
            return None
        if isinstance(tile, str) and tile == "auto":
            if None not in self.static_hw:  # a fixed input size: always tiles of that size
                self._tiled = (int(self.static_hw[0]), int(self.static_hw[1]))
                return self._tiled
            size = getattr(self.model, "metadata", {}).get("image_size")
            if size is not None:
                self._training_size = (int(size[0]), int(size[1]))
                self._tiled = tuple(_round_up(s, self.divisor) for s in self._training_size)
            return "auto"
        pair = (tile, tile) if isinstance(tile, int) and not isinstance(tile, bool) else tile
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2
        ok = ok and all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in pair)
        if not ok or any(t % self.divisor for t in pair):
            expected = f"expected a positive multiple of the model's divisor {self.divisor}"
            raise _bad(
                "tile", tile, f"{expected} (or a pair of them, 'auto', or None: whole images)"
            )
        pair = (int(pair[0]), int(pair[1]))
        if any(s is not None and s != t for s, t in zip(self.static_hw, pair)):
            raise _bad("tile", tile, f"this model takes inputs of exactly {self.static_hw}")
        self._tiled = pair
        return pair

    def _check_image(self, image: Any) -> np.ndarray:
        if not hasattr(image, "shape") or not hasattr(image, "dtype"):
            image = np.asarray(image)
        if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise DataError(
                f"The image has shape {tuple(image.shape)}; expected (H, W) or (H, W, C)"
            )
        c = 1 if image.ndim == 2 else int(image.shape[2])
        if c != self.channels and not (self.channels == 3 and c in (1, 4)):
            raise DataError(
                f"The image has {c} channel(s) but the model takes {self.channels} "
                "(gray and RGBA images are converted only for RGB models)"
            )
        kind, size = image.dtype.kind, image.dtype.itemsize
        if not (kind == "f" or (kind == "u" and size in (1, 2))):
            check_intensity(image)  # raises: the one intensity rule's message
        return image

    def tiled(self, height: int, width: int) -> bool:
        """Whether an image of this native size is cut into tiles (False: one whole tile)."""
        return self._layout(scaling.scaled_size((height, width), self.scale)) is not None

    def _layout(self, scaled: tuple[int, int]) -> tuple[int, int] | None:
        """The tile shape for an image of this scaled size, or None to run it whole."""
        if self.tile != "auto" or self._tiled is None:
            return self._tiled
        limit = [AUTO_WHOLE_FACTOR * s for s in self._training_size]
        return None if all(n <= m for n, m in zip(scaled, limit)) else self._tiled

    def _tile_shape(self, scaled: tuple[int, int]) -> tuple[int, int]:
        tile = self._layout(scaled)
        shape = []
        for axis in (0, 1):
            static = self.static_hw[axis]
            if static is not None:
                if scaled[axis] > static and tile is None:
                    raise ConfigError(
                        f"The model takes inputs of exactly {self.static_hw}; an image of "
                        f"{scaled} (after scaling) needs tile={self.static_hw}"
                    )
                shape.append(int(static))
            elif tile is None or scaled[axis] < tile[axis]:
                # Shorter than a tile: one tile, padded at the end to the divisor.
                shape.append(_round_up(scaled[axis], self.divisor))
            else:
                shape.append(tile[axis])
        if self.tta == "d4" and shape[0] != shape[1] and None not in self.static_hw:
            raise ConfigError(
                "tta='d4' rotates tiles: a model with a fixed input size needs square tiles"
            )
        return shape[0], shape[1]

    def plans(self, height: int, width: int) -> tuple[AxisPlan, AxisPlan]:
        """Row and column plans (tile starts, ranges, weights) for an image of this size."""
        sh, sw = scaling.scaled_size((height, width), self.scale)
        th, tw = self._tile_shape((sh, sw))
        return (
            plan_axis(height, sh, th, self.overlap, self.blend, self.divisor),
            plan_axis(width, sw, tw, self.overlap, self.blend, self.divisor),
        )

    # ------------------------------------------------------------------ compiled step

    def _step(self, th: int, tw: int) -> Any:
        # The tile shape has its own signature; images shorter than a tile (or tile=None) share
        # one with dynamic height and width, so varied small images trace once too.
        static = None not in self.static_hw
        key = (th, tw) if (th, tw) == self._tiled or static else (None, None)
        if key in self._fns:
            return self._fns[key]
        model, activation = self.model, self.activation
        transforms = TRANSFORMS[self.tta]

        def run(x: tf.Tensor) -> tf.Tensor:
            total = None
            for mirror, k in transforms:
                # One view at a time (control dependency): TTA costs time, not memory.
                with tf.control_dependencies([] if total is None else [total]):
                    view = forward(tf.identity(x), mirror, k)
                y = tf.cast(model(view, training=False), tf.float32)
                if activation == "sigmoid":
                    y = tf.sigmoid(y)
                elif activation == "softmax":
                    y = tf.nn.softmax(y, axis=-1)
                y = inverse(y, mirror, k)
                total = y if total is None else total + y
            return total if len(transforms) == 1 else total / float(len(transforms))

        # The batch dimension is open: a short step (an image of one or a few tiles, the last
        # step of an image) runs only the tiles it has.
        spec = tf.TensorSpec((None, key[0], key[1], self.channels), tf.float32)
        if self.strategy is None:
            fn = tf.function(run, input_signature=[spec])
        else:
            strategy = self.strategy

            @tf.function(reduce_retracing=True)
            def fn(values: Any) -> tf.Tensor:
                return strategy.gather(strategy.run(run, args=(values,)), axis=0)

        self._fns[key] = fn
        return fn

    def _run(self, batch: np.ndarray) -> np.ndarray:
        fn = self._step(batch.shape[1], batch.shape[2])
        if self.strategy is None:
            return fn(batch).numpy()
        b = batch.shape[0] // self.replicas  # `prepare` pads steps to a multiple of replicas

        def part(ctx: tf.distribute.ValueContext) -> tf.Tensor:
            i = ctx.replica_id_in_sync_group
            return tf.constant(batch[i * b : (i + 1) * b])

        values = self.strategy.experimental_distribute_values_from_function(part)
        return fn(values).numpy()

    # ------------------------------------------------------------------ public API

    def strips(
        self, image: Any, progress: Progress | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Stream the prediction as ``(first_row, rows)`` pieces, top to bottom.

        `rows` is float32 (n, W, K) and final: every tile touching those rows has been
        blended in. Together the pieces cover all H rows once. On a non-chief worker of a
        multi-worker strategy nothing is yielded (the steps still run: they are collective).

        Args:
            image: (H, W) or (H, W, C) array, uint8 / uint16 (scaled to [0, 1]) or float in
                [0, 1]; a `numpy.memmap` is read tile by tile.
            progress: called as ``progress(tiles_done, tiles_total)`` after every step.
        """
        image = self._check_image(image)
        if image.dtype.kind == "f":
            check_intensity(image)  # finite and in [0, 1], scanned in row blocks
        height, width = int(image.shape[0]), int(image.shape[1])
        py, px = self.plans(height, width)
        th, tw = py.tile, px.tile
        tiles = [(k, j) for k in range(len(py.starts)) for j in range(len(px.starts))]
        per_step = self.batch_size * self.replicas
        # The rows a tile row writes start here; rows above the next pending tile row's start
        # are final.
        row_start = [a for a, _ in py.ranges]
        band = np.zeros((0, width, self.num_outputs), np.float32)
        band0 = 0  # native row of band[0]

        def prepare(chunk: list[tuple[int, int]]) -> np.ndarray:
            # Replicas take equal slices: a short step is padded to a multiple of them.
            rows = _round_up(len(chunk), self.replicas)
            batch = np.empty((rows, th, tw, self.channels), np.float32)
            for i, (k, j) in enumerate(chunk):
                cut_tile(image, py, px, k, j, batch[i], self.channels)
            batch[len(chunk) :] = batch[0]
            return batch

        chunks = [tiles[i : i + per_step] for i in range(0, len(tiles), per_step)]
        with ThreadPoolExecutor(1) as pool:  # cut the next batch while this one runs
            pending = pool.submit(prepare, chunks[0])
            for n, chunk in enumerate(chunks):
                batch = pending.result()
                if n + 1 < len(chunks):
                    pending = pool.submit(prepare, chunks[n + 1])
                result = self._run(batch)
                del batch
                if progress is not None:
                    progress(min((n + 1) * per_step, len(tiles)), len(tiles))
                if not self.chief:
                    continue
                for i, (k, j) in enumerate(chunk):
                    ya, yb = py.ranges[k]
                    xa, xb = px.ranges[j]
                    if yb - band0 > band.shape[0]:
                        grow = np.zeros(
                            (yb - band0 - band.shape[0], width, self.num_outputs), np.float32
                        )
                        band = np.concatenate([band, grow]) if band.size else grow
                    band[ya - band0 : yb - band0, xa:xb] += tile_contribution(
                        result[i], py, px, k, j
                    )
                following = tiles[(n + 1) * per_step][0] if n + 1 < len(chunks) else None
                done = height if following is None else row_start[following]
                if done > band0:
                    yield band0, band[: done - band0]
                    band = band[done - band0 :]
                    band0 = done

    def predict(
        self, image: Any, out: np.ndarray | None = None, progress: Progress | None = None
    ) -> np.ndarray | None:
        """Full-size (H, W, K) float32 probabilities or logits of one image.

        Args:
            image: see `strips`.
            out: optional (H, W, K) float32 array to fill (e.g. a `numpy.memmap` or
                `zoo.inference.io.tiff_memmap`); rows are written as they are final.
            progress: see `strips`.

        Returns:
            `out` (a new array when not given); None on non-chief workers.
        """
        image = self._check_image(image)
        shape = (int(image.shape[0]), int(image.shape[1]), self.num_outputs)
        if out is not None and tuple(out.shape) != shape:
            raise _bad("out", f"array of shape {tuple(out.shape)}", f"expected shape {shape}")
        target = out
        for row, rows in self.strips(image, progress):
            if target is None:
                target = np.empty(shape, np.float32)
            target[row : row + rows.shape[0]] = rows
        return target

    def predict_mask(
        self,
        image: Any,
        out: np.ndarray | None = None,
        threshold: Any = None,
        progress: Progress | None = None,
    ) -> np.ndarray | None:
        """Masks straight from the stream (no full-size float array): see `to_mask`.

        Returns (H, W) class ids (binary: 0/1) or (H, W, L) 0/1 labels for multilabel models;
        None on non-chief workers.
        """
        image = self._check_image(image)
        threshold = mask_threshold(self.model, threshold)
        logits = self.output == "logits"
        target = out
        for row, rows in self.strips(image, progress):
            mask = to_mask(rows, self.mode, threshold, from_logits=logits)
            if target is None:
                target = np.empty((image.shape[0], *mask.shape[1:]), mask.dtype)
            target[row : row + mask.shape[0]] = mask
        return target
