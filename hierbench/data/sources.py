"""Datasets as decoded ``uint8`` tensors in memory, a disk cache of them, and a batch loader.

Three datasets (:data:`DATASETS`):

``cifar10``
    Either torchvision's official format (``<root>/cifar-10-batches-py/``) or an image-folder copy
    (``<root>/train/<class>/*.jpg``, ``<root>/test/<class>/*.jpg``); splits ``train`` / ``test``.
``tiny-imagenet``
    The official ``tiny-imagenet-200`` layout; splits ``train`` / ``val``; labels follow the
    order of ``wnids.txt``.
``synthetic``
    Seeded random images of any size and number of classes, for tests and timing.

JPEG folders are decoded once (``torchvision.io.decode_jpeg`` on a few threads) and the decoded
tensors are cached on disk, keyed by the source files' paths, sizes and modification times, so a
changed source is decoded again. Images stay ``uint8`` (N, 3, H, W) until :func:`normalize`,
which a training loop calls on the device it trains on; :class:`BatchLoader` shuffles and augments
(random crop with zero padding, horizontal flip) whole batches at once, on ``uint8``.

Where the data lives is a setting (``root=``, or the environment variables in :data:`ROOT_ENV`);
:func:`default_root` documents the fallback for the environment this project is built in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from hierbench.errors import ConfigError, DatasetError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "ROOT_ENV",
    "SPLITS",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_STD",
    "TINY_IMAGENET_MEAN",
    "TINY_IMAGENET_STD",
    "BatchLoader",
    "ImageData",
    "crop_flip",
    "default_cache_dir",
    "default_root",
    "load_dataset",
    "normalize",
    "random_crop_flip",
]

DATASETS: tuple[str, ...] = ("cifar10", "tiny-imagenet", "synthetic")
"""The dataset names :func:`load_dataset` accepts."""

SPLITS: dict[str, tuple[str, ...]] = {
    "cifar10": ("train", "test"),
    "tiny-imagenet": ("train", "val"),
    "synthetic": ("train", "val", "test"),
}
"""The splits of each dataset."""

ROOT_ENV: dict[str, str] = {
    "cifar10": "HIERBENCH_CIFAR10_ROOT",
    "tiny-imagenet": "HIERBENCH_TINYIMAGENET_ROOT",
}
"""The environment variable that names each real dataset's root."""

CACHE_ENV = "HIERBENCH_DATA_CACHE"
"""The environment variable that names the decoded-tensor cache directory."""

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""The CIFAR-10 classes in the official label order (which is also alphabetical)."""

# Per-channel statistics of the training splits, on pixel values scaled to [0, 1]: the usual
# published values. Measured by hierbench on the copies in this environment: CIFAR-10 JPEG train
# mean (0.4913, 0.4821, 0.4465), std (0.2452, 0.2428, 0.2606); Tiny ImageNet 100-per-class train
# mean (0.4814, 0.4491, 0.3986), std (0.2764, 0.2686, 0.2818).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
TINY_IMAGENET_MEAN: tuple[float, float, float] = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD: tuple[float, float, float] = (0.2770, 0.2691, 0.2821)
# Uniform uint8 noise: mean 127.5/255, std sqrt((256**2 - 1) / 12) / 255.
SYNTHETIC_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SYNTHETIC_STD: tuple[float, float, float] = (0.2898, 0.2898, 0.2898)

_DEFAULT_DIRS = {"cifar10": "cifar10-jpeg", "tiny-imagenet": "tiny-imagenet-200-subset"}
_CACHE_VERSION = 1
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_DECODE_CHUNK = 512

_CIFAR10_LAYOUT = """\
A CIFAR-10 root holds one of two layouts:
  (a) torchvision's official format (what torchvision.datasets.CIFAR10 downloads):
        <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
  (b) an image-folder copy, one JPEG per image, one folder per class:
        <root>/train/<class>/*.jpg   and   <root>/test/<class>/*.jpg
      with the ten class folders airplane, automobile, bird, cat, deer, dog, frog, horse,
      ship, truck."""

_TINY_IMAGENET_LAYOUT = """\
A Tiny ImageNet root has the official tiny-imagenet-200 layout:
  <root>/wnids.txt                            the class ids, one a line (label order)
  <root>/train/<wnid>/images/<wnid>_<k>.JPEG  training images
  <root>/val/images/val_<k>.JPEG              validation images
  <root>/val/val_annotations.txt              file <TAB> wnid <TAB> x0 <TAB> y0 <TAB> x1 <TAB> y1"""

_LAYOUTS = {"cifar10": _CIFAR10_LAYOUT, "tiny-imagenet": _TINY_IMAGENET_LAYOUT}


# --------------------------------------------------------------------------------------------
# The in-memory dataset


@dataclass(frozen=True, eq=False)
class ImageData:
    """A decoded image dataset held in memory.

    Attributes:
        name: the dataset name (one of :data:`DATASETS`).
        split: the split it came from.
        images: ``uint8`` tensor (N, 3, H, W), contiguous, on the CPU.
        labels: ``int64`` tensor (N,), values in ``[0, len(classes))``.
        classes: the class names, in label order.
        mean: per-channel mean of the training split on [0, 1] pixels, for :func:`normalize`.
        std: per-channel standard deviation, likewise.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError("ImageData.images must be a uint8 tensor")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ImageData.images must be (N, 3, H, W), got {tuple(images.shape)}")
        if not images.is_contiguous():
            raise ValueError("ImageData.images must be contiguous")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
            raise TypeError("ImageData.labels must be an int64 tensor")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"ImageData.labels must be ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("ImageData.mean and ImageData.std need one value per channel")
        if labels.numel() and not (
            int(labels.min()) >= 0 and int(labels.max()) < len(self.classes)
        ):
            raise ValueError(f"ImageData.labels must lie in [0, {len(self.classes)})")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        """The number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(3, H, W)``."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    def subset(
        self, n_or_indices: int | Sequence[int] | torch.Tensor, *, seed: int = 0
    ) -> ImageData:
        """A new :class:`ImageData` holding some of the samples (copied).

        Args:
            n_or_indices: an ``int`` n picks n samples at random without replacement (seeded by
                ``seed``, kept in dataset order), so that a dataset stored class by class still
                gives a mix of classes; a sequence or 1-D tensor of indices, or a boolean mask
                of length ``len(self)``, picks exactly those samples in that order.
            seed: the seed of the random pick for an ``int``.
        """
        n = len(self)
        if isinstance(n_or_indices, bool):
            raise TypeError("subset() takes a count, indices or a boolean mask, not a bool")
        if isinstance(n_or_indices, int):
            if not 0 <= n_or_indices <= n:
                raise ValueError(f"subset({n_or_indices}) of a dataset of {n} samples")
            gen = torch.Generator().manual_seed(seed)
            index = torch.randperm(n, generator=gen)[:n_or_indices].sort().values
        else:
            index = torch.as_tensor(n_or_indices)
            if index.dtype == torch.bool:
                if index.shape != (n,):
                    raise ValueError(f"a boolean mask must have shape ({n},)")
                index = index.nonzero().squeeze(1)
            if index.dim() != 1 or (index.numel() and index.is_floating_point()):
                raise TypeError("subset() indices must be a 1-D sequence of integers")
            index = index.long()
            if index.numel() and not (-n <= int(index.min()) and int(index.max()) < n):
                raise IndexError(f"subset() index out of range for a dataset of {n} samples")
            index = torch.where(index < 0, index + n, index)
        return dataclasses.replace(
            self,
            images=self.images.index_select(0, index),
            labels=self.labels.index_select(0, index),
        )


# --------------------------------------------------------------------------------------------
# Locations


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_root(name: str) -> Path | None:
    """Where dataset ``name`` is looked for when :func:`load_dataset` gets no ``root``.

    In order: the environment variable of :data:`ROOT_ENV` (``HIERBENCH_CIFAR10_ROOT``,
    ``HIERBENCH_TINYIMAGENET_ROOT``), returned as given even if it does not exist, so that the
    error names it; else, the documented default of the environment this project is built in,
    ``<repo root>/../shared/datasets/cifar10-jpeg`` or ``.../tiny-imagenet-200-subset`` (the
    repo root is the parent of the ``hierbench`` package directory), if it is a directory; else
    ``None``. ``synthetic`` has no root: ``None``.

    Raises:
        ConfigError: ``name`` is not one of :data:`DATASETS`.
    """
    _check_name(name)
    if name not in ROOT_ENV:
        return None
    env = os.environ.get(ROOT_ENV[name])
    if env:
        return Path(env).expanduser()
    candidate = _repo_root().parent / "shared" / "datasets" / _DEFAULT_DIRS[name]
    return candidate if candidate.is_dir() else None


def default_cache_dir() -> Path:
    """The decoded-tensor cache: ``$HIERBENCH_DATA_CACHE``, else ``~/.cache/hierbench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hierbench"


# --------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    limit_per_class: int | None = None,
    download: bool = False,
    progress: bool = False,
    num_classes: int = 10,
    image_size: int = 32,
    length: int = 1024,
    seed: int = 0,
) -> ImageData:
    """Load one split of a dataset as decoded ``uint8`` tensors.

    Args:
        name: ``"cifar10"``, ``"tiny-imagenet"`` or ``"synthetic"``.
        split: ``"train"`` or ``"test"`` (CIFAR-10), ``"train"`` or ``"val"`` (Tiny ImageNet),
            ``"train"``, ``"val"`` or ``"test"`` (synthetic: each split its own random draw).
        root: the dataset directory; ``None`` uses :func:`default_root`. Ignored for synthetic.
            For CIFAR-10 it holds either torchvision's official format (``cifar-10-batches-py/``;
            the root may also be that folder itself) or an image-folder copy
            (``train/<class>/*.jpg``, ``test/<class>/*.jpg``). Tiny ImageNet: the official
            ``tiny-imagenet-200`` layout.
        cache_dir: where decoded JPEG folders are cached; ``None`` uses
            :func:`default_cache_dir`. A cache file is a ``torch.save`` of plain tensors and
            strings, read back with ``weights_only=True``; one that cannot be read is decoded
            again and replaced. Stale entries are left in place; deleting the folder is safe.
        cache: ``False`` neither reads nor writes the cache (always decode).
        limit_per_class: keep only the first this many images of each class (in file order).
        download: CIFAR-10 only: if ``root`` holds neither layout, download the official
            archive into it with torchvision's downloader (the URL and MD5 that
            ``torchvision.datasets.CIFAR10(root, download=True)`` uses). Never done unasked.
        progress: report decoding progress on stderr.
        num_classes: synthetic only: the number of classes.
        image_size: synthetic only: images are (3, image_size, image_size).
        length: synthetic only: the number of samples.
        seed: synthetic only: the random seed.

    The official CIFAR-10 files are Python pickles. hierbench reads them itself rather than through
    ``torchvision.datasets.CIFAR10``, which insists on the MD5 sums of the official files (so it
    refuses a re-packed or reduced copy) and unpickles without restriction. The unpickler here
    builds only dicts, lists, strings, numbers and numpy arrays and refuses anything else, and
    it reads only the local files under the ``root`` the caller named; nothing from elsewhere is
    ever unpickled.

    Raises:
        ConfigError: unknown ``name`` or ``split``, or ``download`` for a dataset other than
            CIFAR-10.
        DatasetError: no root, or a root without the expected layout (the message shows the
            expected layout and the environment variable to set), or an unreadable image.
        ValueError: ``limit_per_class``, ``num_classes``, ``image_size`` or ``length`` out of
            range.
    """
    _check_name(name)
    if split not in SPLITS[name]:
        raise ConfigError(
            f"unknown split {split!r} for {name}: choose one of {', '.join(SPLITS[name])}"
        )
    if limit_per_class is not None and (
        isinstance(limit_per_class, bool) or not isinstance(limit_per_class, int)
    ):
        raise TypeError("limit_per_class must be an int or None")
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be at least 1, got {limit_per_class}")
    if download and name != "cifar10":
        raise ConfigError(f"download is only available for cifar10, not {name}")

    if name == "synthetic":
        return _load_synthetic(split, num_classes, image_size, length, seed, limit_per_class)

    if root is None:
        root = default_root(name)
        if root is None:
            _fail(name, "no dataset root given, and no default root found")
    root = Path(root).expanduser()
    cache_path = (
        (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) if cache else None
    )
    opts = _Options(limit_per_class, cache_path, progress)
    if name == "cifar10":
        return _load_cifar10(root, split, download, opts)
    return _load_tiny_imagenet(root, split, opts)


@dataclass(frozen=True)
class _Options:
    limit_per_class: int | None
    cache_dir: Path | None
    progress: bool


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def _fail(name: str, problem: str) -> NoReturn:
    """Raise the :class:`DatasetError` for a missing or malformed root of dataset ``name``."""
    raise DatasetError(
        f"{name}: {problem}.\n{_LAYOUTS[name]}\n"
        f"Pass root=... or set {ROOT_ENV[name]} to such a directory."
    )


def _require_dir(name: str, root: Path) -> None:
    if not root.exists():
        _fail(name, f"dataset root {str(root)!r} does not exist")
    if not root.is_dir():
        _fail(name, f"dataset root {str(root)!r} is not a directory")


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


# ---- JPEG folders: scan, cache, decode


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


# --------------------------------------------------------------------------------------------
# Batches and augmentation


def _mix_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, the same on every platform and Python."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def crop_flip(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """Crop each image of a zero-padded batch at given offsets, and mirror some of them.

    Image ``i`` of the result is the (H, W) window at row ``top[i]``, column ``left[i]`` of
    ``x[i]`` padded by ``pad`` zeros on every side, flipped left-right where ``flip[i]``. So
    ``top = left = pad`` and ``flip = False`` give back ``x``. Works on any dtype (no conversion)
    and on the whole batch at once.

    Args:
        x: (B, C, H, W).
        top, left: integer tensors (B,) with values in ``[0, 2 * pad]``.
        flip: boolean tensor (B,).
        pad: the zero padding, >= 0.
    """
    if x.dim() != 4:
        raise ValueError(f"crop_flip() takes a (B, C, H, W) batch, got {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b, _, h, w = x.shape
    top = top.to(device=x.device, dtype=torch.int64)
    left = left.to(device=x.device, dtype=torch.int64)
    flip = flip.to(device=x.device, dtype=torch.bool)
    if top.shape != (b,) or left.shape != (b,) or flip.shape != (b,):
        raise ValueError(f"top, left and flip must have shape ({b},)")
    if b and not (
        int(top.min()) >= 0
        and int(top.max()) <= 2 * pad
        and int(left.min()) >= 0
        and int(left.max()) <= 2 * pad
    ):
        raise ValueError(f"top and left must lie in [0, {2 * pad}]")
    if pad:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        # All (2p+1)^2 windows as a view (B, 2p+1, 2p+1, C, H, W); pick one per image: one copy.
        windows = padded.unfold(2, h, 1).unfold(3, w, 1).permute(0, 2, 3, 1, 4, 5)
        out = windows[torch.arange(b, device=x.device), top, left]
    else:
        out = x.contiguous()
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


def random_crop_flip(
    x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The standard CIFAR augmentation on a whole batch: random crop with zero padding ``pad``
    (offsets uniform in ``[0, 2 * pad]``), then a horizontal flip with probability 1/2.

    Draws, in this order from ``generator``: ``top``, ``left`` (each ``randint(0, 2*pad+1,
    (B,))``) and ``flip`` (``randint(0, 2, (B,))``); then calls :func:`crop_flip`. Keeps the
    dtype (``uint8`` stays ``uint8``) and shape.
    """
    b = x.shape[0]
    top = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.randint(0, 2, (b,), generator=generator).bool()
    return crop_flip(x, top, left, flip, pad)


class BatchLoader:
    """Iterate an :class:`ImageData` in batches ``(x, y)``: ``x`` uint8 (B, 3, H, W), ``y`` int64
    (B,), both on the CPU, contiguous.

    Each pass over the loader is one epoch. The order (with ``shuffle``) and the augmentation
    (with ``augment``) of an epoch depend only on ``(seed, epoch)``. The epoch starts at 0 and
    advances by one each time an iteration starts, so plain ``for epoch ...: for x, y in
    loader`` sees a new order every epoch; :meth:`set_epoch` picks the epoch of the next
    iteration explicitly (to resume a run, or to replay an epoch).

    Args:
        data: the dataset.
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: visit the samples in a random order each epoch (else in dataset order).
        augment: apply :func:`random_crop_flip` with ``pad`` to each batch (uint8, vectorised).
        pad: the zero padding of the random crop.
        seed: the seed of the shuffling and the augmentation.
        drop_last: drop the last batch if it is smaller than ``batch_size``.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        augment: bool = False,
        pad: int = 4,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(data, ImageData):
            raise TypeError(f"BatchLoader takes an ImageData, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be an int >= 0, got {pad!r}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.pad = pad
        self.seed = seed
        self.drop_last = drop_last
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will be."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its order and augmentation)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self._epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        if self.shuffle:
            order_gen = torch.Generator().manual_seed(_mix_seed(self.seed, epoch, "order"))
            order = torch.randperm(n, generator=order_gen)
        else:
            order = torch.arange(n)
        aug_gen = torch.Generator().manual_seed(_mix_seed(self.seed, epoch, "augment"))
        images, labels = self.data.images, self.data.labels
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = images.index_select(0, index)
            if self.augment:
                x = random_crop_flip(x, self.pad, aug_gen)
            yield x, labels.index_select(0, index)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32, on ``x``'s device.

    Args:
        x: uint8 (B, C, H, W) or (C, H, W).
        mean, std: one value per channel.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize() takes a uint8 tensor, got {x.dtype}")
    if x.dim() < 3 or x.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"normalize(): {len(mean)} means / {len(std)} stds for a {tuple(x.shape)} tensor"
        )
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.to(torch.float32).div_(255.0).sub_(m).div_(s)
