"""JPEG folders: scan (natural file order), decode on a few threads (torchvision.io, else PIL),
through the disk cache of :mod:`hierbench.data.cache`."""

from __future__ import annotations

import io
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hierbench.data.cache import _CACHE_VERSION, _cache_key, _read_cache, _write_cache
from hierbench.data.image_data import ImageData
from hierbench.errors import DatasetError

if TYPE_CHECKING:
    from hierbench.data.sources import _Options

_JPEG_SUFFIXES = (".jpg", ".jpeg")
_DECODE_CHUNK = 512


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders ``x_2`` before ``x_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _jpegs(folder: Path) -> list[str]:
    """The JPEG file names in ``folder``, in natural order."""
    try:
        names = [
            e.name
            for e in os.scandir(folder)
            if e.name.lower().endswith(_JPEG_SUFFIXES) and e.is_file()
        ]
    except OSError:
        return []
    return sorted(names, key=_natural_key)


def _load_jpeg_files(
    name: str,
    split: str,
    root: Path,
    files: list[str],
    labels: list[int],
    classes: tuple[str, ...],
    extra: tuple[str, ...],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    opts: _Options,
) -> ImageData:
    """Decode ``files`` (paths relative to ``root``), through the cache."""
    label_t = torch.tensor(labels, dtype=torch.int64)
    key = _cache_key(name, split, root, files, labels, classes, extra, opts.limit_per_class)
    path = None
    if opts.cache_dir is not None:
        limit = "all" if opts.limit_per_class is None else f"max{opts.limit_per_class}"
        path = opts.cache_dir / f"{name}-{split}-{limit}-{key[:20]}.pt"
        images = _read_cache(path, key, len(files))
        if images is not None:
            return ImageData(name, split, images, label_t, classes, mean, std)
    base = os.fspath(root) + os.sep
    images = _decode_jpegs([base + f for f in files], f"{name}/{split}", opts.progress)
    if path is not None:
        _write_cache(
            path,
            {
                "version": _CACHE_VERSION,
                "key": key,
                "images": images,
                "labels": label_t,
                "classes": list(classes),
            },
        )
    return ImageData(name, split, images, label_t, classes, mean, std)


def _jpeg_decoder() -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """Batch JPEG decoder to RGB uint8 (3, H, W): torchvision.io, else PIL."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # torchvision without image IO: PIL is slower but works
        from PIL import Image

        def decode_pil(data: list[torch.Tensor]) -> list[torch.Tensor]:

            out = []
            for d in data:
                with Image.open(io.BytesIO(d.numpy().tobytes())) as im:
                    arr = np.asarray(im.convert("RGB"))
                out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())
            return out

        return decode_pil

    def decode_tv(data: list[torch.Tensor]) -> list[torch.Tensor]:
        return decode_jpeg(data, mode=ImageReadMode.RGB)

    return decode_tv


def _decode_jpegs(paths: list[str], label: str, progress: bool) -> torch.Tensor:
    """Read and decode ``paths`` on a few threads into one uint8 (N, 3, H, W) tensor."""
    decode = _jpeg_decoder()

    def chunk(part: list[str]) -> torch.Tensor:
        data = []
        for p in part:
            try:
                with open(p, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise DatasetError(f"cannot read {str(p)!r}: {exc}") from exc
            if not raw:
                raise DatasetError(f"{str(p)!r} is empty, not a JPEG image")
            data.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        try:
            imgs = decode(data)
        except (RuntimeError, ValueError, OSError):
            imgs = [_decode_one(decode, d, p) for d, p in zip(data, part)]  # name the culprit
        first = imgs[0].shape
        for img, p in zip(imgs, part):
            if img.shape != first or img.shape[0] != 3:
                raise DatasetError(
                    f"{str(p)!r} decodes to {tuple(img.shape)}, but {str(part[0])!r} to "
                    f"{tuple(first)}: all images of a dataset must have one size"
                )
        return torch.stack(imgs)

    parts = [paths[i : i + _DECODE_CHUNK] for i in range(0, len(paths), _DECODE_CHUNK)]
    workers = max(1, min(4, os.cpu_count() or 1, len(parts)))
    start = shown = time.perf_counter()
    out: torch.Tensor | None = None
    done = 0
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image IO in favour of torchcodec; it still works.
        warnings.filterwarnings(
            "ignore", message=".*image decoding and encoding", category=DeprecationWarning
        )
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hierbench-jpeg") as ex:
            for batch in ex.map(chunk, parts):
                if out is None:  # one allocation: no second copy of the whole dataset
                    out = torch.empty((len(paths), *batch.shape[1:]), dtype=torch.uint8)
                elif batch.shape[1:] != out.shape[1:]:
                    raise DatasetError(
                        f"{label}: images of different sizes, {tuple(out.shape[1:])} and "
                        f"{tuple(batch.shape[1:])} (from {paths[done]!r} on)"
                    )
                out[done : done + batch.shape[0]] = batch
                done += batch.shape[0]
                if progress and (done == len(paths) or time.perf_counter() - shown > 0.5):
                    shown = time.perf_counter()
                    print(
                        f"\rhierbench: decoding {label}: {done}/{len(paths)}",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
    if progress:
        print(f" ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    assert out is not None  # callers never pass an empty list
    return out


def _decode_one(
    decode: Callable[[list[torch.Tensor]], list[torch.Tensor]], data: torch.Tensor, path: str
) -> torch.Tensor:
    try:
        return decode([data])[0]
    except (RuntimeError, ValueError, OSError) as exc:
        raise DatasetError(f"{str(path)!r} is not a readable JPEG image: {exc}") from exc
