"""Segmentation models: each module registers a class with `@zoo.register_model`."""

from zoo._discover import import_submodules

import_submodules(__name__)
