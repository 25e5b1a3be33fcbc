"""Splittable networks: an ordered list of named blocks whose boundaries are the cut points.

A :class:`SplittableModel` is ``blocks[0] -> blocks[1] -> ... -> blocks["classifier"]``. Every
block boundary before the classifier is a *cut* (a separation point): :func:`split` hands the
blocks up to and including the cut to the edge and the rest to the cloud, sharing the very same
module objects, so ``cloud(edge(x))`` runs exactly the operations of ``model(x)``.

Cut shapes and sizes are computed without data: the blocks are run on ``device="meta"`` tensors
(shapes only, no storage, no arithmetic) through :func:`torch.func.functional_call`, so they work
for a model on any device, even one whose parameters are themselves on ``meta``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from hierbench.errors import ConfigError

__all__ = [
    "CLASSIFIER",
    "IN_CHANNELS",
    "STEMS",
    "Split",
    "SplittableModel",
    "count_parameters",
    "cut_table",
    "describe",
    "split",
    "unknown",
]

#: Input stems. ``cifar``: 3x3 stride-1 first conv, no max-pool. ``imagenet``: torchvision's.
STEMS = ("cifar", "imagenet")
#: Name of the last block (pooling + linear classifier); never a cut.
CLASSIFIER = "classifier"
#: Input channels (RGB).
IN_CHANNELS = 3


def unknown(what: str, value: object, choices: Iterable[str]) -> ConfigError:
    """The ConfigError for a name that is not one of ``choices``; the message lists them."""
    return ConfigError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class SplittableModel(nn.Module):
    """A classifier made of named blocks, cuttable at every block boundary.

    Args:
        blocks: ``(name, module)`` pairs in execution order; the last one must be named
            ``"classifier"`` and map features to logits ``(B, num_classes)``.
        name: architecture name (``"vgg16"``, ``"resnet18"``).
        stem: the stem that was asked for (recorded as given; see ``notes``).
        input_size: the square input side the model is configured for; cut shapes refer to it
            (the network itself accepts other sizes, see ``cut_shape(..., input_size=)``).
        num_classes: number of output classes.
        notes: conventions worth printing next to results (e.g. "VGG has no stem").

    Raises:
        ConfigError: ``input_size`` is too small for the network (a block would get an empty
            feature map).
    """

    def __init__(
        self,
        blocks: Sequence[tuple[str, nn.Module]],
        *,
        name: str,
        stem: str,
        input_size: int,
        num_classes: int,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        names = [n for n, _ in blocks]
        if not names or names[-1] != CLASSIFIER:
            raise ValueError(f"the last block must be named {CLASSIFIER!r}, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"block names must be unique, got {names}")
        self.blocks = nn.ModuleDict(OrderedDict(blocks))
        self.name = name
        self.stem = stem
        self.input_size = _positive_int("input_size", input_size)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.notes = tuple(notes)
        self._shape_cache: dict[int, dict[str, tuple[int, int, int]]] = {}
        self.cut_shapes()  # fail now, with a clear message, if input_size is too small

    # -- structure -----------------------------------------------------------------------------
    @property
    def cuts(self) -> tuple[str, ...]:
        """The cut names in execution order (every block but the classifier)."""
        return tuple(self.blocks)[:-1]

    def check_cut(self, cut: str) -> str:
        """Return ``cut`` if it names a cut of this model, else raise ConfigError listing them."""
        if cut not in self.cuts:
            raise unknown(f"{self.name} cut", cut, self.cuts)
        return cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, 3, H, W)``."""
        for block in self.blocks.values():
            x = block(x)
        return x

    def config(self) -> dict[str, Any]:
        """The settings that define this model, for run records."""
        return {
            "model": self.name,
            "stem": self.stem,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "cuts": list(self.cuts),
            "parameters": count_parameters(self),
            "notes": list(self.notes),
        }

    # -- shapes, without data --------------------------------------------------------------------
    def cut_shapes(self, input_size: int | None = None) -> dict[str, tuple[int, int, int]]:
        """``{cut: (C, H, W)}`` per sample for a square input of side ``input_size``.

        Computed on ``meta`` tensors (no data, no arithmetic), cached per input size.
        """
        size = self.input_size if input_size is None else _positive_int("input_size", input_size)
        if size not in self._shape_cache:
            self._shape_cache[size] = self._trace(size)
        return dict(self._shape_cache[size])

    def _trace(self, size: int) -> dict[str, tuple[int, int, int]]:
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)
        # batch 2: a training-mode BatchNorm refuses a single value per channel
        x = torch.empty(2, IN_CHANNELS, size, size, dtype=dtype, device="meta")
        shapes: dict[str, tuple[int, int, int]] = {}
        with torch.no_grad():
            for name, block in self.blocks.items():
                state = {
                    k: torch.empty_like(v, device="meta")
                    for k, v in chain(block.named_parameters(), block.named_buffers())
                }
                try:
                    x = functional_call(block, state, (x,))
                except RuntimeError as exc:  # e.g. "Output size is too small"
                    raise ConfigError(
                        f"input_size {size} is too small for {self.name} (stem {self.stem!r}): "
                        f"block {name!r} fails on its {tuple(x.shape[1:])} input: {exc}"
                    ) from exc
                if name != CLASSIFIER:
                    if x.dim() != 4 or 0 in x.shape:
                        raise ConfigError(
                            f"input_size {size} is too small for {self.name}: block {name!r} "
                            f"gives {tuple(x.shape[1:])}"
                        )
                    shapes[name] = tuple(int(d) for d in x.shape[1:])  # type: ignore[assignment]
        return shapes

    def cut_shape(self, cut: str, input_size: int | None = None) -> tuple[int, int, int]:
        """``(C, H, W)`` of the activations at ``cut``, per sample."""
        return self.cut_shapes(input_size)[self.check_cut(cut)]

    def cut_channels(self, cut: str) -> int:
        """Channels of the activations at ``cut`` (the exit head's input width)."""
        return self.cut_shape(cut)[0]

    def cut_numel(self, cut: str, input_size: int | None = None) -> int:
        """Values per sample at ``cut``."""
        return math.prod(self.cut_shape(cut, input_size))

    def cut_bytes(self, cut: str, bits: int = 32, input_size: int | None = None) -> int:
        """Bytes per sample at ``cut`` with ``bits`` bits a value: ``ceil(numel * bits / 8)``.

        Payload only: no codec header, scales or entropy coding.
        """
        bits = _positive_int("bits", bits)
        return -(-self.cut_numel(cut, input_size) * bits // 8)

    def input_bytes(self, input_size: int | None = None) -> int:
        """Bytes of one raw input image as uint8 pixels (``3 * H * W``)."""
        size = self.input_size if input_size is None else _positive_int("input_size", input_size)
        return IN_CHANNELS * size * size

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, stem={self.stem!r}, input_size={self.input_size}, "
            f"num_classes={self.num_classes}, cuts={self.cuts}"
        )


class Split(NamedTuple):
    """The two sides of a cut. Both are ``nn.Sequential`` views over the model's own blocks."""

    edge: nn.Sequential
    cloud: nn.Sequential


def split(model: SplittableModel, cut: str) -> Split:
    """Cut ``model`` after block ``cut``: ``(edge, cloud)``.

    ``edge`` runs the blocks up to and including ``cut``; ``cloud`` runs the rest, classifier
    included (after the last cut, only the classifier). Both hold the model's own module objects
    (no copies: same parameters, same BatchNorm buffers), so ``cloud(edge(x))`` is exactly
    ``model(x)`` and training either side trains the model. Block names are kept as the child
    names (``edge.layer3``, ``cloud.classifier``).

    Raises:
        ConfigError: ``cut`` is not one of ``model.cuts`` (the message lists them).
    """
    if not isinstance(model, SplittableModel):
        raise TypeError(f"split() needs a SplittableModel, got {type(model).__name__}")
    names = list(model.blocks)
    stop = names.index(model.check_cut(cut)) + 1
    edge = nn.Sequential(OrderedDict((n, model.blocks[n]) for n in names[:stop]))
    cloud = nn.Sequential(OrderedDict((n, model.blocks[n]) for n in names[stop:]))
    # the containers' own flag only; the shared blocks keep whatever mode they are in
    edge.training = cloud.training = model.training
    return Split(edge, cloud)


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter values in ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def cut_table(
    model: SplittableModel, bits: Sequence[int] = (32, 8, 4, 2), input_size: int | None = None
) -> list[dict[str, Any]]:
    """One row per cut: shape, values, bytes per sample at each of ``bits``, edge parameters.

    ``reduction_8bit`` is ``1 - bytes_at_8_bits / raw_uint8_image_bytes``: the upload saving of
    sending 8-bit activations instead of the raw image (negative: the activations are larger).
    """
    raw = model.input_bytes(input_size)
    rows = []
    for cut in model.cuts:
        edge, _ = split(model, cut)
        row: dict[str, Any] = {
            "cut": cut,
            "shape": model.cut_shape(cut, input_size),
            "numel": model.cut_numel(cut, input_size),
        }
        for b in bits:
            row[f"bytes_{b}bit"] = model.cut_bytes(cut, b, input_size)
        row["raw_bytes"] = raw
        row["reduction_8bit"] = 1.0 - model.cut_bytes(cut, 8, input_size) / raw
        row["edge_params"] = count_parameters(edge)
        rows.append(row)
    return rows


def describe(
    model: SplittableModel, bits: Sequence[int] = (32, 8, 4, 2), input_size: int | None = None
) -> str:
    """A Markdown table of the cuts of ``model``: shape and bytes per sample at ``bits`` bits."""
    size = model.input_size if input_size is None else input_size
    rows = cut_table(model, bits, input_size)
    header = [
        "cut",
        "C×H×W",
        "values",
        *(f"B@{b}bit" for b in bits),
        "saving@8bit vs raw",
        "edge params",
    ]
    lines = [
        f"{model.name}, stem={model.stem}, input {IN_CHANNELS}×{size}×{size} "
        f"(raw uint8 {model.input_bytes(input_size)} B), {model.num_classes} classes, "
        f"{count_parameters(model):,} parameters",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for r in rows:
        cells = [
            r["cut"],
            "×".join(str(d) for d in r["shape"]),
            str(r["numel"]),
            *(str(r[f"bytes_{b}bit"]) for b in bits),
            f"{r['reduction_8bit']:+.0%}",
            f"{r['edge_params']:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.extend(f"note: {n}" for n in model.notes)
    return "\n".join(lines)
