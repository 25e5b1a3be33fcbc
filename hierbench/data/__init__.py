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

Modules: ``catalog`` (names, splits, classes, statistics, layouts, :func:`default_root`),
``image_data`` (:class:`ImageData`), ``sources`` (CIFAR-10 pickles or image folder, Tiny
ImageNet, synthetic), ``jpeg`` (scanning and decoding JPEG folders), ``cache`` (the decoded-tensor
disk cache), ``loader`` (:class:`BatchLoader`, augmentation, :func:`normalize`); this module:
:func:`load_dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

from hierbench.data.cache import CACHE_ENV, default_cache_dir
from hierbench.data.catalog import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASETS,
    ROOT_ENV,
    SPLITS,
    SYNTHETIC_MEAN,
    SYNTHETIC_STD,
    TINY_IMAGENET_MEAN,
    TINY_IMAGENET_STD,
    _check_name,
    _fail,
    default_root,
)
from hierbench.data.image_data import HOLDOUT_SEED, ImageData, holdout_split
from hierbench.data.loader import BatchLoader, crop_flip, normalize, random_crop_flip
from hierbench.data.sources import _load_cifar10, _load_synthetic, _load_tiny_imagenet, _Options
from hierbench.errors import ConfigError

__all__ = [
    "CACHE_ENV",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "HOLDOUT_SEED",
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
    "holdout_split",
    "load_dataset",
    "normalize",
    "random_crop_flip",
]


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
