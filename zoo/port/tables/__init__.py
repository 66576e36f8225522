"""Port tables of each model family, one module per family, registered on import.

A family module calls `zoo.port.register_table(name, Table(...))`; adding a family is one new
file here (auto-discovered), the core (`zoo/port/mapping.py`) is not edited.
"""

from zoo._discover import import_submodules

import_submodules(__name__)
