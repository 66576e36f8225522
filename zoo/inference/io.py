"""Large-image files for tiled inference: the names phase 1 exported, now served by the one
reader (`zoo.data.io`) and the one atomic-write rule (`zoo.outputs.atomic_path`).

- `read_image(path, memmap=True, max_pixels=2**30)` is `zoo.data.io.read_pixels`: the stored
  pixels (uint8, uint16 or float; gray as (H, W)), memory-mapped for TIFF/.npy where the
  layout allows, checked by the intensity rule every reader applies, never a float copy.
- `atomic_path(path)`: a temporary file next to `path`, flushed and renamed into place when
  the block succeeds. Strip and tile writers: `zoo.inference.writers`.
"""

from __future__ import annotations

from zoo.data.io import MAX_PIXELS, TIFF_SUFFIXES, UnreadableFileError
from zoo.data.io import read_pixels as read_image
from zoo.outputs import atomic_path

__all__ = ["MAX_PIXELS", "TIFF_SUFFIXES", "UnreadableFileError", "atomic_path", "read_image"]
