"""Writing large outputs in strips or tiles, atomically (temporary file + rename).

- `PngStripWriter`: PNG written row strip by row strip (8-bit gray, palette, RGB, 16-bit
  gray) with a streaming zlib compressor; memory is one strip. Pillow cannot do this (it
  encodes a whole image held in memory), so the PNG container is written here: signature,
  IHDR, optional PLTE, IDAT chunks of one deflate stream, IEND.
- `write_tiff_tiles`: a tiled (optionally compressed) TIFF from a stream of row strips
  (tifffile); memory is one row of tiles.
- `tiff_memmap`: an uncompressed TIFF mapped as an array to write into (e.g. the `out=` of
  `TiledPredictor.predict` for full-size float probabilities).

An existing file at the destination is replaced only by a complete new one.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from zoo.outputs import atomic_path

# --------------------------------------------------------------------------- PNG in strips

_PNG_MODES = {"L": (0, 8, 1), "P": (3, 8, 1), "RGB": (2, 8, 3), "I;16": (0, 16, 1)}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class PngStripWriter:
    """Write a PNG of known size strip by strip, atomically.

    Rows are filtered with PNG's "Up" filter (masks compress to almost nothing) and
    deflated by one streaming compressor; memory is the current strip.

    Args:
        path: destination; written only when all rows arrived and `close` succeeds.
        height, width: image size.
        mode: "L" (uint8 gray), "P" (uint8 palette indices), "RGB" (uint8 x 3) or "I;16"
            (uint16 gray).
        palette: (n <= 256, 3) uint8 colors for mode "P".
        compress_level: zlib level 0-9.

    Example:

    ```python
    with PngStripWriter("mask.png", h, w, mode="P", palette=colors) as png:
        for row, rows in predictor.strips(image):
            png.write(to_mask(rows, "multiclass"))
    ```
    """

    def __init__(
        self,
        path: str | os.PathLike,
        height: int,
        width: int,
        mode: str = "L",
        palette: Any = None,
        compress_level: int = 6,
    ) -> None:
        if mode not in _PNG_MODES:
            raise ValueError(
                f"Invalid value for argument `mode`: expected one of {tuple(_PNG_MODES)}. "
                f"Received: mode={mode!r}"
            )
        if not (0 < height < 2**31 and 0 < width < 2**31):
            raise ValueError(f"Invalid PNG size {height}x{width}")
        self.height, self.width, self.mode = int(height), int(width), mode
        color, depth, self.samples = _PNG_MODES[mode]
        self.dtype = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
        self.rows_written = 0
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._file = open(self._tmp, "wb")
        self._zip = zlib.compressobj(compress_level)
        self._prev = np.zeros(width * self.samples * self.dtype.itemsize, np.uint8)
        header = struct.pack(">IIBBBBB", self.width, self.height, depth, color, 0, 0, 0)
        self._file.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        if mode == "P":
            pal = np.asarray(palette, np.uint8) if palette is not None else None
            if pal is None or pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= len(pal) <= 256:
                raise ValueError(
                    "Invalid value for argument `palette`: expected (n <= 256, 3) "
                    f"uint8 colors for mode 'P'. Received: palette={palette!r}"
                )
            self._file.write(_chunk(b"PLTE", pal.tobytes()))

    def write(self, rows: np.ndarray) -> None:
        """Append rows: (n, W) for L/P/I;16, (n, W, 3) for RGB."""
        rows = np.asarray(rows)
        want = (self.width,) if self.samples == 1 else (self.width, self.samples)
        if rows.ndim != len(want) + 1 or rows.shape[1:] != want:
            raise ValueError(
                f"PNG rows must have shape (n, {', '.join(map(str, want))}); got {rows.shape}"
            )
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError(f"More than {self.height} rows written to the PNG")
        if rows.dtype.kind not in "ub" or rows.max(initial=0) > np.iinfo(self.dtype).max:
            raise ValueError(
                f"PNG mode {self.mode} takes unsigned values up to "
                f"{np.iinfo(self.dtype).max}; got {rows.dtype}"
            )
        raw = np.ascontiguousarray(rows.astype(self.dtype)).view(np.uint8)
        raw = raw.reshape(rows.shape[0], -1)
        up = raw.copy()
        up[0] -= self._prev  # uint8 arithmetic wraps modulo 256, as the filter wants
        up[1:] -= raw[:-1]
        self._prev = raw[-1].copy()
        lines = np.empty((raw.shape[0], raw.shape[1] + 1), np.uint8)
        lines[:, 0] = 2  # filter type Up
        lines[:, 1:] = up
        self._emit(self._zip.compress(lines.tobytes()))
        self.rows_written += rows.shape[0]

    def _emit(self, data: bytes) -> None:
        if data:
            self._file.write(_chunk(b"IDAT", data))

    def close(self) -> None:
        """Finish the file and move it into place (raises if rows are missing)."""
        if self._file.closed:
            return
        try:
            if self.rows_written != self.height:
                raise ValueError(f"PNG has {self.rows_written} of {self.height} rows")
            self._emit(self._zip.flush())
            self._file.write(_chunk(b"IEND", b""))
            self._file.close()
        except BaseException as e:
            self._abort(e)
            raise
        self._ctx.__exit__(None, None, None)

    def _abort(self, exc: BaseException) -> None:
        self._file.close()
        with contextlib.suppress(BaseException):
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> PngStripWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self._abort(exc)
        else:
            self.close()


# --------------------------------------------------------------------------- TIFF


def write_tiff_tiles(
    path: str | os.PathLike,
    strips: Iterable[tuple[int, np.ndarray]],
    shape: tuple[int, ...],
    dtype: Any,
    tile: tuple[int, int] = (256, 256),
    compression: str | None = "zlib",
    photometric: str = "minisblack",
    colormap: Any = None,
) -> None:
    """Write a tiled TIFF from ``(first_row, rows)`` strips in row order, atomically.

    Args:
        path: destination (BigTIFF automatically beyond 4 GB).
        strips: pieces covering rows 0..H-1 in order, e.g. `TiledPredictor.strips` turned
            into masks; any strip heights.
        shape: (H, W) or (H, W, C).
        dtype: pixel dtype.
        tile: TIFF tile (height, width), multiples of 16.
        compression: a tifffile codec name ("zlib", "zstd", "lzw") or None.
        photometric: "minisblack", "rgb" or "palette" (then `colormap`, (3, 2**bits) uint16).
    """
    import tifffile

    h, w = shape[:2]
    th, tw = tile
    extra = tuple(shape[2:])
    dtype = np.dtype(dtype)

    def tiles() -> Iterator[np.ndarray]:
        buf = np.zeros((th, w, *extra), dtype)
        filled, top = 0, 0
        for row, rows in strips:
            if row != top + filled:
                raise ValueError(
                    f"strips must come in row order: expected row {top + filled}, got {row}"
                )
            rows = np.asarray(rows)
            while rows.shape[0]:
                take = min(th - filled, rows.shape[0])
                buf[filled : filled + take] = rows[:take]
                rows, filled = rows[take:], filled + take
                if filled == th or top + filled == h:
                    yield from _row_of_tiles(buf, filled, tw, w)
                    top, filled = top + filled, 0
                    buf[:] = 0
        if top != h:
            raise ValueError(f"strips cover {top} of {h} rows")

    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data=tiles(),
            shape=shape,
            dtype=dtype,
            tile=(th, tw),
            compression=compression,
            photometric=photometric,
            colormap=colormap,
            metadata=None,
            planarconfig="contig" if extra else None,
        )


def _row_of_tiles(buf: np.ndarray, rows: int, tw: int, width: int) -> Iterator[np.ndarray]:
    for x in range(0, width, tw):
        t = np.zeros((buf.shape[0], tw, *buf.shape[2:]), buf.dtype)
        part = buf[:rows, x : x + tw]
        t[:rows, : part.shape[1]] = part
        yield t


@contextlib.contextmanager
def tiff_memmap(
    path: str | os.PathLike, shape: tuple[int, ...], dtype: Any = np.float32
) -> Iterator[np.memmap]:
    """An uncompressed TIFF at `path`, mapped as an array to fill; renamed into place when
    the block succeeds (flushed first), removed on an exception.

    Example:

    ```python
    with tiff_memmap("probs.tif", (h, w, k)) as out:
        predictor.predict(image, out=out)
    ```
    """
    import tifffile

    with atomic_path(path) as tmp:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        arr = tifffile.memmap(
            tmp,
            shape=tuple(shape),
            dtype=dtype,
            photometric="minisblack",
            bigtiff=size > 2**32 - 2**25,
            metadata=None,
        )
        try:
            yield arr
            arr.flush()
        finally:
            del arr


@contextlib.contextmanager
def npy_memmap(
    path: str | os.PathLike, shape: tuple[int, ...], dtype: Any = np.float16
) -> Iterator[np.memmap]:
    """A ``.npy`` file at `path`, mapped as an array to fill (`np.load` reads it back, or maps
    it with ``mmap_mode="r"``); renamed into place when the block succeeds, removed on an
    exception.

    Example:

    ```python
    with npy_memmap("probs.npy", (h, w, k)) as out:
        for row, rows in predictor.strips(image):
            out[row : row + len(rows)] = rows
    ```
    """
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        try:
            yield arr
            arr.flush()
        finally:
            del arr


def class_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colors of class ids: the PASCAL VOC colormap (0 black, 1 dark red, 2 dark
    green, ...; 255 cream), the usual colors of palette-PNG segmentation masks.

    Each class id's bits are spread over the high bits of the three channels: bit 0 -> red,
    bit 1 -> green, bit 2 -> blue, bits 3-5 the next lower bit of each, and so on.
    """
    ids = np.arange(n)
    colors = np.zeros((n, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            colors[:, channel] |= bit << (7 - shift)
    return colors.astype(np.uint8)
