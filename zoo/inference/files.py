"""Predicting image files: masks, probability maps and overlays, written strip by strip.

`FilePredictor.predict(image, out_dir, mask_name)` streams one image through a
`TiledPredictor` and hands every finished strip of rows to each output at once, so no
full-size probability array exists and each file is written atomically (a temporary file
renamed when complete; an error leaves no partial file). Outputs, for the mask name
`<stem>.png` given by `zoo.outputs.mask_names`:

- mask: binary `<stem>.png`, 8-bit gray 0 / 255; multiclass `<stem>.png`, a palette PNG
  whose pixels are class ids (the training data's `data.class_colors` where it had them,
  else PASCAL VOC colors; 16-bit gray beyond 256 classes);
  multilabel `label_<k>/<stem>.png`, one 0 / 255 PNG per label;
- probabilities="npy": `probabilities/<stem>.npy`, float16 (H, W, K);
- probabilities="png": 16-bit gray, round(p x 65535): `probabilities/<stem>.png` for one
  channel, else `probabilities/class_<k>/<stem>.png`;
- overlays: `overlays/<stem>.png`, RGB, the mask's colors blended into the image (50%).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zoo.inference.masks import mask_threshold, to_mask
from zoo.inference.predictor import Progress, TiledPredictor
from zoo.inference.settings import PredictOptions
from zoo.inference.writers import PngStripWriter, class_palette, npy_memmap
from zoo.outputs import blend_labels, display_rgb

Sink = Callable[[int, np.ndarray, np.ndarray, Any], None]
BINARY_COLOR = np.array([255, 0, 0], np.uint8)  # overlays: binary foreground in red
OVERLAY_ALPHA = 0.5


def rgb8(region: np.ndarray) -> np.ndarray:
    """Image pixels (n, W) or (n, W, C) as uint8 RGB for display: gray is repeated, alpha and
    channels beyond the third dropped (two channels: the first shown as gray); the rule of
    every overlay (`zoo.outputs.display_rgb`)."""
    return display_rgb(region)


class FilePredictor:
    """Predicts images and writes their output files, with fixed options.

    Args:
        model: a segmentation model (its metadata gives mode, threshold, training size and
            scale).
        options: `PredictOptions` (tile, overlap, blend, batch size, TTA, threshold, extra
            outputs).
        strategy: a `tf.distribute` strategy whose replicas share the tiles; only the chief
            writes files (the others run the same steps and write nothing).

    Raises:
        ConfigError: settings that do not fit the model (e.g. a tile that is not a multiple
            of its divisor), before any image is read.
    """

    def __init__(self, model: Any, options: PredictOptions, strategy: Any = None) -> None:
        self.options = options
        self.predictor = TiledPredictor(
            model, output="probabilities", strategy=strategy, **options.predictor_kwargs()
        )
        self.mode = self.predictor.mode
        self.classes = self.predictor.num_outputs
        self.threshold = mask_threshold(model, options.threshold)
        to_mask(np.zeros((1, self.classes), np.float32), self.mode, self.threshold)  # checks it
        self.palette = class_palette(max(2, min(self.classes, 256)))
        colors = (getattr(model, "metadata", None) or {}).get("class_colors")
        if colors and len(colors) <= len(self.palette):  # the dataset's own colors
            self.palette[: len(colors)] = np.asarray(colors, np.uint8)

    @property
    def chief(self) -> bool:
        return self.predictor.chief

    def predict(
        self,
        image: Any,
        out_dir: str | Path,
        mask_name: str,
        progress: Progress | None = None,
    ) -> dict[str, list[Path]]:
        """Predict `image` and write its files under `out_dir`.

        Args:
            image: (H, W) or (H, W, C) uint8 / uint16 / float pixels (a memory map is read
                tile by tile).
            out_dir: the output folder.
            mask_name: the mask's file name (`zoo.outputs.mask_names`), ending in ``.png``.
            progress: `progress(tiles_done, tiles_total)` after every step.

        Returns:
            The files written, by kind: "masks", "probabilities", "overlays" (empty on
            non-chief workers).

        Raises:
            DataError: the image does not fit the model (channels) or breaks the intensity
                rule; no file is written.
        """
        image = self.predictor._check_image(image)
        height, width = int(image.shape[0]), int(image.shape[1])
        written: dict[str, list[Path]] = {"masks": [], "probabilities": [], "overlays": []}
        if not self.chief:
            for _ in self.predictor.strips(image, progress):  # collective steps: run them
                pass
            return written
        with contextlib.ExitStack() as stack:
            sinks = self._open(stack, Path(out_dir), mask_name, height, width, written)
            for row, rows in self.predictor.strips(image, progress):
                mask = to_mask(rows, self.mode, self.threshold)
                for sink in sinks:
                    sink(row, rows, mask, image)
        return written

    # ------------------------------------------------------------------ outputs

    def _png(self, stack: contextlib.ExitStack, path: Path, h: int, w: int, **kw: Any) -> Any:
        return stack.enter_context(PngStripWriter(path, h, w, **kw))

    def _open(
        self,
        stack: contextlib.ExitStack,
        out: Path,
        name: str,
        h: int,
        w: int,
        written: dict[str, list[Path]],
    ) -> list[Sink]:
        sinks: list[Sink] = []
        k, stem = self.classes, name[: -len(".png")] if name.endswith(".png") else name

        def add(kind: str, path: Path) -> Path:
            written[kind].append(path)
            return path

        # Masks.
        if self.mode == "multilabel":
            labels = [
                self._png(stack, add("masks", out / f"label_{j}" / name), h, w) for j in range(k)
            ]
            sinks.append(
                lambda row, p, m, img: [png.write(m[..., j] * 255) for j, png in enumerate(labels)]
            )
        elif self.mode == "binary":
            png = self._png(stack, add("masks", out / name), h, w, mode="L")
            sinks.append(lambda row, p, m, img: png.write(m * 255))
        elif k <= 256:
            png_p = self._png(stack, add("masks", out / name), h, w, mode="P", palette=self.palette)
            sinks.append(lambda row, p, m, img: png_p.write(m))
        else:
            png_16 = self._png(stack, add("masks", out / name), h, w, mode="I;16")
            sinks.append(lambda row, p, m, img: png_16.write(m))
        # Probability maps.
        if self.options.probabilities == "npy":
            path = add("probabilities", out / "probabilities" / f"{stem}.npy")
            arr = stack.enter_context(npy_memmap(path, (h, w, k), np.float16))

            def npy(row: int, p: np.ndarray, m: np.ndarray, img: Any) -> None:
                arr[row : row + p.shape[0]] = p

            sinks.append(npy)
        elif self.options.probabilities == "png":
            where = [out / "probabilities" / name] if k == 1 else [
                out / "probabilities" / f"class_{j}" / name for j in range(k)
            ]  # fmt: skip
            pngs = [self._png(stack, add("probabilities", q), h, w, mode="I;16") for q in where]

            def png16(row: int, p: np.ndarray, m: np.ndarray, img: Any) -> None:
                levels = np.round(np.clip(p, 0, 1) * 65535).astype(np.uint16)
                for j, writer in enumerate(pngs):
                    writer.write(levels[..., j])

            sinks.append(png16)
        # Overlays.
        if self.options.overlays:
            rgb = self._png(stack, add("overlays", out / "overlays" / name), h, w, mode="RGB")
            sinks.append(lambda row, p, m, img: rgb.write(self._overlay(img, row, m)))
        return sinks

    def _overlay(self, image: Any, row: int, mask: np.ndarray) -> np.ndarray:
        base = rgb8(image[row : row + mask.shape[0]]).astype(np.float32)
        color = np.zeros_like(base)
        on = np.zeros(base.shape[:2], bool)
        if self.mode == "multilabel":  # each label its color; overlaps in the mean color
            return blend_labels(base.astype(np.uint8), mask > 0, OVERLAY_ALPHA)
        if self.mode == "binary":
            on = mask > 0
            color[on] = BINARY_COLOR
        else:
            on = mask > 0  # class 0 (background) is left as it is
            color = self.palette[np.minimum(mask, len(self.palette) - 1)].astype(np.float32)
        out = np.where(on[..., None], (1 - OVERLAY_ALPHA) * base + OVERLAY_ALPHA * color, base)
        return np.round(out).astype(np.uint8)
