"""hierbench: edge-cloud hierarchical training with early exits, measured.

Importing the package is cheap: submodules (``hierbench.ops``, ``hierbench.data``,
``hierbench.models``...) are imported on first attribute access, and only ``hierbench._ext``
loads the compiled extension.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "cli",
    "codec",
    "data",
    "errors",
    "methods",
    "models",
    "ops",
    "profiling",
    "runtime",
    "transfer",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"hierbench.{name}")
    raise AttributeError(f"module 'hierbench' has no attribute {name!r}")
