"""Oxford-IIIT Pet through tensorflow-datasets (optional extra: `pip install segzoo[tfds]`).

The trimap labels pixels 1 = pet, 2 = background, 3 = border; we map pet -> 1, background -> 0
and border -> ignore_index (or pet when `border_as_ignore` is false). Images are resized to
`image_size` once, when loading, and kept in memory like every other dataset.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from zoo.data.config import PetsDataConfig
from zoo.errors import MissingDependencyError


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise MissingDependencyError(
            "data=pets needs tensorflow-datasets: pip install 'segzoo[tfds]' "
            "(or use data=shapes / data=folder)"
        ) from None
    return tfds


def _convert(example, c: PetsDataConfig) -> tuple[np.ndarray, np.ndarray]:
    h, w = c.image_size
    image = Image.fromarray(np.asarray(example["image"], np.uint8)).resize((w, h), Image.BILINEAR)
    trimap = np.asarray(example["segmentation_mask"])[..., 0].astype(np.uint8)
    if c.mask_interpolation == "linear":  # the trimap's labels, as the image moves
        from zoo.data.resample import resize_labels_np

        trimap = resize_labels_np(trimap, (h, w))
    else:
        trimap = np.asarray(Image.fromarray(trimap).resize((w, h), Image.NEAREST))
    border = 1
    if c.border_as_ignore and c.ignore_index is not None:
        border = c.ignore_index
    mask = np.select([trimap == 1, trimap == 3], [1, border], 0).astype(np.int32)
    return np.asarray(image, np.uint8), mask


def load_pets(c: PetsDataConfig):
    """Download (first use) and decode Oxford-IIIT Pet.

    Returns:
        (train split, val split, class names, skipped, native sizes of the training images)
        like `zoo.data.folder.load`.

    Raises:
        ImportError: tensorflow-datasets is not installed.
    """
    tfds = _import_tfds()

    sizes: list[tuple[int, int]] = []

    def split(name: str, native: list | None = None):
        ds = tfds.load("oxford_iiit_pet", split=name, data_dir=c.data_dir)
        images, masks = [], []
        for ex in tfds.as_numpy(ds):
            if native is not None:  # before resizing: the model's input scale
                native.append(tuple(int(n) for n in np.shape(ex["image"])[:2]))
            image, mask = _convert(ex, c)
            images.append(image)
            masks.append(mask)
        return images, masks, None

    train = split(c.train_split, sizes)
    return train, split(c.val_split), ("background", "pet"), (), sizes
