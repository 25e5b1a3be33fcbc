"""The only module that imports the compiled extension ``hierbench._C``.

Loading ``_C`` runs the ``TORCH_LIBRARY(hierbench, ...)`` registrations, after which the ops are
reachable as ``torch.ops.hierbench.<name>``. Everything else in hierbench goes through here, so a
missing build fails in one place with one clear message.
"""

from __future__ import annotations

import functools
from typing import Any

from hierbench.errors import ExtensionNotBuiltError

_BUILD_HINT = (
    "hierbench's native extension (hierbench._C) is not built or does not load. Build it from the "
    "repository root with `pip install --no-build-isolation -e .` (or `make build`), against the "
    "same torch you run with; an installed wheel runs only with the torch version it pins "
    "(`importlib.metadata.requires('hierbench')`: torch==...)."
)


@functools.cache
def load() -> Any:
    """Import ``hierbench._C`` once and return it; :class:`ExtensionNotBuiltError` if absent."""
    import torch  # noqa: F401  (the extension links against libtorch: load it first)

    try:
        from hierbench import _C
    except ImportError as exc:
        raise ExtensionNotBuiltError(f"{_BUILD_HINT} Cause: {exc}") from exc
    return _C


def available() -> bool:
    """Whether the extension loads."""
    try:
        load()
    except ExtensionNotBuiltError:
        return False
    return True


def build_info() -> dict[str, Any]:
    """How the extension was built: version, CUDA, compiler, torch."""
    return dict(load().build_info())


def has_kernel(op: str, device: str) -> bool:
    """Whether ``torch.ops.hierbench.<op>`` has a kernel for ``device`` ("cpu" or "cuda")."""
    import torch

    load()
    key = {"cpu": "CPU", "cuda": "CUDA"}[device]
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"hierbench::{op}", key)
