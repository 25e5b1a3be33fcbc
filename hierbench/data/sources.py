"""Where images come from: CIFAR-10 (official pickles, read by a restricted unpickler, or an
image folder), Tiny ImageNet (the official layout) and seeded synthetic images."""

from __future__ import annotations

import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierbench.data.catalog import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    SYNTHETIC_MEAN,
    SYNTHETIC_STD,
    TINY_IMAGENET_MEAN,
    TINY_IMAGENET_STD,
    _fail,
    _require_dir,
)
from hierbench.data.image_data import ImageData
from hierbench.data.jpeg import _jpegs, _load_jpeg_files, _natural_key
from hierbench.data.loader import _mix_seed
from hierbench.errors import DatasetError


@dataclass(frozen=True)
class _Options:
    limit_per_class: int | None
    cache_dir: Path | None
    progress: bool


# ---- synthetic


def _load_synthetic(
    split: str, num_classes: int, image_size: int, length: int, seed: int, limit: int | None
) -> ImageData:
    for arg, value, low in (
        ("num_classes", num_classes, 1),
        ("image_size", image_size, 1),
        ("length", length, 0),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"synthetic {arg} must be an int >= {low}, got {value!r}")
    gen = torch.Generator().manual_seed(_mix_seed(seed, "synthetic", split))
    images = torch.randint(
        0, 256, (length, 3, image_size, image_size), generator=gen, dtype=torch.uint8
    )
    labels = torch.randint(0, num_classes, (length,), generator=gen, dtype=torch.int64)
    if limit is not None:
        keep = _first_per_class(labels, limit)
        images, labels = images[keep].contiguous(), labels[keep]
    return ImageData(
        name="synthetic",
        split=split,
        images=images,
        labels=labels,
        classes=tuple(f"class{i}" for i in range(num_classes)),
        mean=SYNTHETIC_MEAN,
        std=SYNTHETIC_STD,
    )


def _first_per_class(labels: torch.Tensor, limit: int) -> torch.Tensor:
    """Indices (ascending) of the first ``limit`` samples of each class."""
    keep = [(labels == c).nonzero().squeeze(1)[:limit] for c in labels.unique().tolist()]
    if not keep:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat(keep).sort().values


# ---- CIFAR-10


def _load_cifar10(root: Path, split: str, download: bool, opts: _Options) -> ImageData:
    batches = root / "cifar-10-batches-py"
    if not batches.is_dir() and (root / "batches.meta").is_file():
        batches = root  # the root is the batches folder itself
    has_folder = (root / "train").is_dir() or (root / "test").is_dir()
    if download and not batches.is_dir() and not has_folder:
        _download_cifar10(root)
    _require_dir("cifar10", root)
    if batches.is_dir():
        return _load_cifar10_pickles(batches, split, opts)
    if has_folder:
        return _load_cifar10_folder(root, split, opts)
    _fail("cifar10", f"{str(root)!r} has neither cifar-10-batches-py/ nor train/ and test/")


def _download_cifar10(root: Path) -> None:
    """Fetch and unpack the official archive with torchvision's own URL, file name and MD5 (what
    ``torchvision.datasets.CIFAR10(root, download=True)`` does, without its unpickling)."""
    try:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(
            CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
        )
    except (OSError, RuntimeError) as exc:  # network, disk, or a failed MD5 check
        raise DatasetError(f"cifar10: download into {str(root)!r} failed: {exc}") from exc


_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only containers, strings, numbers and numpy arrays: what CIFAR-10 pickles hold."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core."):  # pickles written by numpy 1.x (and Python 2)
            module = "numpy._core." + module[len("numpy.core.") :]
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy._core.") and not hasattr(np, "_core"):  # numpy < 2
            module = "numpy.core." + module[len("numpy._core.") :]
        return getattr(importlib.import_module(module), name)


def _unpickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR pickle (Python 2 or 3 flavour) into a dict with ``str`` keys."""
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        _fail("cifar10", f"{str(path)!r} is missing")
    except (
        OSError,
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
    ) as exc:
        raise DatasetError(f"cifar10: {str(path)!r} is not a CIFAR-10 batch file: {exc}") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"cifar10: {str(path)!r} does not hold a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _load_cifar10_pickles(batches: Path, split: str, opts: _Options) -> ImageData:
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [f for f in files if not (batches / f).is_file()]
    if missing:
        _fail("cifar10", f"{str(batches)!r} lacks {', '.join(missing)}")
    classes = CIFAR10_CLASSES
    if (batches / "batches.meta").is_file():
        names = _unpickle(batches / "batches.meta").get("label_names")
        if isinstance(names, list) and names:
            classes = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    data, labels = [], []
    for f in files:
        entry = _unpickle(batches / f)
        x, y = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
        if (
            not isinstance(x, np.ndarray)
            or x.dtype != np.uint8
            or x.ndim != 2
            or (x.shape[1] != 3 * 32 * 32)
        ):
            raise DatasetError(f"cifar10: {str(batches / f)!r}: 'data' is not uint8 (N, 3072)")
        if y is None or len(y) != x.shape[0]:
            raise DatasetError(f"cifar10: {str(batches / f)!r}: 'labels' do not match 'data'")
        data.append(x)
        labels.extend(int(v) for v in y)
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate(data).reshape(-1, 3, 32, 32)))
    label_t = torch.tensor(labels, dtype=torch.int64)
    if label_t.numel() and not (int(label_t.min()) >= 0 and int(label_t.max()) < len(classes)):
        raise DatasetError(f"cifar10: {str(batches)!r}: labels outside [0, {len(classes)})")
    if opts.limit_per_class is not None:
        keep = _first_per_class(label_t, opts.limit_per_class)
        images, label_t = images[keep].contiguous(), label_t[keep]
    return ImageData("cifar10", split, images, label_t, classes, CIFAR10_MEAN, CIFAR10_STD)


def _load_cifar10_folder(root: Path, split: str, opts: _Options) -> ImageData:
    split_dir = root / split
    if not split_dir.is_dir():
        _fail("cifar10", f"{str(root)!r} has no {split}/ folder")
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if found != sorted(CIFAR10_CLASSES):
        _fail(
            "cifar10",
            f"{str(split_dir)!r} holds the class folders {found[:12]}, "
            "not the ten CIFAR-10 classes",
        )
    files: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(CIFAR10_CLASSES):
        names = _jpegs(split_dir / cls)
        if not names:
            _fail("cifar10", f"{str(split_dir / cls)!r} holds no .jpg images")
        names = names[: opts.limit_per_class]
        files.extend(f"{split}/{cls}/{n}" for n in names)
        labels.extend([label] * len(names))
    return _load_jpeg_files(
        "cifar10", split, root, files, labels, CIFAR10_CLASSES, (), CIFAR10_MEAN, CIFAR10_STD, opts
    )


# ---- Tiny ImageNet


def _load_tiny_imagenet(root: Path, split: str, opts: _Options) -> ImageData:
    name = "tiny-imagenet"
    _require_dir(name, root)
    wnids_path = root / "wnids.txt"
    if not wnids_path.is_file():
        _fail(name, f"{str(root)!r} has no wnids.txt")
    wnids = tuple(line.strip() for line in wnids_path.read_text().splitlines() if line.strip())
    if not wnids or len(set(wnids)) != len(wnids):
        _fail(name, f"{str(wnids_path)!r} is empty or repeats a class id")
    label_of = {w: i for i, w in enumerate(wnids)}
    files: list[str] = []
    labels: list[int] = []
    if split == "train":
        for label, wnid in enumerate(wnids):
            img_dir = root / "train" / wnid / "images"
            if not img_dir.is_dir():
                _fail(name, f"{str(img_dir)!r} is missing (class {wnid} of wnids.txt)")
            names = _jpegs(img_dir)[: opts.limit_per_class]
            files.extend(f"train/{wnid}/images/{n}" for n in names)
            labels.extend([label] * len(names))
        extra = ("wnids.txt",)
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file() or not (root / "val" / "images").is_dir():
            _fail(name, f"{str(root)!r} has no val/val_annotations.txt and val/images/")
        rows: list[tuple[str, int]] = []
        for lineno, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in label_of:
                _fail(
                    name,
                    f"{str(ann)!r} line {lineno} is not 'file<TAB>wnid...' "
                    "with a wnid of wnids.txt",
                )
            rows.append((parts[0], label_of[parts[1]]))
        rows.sort(key=lambda r: _natural_key(r[0]))
        taken = [0] * len(wnids)
        for file, label in rows:
            if opts.limit_per_class is None or taken[label] < opts.limit_per_class:
                taken[label] += 1
                files.append(f"val/images/{file}")
                labels.append(label)
        extra = ("wnids.txt", "val/val_annotations.txt")
    if not files:
        _fail(name, f"{str(root)!r} holds no {split} images")
    return _load_jpeg_files(
        name, split, root, files, labels, wnids, extra, TINY_IMAGENET_MEAN, TINY_IMAGENET_STD, opts
    )
