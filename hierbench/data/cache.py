"""The disk cache of decoded JPEG folders: where it lives, its key (every source file's path,
size and modification time), and atomic reads and writes of ``torch.save`` files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierbench.errors import DatasetError

CACHE_ENV = "HIERBENCH_DATA_CACHE"
"""The environment variable that names the decoded-tensor cache directory."""

_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """The decoded-tensor cache: ``$HIERBENCH_DATA_CACHE``, else ``~/.cache/hierbench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hierbench"


def _cache_key(
    name: str,
    split: str,
    root: Path,
    files: list[str],
    labels: list[int],
    classes: tuple[str, ...],
    extra: tuple[str, ...],
    limit: int | None,
) -> str:
    """Hash of what the decoded tensors depend on: every source file's (path, size, mtime)."""
    h = hashlib.sha256()
    h.update(json.dumps([_CACHE_VERSION, name, split, limit, list(classes)]).encode())
    base = os.fspath(root) + os.sep  # plain strings: Path objects cost more than the stat
    for rel in sorted([*files, *extra]):
        try:
            st = os.stat(base + rel)
        except OSError as exc:
            raise DatasetError(f"{name}: cannot read {base + rel!r}: {exc}") from exc
        h.update(f"\n{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    h.update(b"\nlabels\n")
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def _read_cache(path: Path, key: str, n: int) -> torch.Tensor | None:
    """The cached images, or ``None`` on a miss or an unusable file."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file is just a miss
        warnings.warn(f"hierbench: ignoring unreadable cache file {path}: {exc}", stacklevel=4)
        return None
    images = payload.get("images") if isinstance(payload, dict) else None
    if (
        payload.get("version") != _CACHE_VERSION
        or payload.get("key") != key
        or not isinstance(images, torch.Tensor)
        or images.dtype != torch.uint8
        or images.dim() != 4
        or images.shape[0] != n
    ):
        return None
    return images.contiguous()


def _write_cache(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename); a failure only costs a later re-decode."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache may be shared
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        warnings.warn(f"hierbench: could not write the data cache {path}: {exc}", stacklevel=4)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
