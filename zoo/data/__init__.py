"""Datasets, weight maps and the tf.data pipeline.

The training app calls one function:

    bundle = build_datasets(cfg.data, global_batch_size=16, seed=0, start_step=0)
    bundle.train  # infinite batches {"image", "mask", "weight"}
    bundle.val    # finite, ordered, unaugmented batches
    bundle.info   # DataInfo: num_classes, mode, ignore_index, steps_per_epoch, ...

See docs/data.md.
"""

from zoo.data.build import DataBundle, DataInfo, build_datasets
from zoo.data.config import (
    DATA_SCHEMAS,
    AugmentConfig,
    DataConfig,
    FolderDataConfig,
    PetsDataConfig,
    ShapesDataConfig,
    parse_data_config,
)
from zoo.data.io import read_image, read_mask
from zoo.data.shapes import generate_shapes

__all__ = [
    "DATA_SCHEMAS",
    "AugmentConfig",
    "DataBundle",
    "DataConfig",
    "DataInfo",
    "FolderDataConfig",
    "PetsDataConfig",
    "ShapesDataConfig",
    "build_datasets",
    "generate_shapes",
    "parse_data_config",
    "read_image",
    "read_mask",
]
