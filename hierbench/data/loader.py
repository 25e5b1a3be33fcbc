"""Batches and augmentation: :class:`BatchLoader` (seeded shuffling and augmentation per epoch),
:func:`crop_flip` / :func:`random_crop_flip` on whole ``uint8`` batches, and :func:`normalize`."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch

from hierbench.data.image_data import ImageData


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
