"""The datasets hierbench knows: names, splits, classes, per-channel statistics, the expected
layout of each real dataset's root, and where that root is looked for (:func:`default_root`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from hierbench.errors import ConfigError, DatasetError

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


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


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
