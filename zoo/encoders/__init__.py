"""Encoders: each module registers builders with `@zoo.register_encoder`."""

from zoo._discover import import_submodules

import_submodules(__name__)
