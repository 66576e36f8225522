"""Import every module of a package so that its registration decorators run.

Adding a model or encoder is then one new file: nothing else is edited.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str) -> list[str]:
    """Import all modules directly inside `package_name` (private ones, `_x.py`, skipped)."""
    package = importlib.import_module(package_name)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{package_name}.{info.name}")
        names.append(info.name)
    return names
