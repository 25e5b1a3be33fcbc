""":class:`ImageData`: a decoded image dataset held in memory as ``uint8`` tensors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


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


#: The seed of the validation hold-out draw: fixed, so that every run (any seed, any method)
#: tunes on the same held-out images and trains on the same rest.
HOLDOUT_SEED = 14


def holdout_split(
    data: ImageData, n: int, *, seed: int = HOLDOUT_SEED
) -> tuple[ImageData, ImageData]:
    """Carve ``n`` images out of ``data`` (a training split) for validation.

    Returns ``(rest, held)``: ``held`` is a uniform random draw of ``n`` images (seeded by
    ``seed``, in dataset order, split name ``"<split>-holdout"``), ``rest`` the others in dataset
    order. The two are disjoint and together are ``data``; the draw depends only on ``len(data)``
    and ``seed``.

    Raises:
        ValueError: ``n`` is not in ``[1, len(data) - 1]``.
    """
    total = len(data)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < total:
        raise ValueError(f"a hold-out of {n!r} images out of {total}: need 1 <= n < {total}")
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(total, dtype=torch.bool)
    mask[torch.randperm(total, generator=gen)[:n]] = True
    held = dataclasses.replace(data.subset(mask), split=f"{data.split}-holdout")
    return data.subset(~mask), held
