"""Early-exit heads: the small classifier the edge trains on its own side of the cut.

- ``"conv"`` (default): conv3x3 (C→C, padding 1, no bias) + BN + ReLU + global average pool +
  flatten + ``Linear(C, K)``.
- ``"minimal"`` (ablation): global average pool + flatten + ``Linear(C, K)``.

A head is a separate module: it is never registered inside the model, so the model's parameters
(and ``split``'s edge/cloud) stay exactly the backbone's.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from hierbench.models.base import SplittableModel, _positive_int, unknown

__all__ = ["EXIT_HEADS", "attach_exit", "exit_head"]

EXIT_HEADS = ("conv", "minimal")


def exit_head(in_channels: int, num_classes: int, kind: str = "conv") -> nn.Sequential:
    """An early-exit classifier ``(B, in_channels, H, W) -> (B, num_classes)``.

    Raises:
        ConfigError: unknown ``kind`` (the message lists ``EXIT_HEADS``).
    """
    if kind not in EXIT_HEADS:
        raise unknown("exit head", kind, EXIT_HEADS)
    c = _positive_int("in_channels", in_channels)
    k = _positive_int("num_classes", num_classes)
    layers: list[tuple[str, nn.Module]] = []
    if kind == "conv":
        conv = nn.Conv2d(c, c, kernel_size=3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        layers += [("conv", conv), ("bn", nn.BatchNorm2d(c)), ("relu", nn.ReLU(inplace=True))]
    layers += [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten(1)),
        ("fc", nn.Linear(c, k)),
    ]
    return nn.Sequential(OrderedDict(layers))


def attach_exit(model: SplittableModel, cut: str, kind: str = "conv") -> nn.Sequential:
    """A new exit head sized for ``model`` at ``cut`` (``model.cut_channels(cut)`` → classes).

    The head is created on the device and dtype of the model's parameters. It is returned, not
    registered in ``model``: train it alongside ``split(model, cut).edge``.

    Raises:
        ConfigError: unknown ``cut`` or ``kind``.
    """
    head = exit_head(model.cut_channels(cut), model.num_classes, kind)
    ref = next(model.parameters(), None)
    if ref is not None:
        head = head.to(device=ref.device, dtype=ref.dtype)
    return head
