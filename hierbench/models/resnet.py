"""ResNet-18 (BasicBlock) as named blocks: ``stem``, ``layer1``..``layer4``, ``classifier``.

Cuts sit only between blocks (after the stem and after each stage), never inside a residual
block. Two stems:

- ``"cifar"``: conv3x3 stride 1 (64) + BN + ReLU, no max-pool (the common CIFAR ResNet-18; at
  32×32 every cut is larger than the raw image).
- ``"imagenet"``: torchvision's conv7x7 stride 2 pad 3 + BN + ReLU + maxpool 3x3 stride 2 pad 1;
  with it the network has exactly torchvision's ``resnet18(num_classes=K)`` parameter shapes,
  in the same order.

Initialisation follows torchvision: Kaiming-normal (fan_out, ReLU) convolutions, BatchNorm weight
1 and bias 0, PyTorch's default Linear.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from hierbench.models.base import (
    CLASSIFIER,
    IN_CHANNELS,
    STEMS,
    SplittableModel,
    _positive_int,
    unknown,
)

__all__ = ["BasicBlock", "resnet18"]

_WIDTHS = (64, 128, 256, 512)
_STRIDES = (1, 2, 2, 2)
_DEPTHS = (2, 2, 2, 2)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; identity shortcut, or 1x1 conv + BN when the shape changes."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place on `out`, never on the block's input
        return self.relu(out)


def _stem(kind: str) -> nn.Sequential:
    if kind == "cifar":
        return nn.Sequential(
            OrderedDict(
                conv=_conv3x3(IN_CHANNELS, 64),
                bn=nn.BatchNorm2d(64),
                relu=nn.ReLU(inplace=True),
            )
        )
    if kind == "imagenet":
        return nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(IN_CHANNELS, 64, kernel_size=7, stride=2, padding=3, bias=False),
                bn=nn.BatchNorm2d(64),
                relu=nn.ReLU(inplace=True),
                maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        )
    raise unknown("stem", kind, STEMS)


def resnet18(
    num_classes: int = 10, *, stem: str = "cifar", input_size: int = 32
) -> SplittableModel:
    """ResNet-18 with the given stem; cuts ``stem``, ``layer1``..``layer4``.

    Raises:
        ConfigError: unknown ``stem``, or ``input_size`` too small.
    """
    _positive_int("num_classes", num_classes)
    blocks: list[tuple[str, nn.Module]] = [("stem", _stem(stem))]
    inplanes = 64
    for i, (planes, stride, depth) in enumerate(zip(_WIDTHS, _STRIDES, _DEPTHS), start=1):
        layer = [BasicBlock(inplanes, planes, stride)]
        layer += [BasicBlock(planes, planes) for _ in range(depth - 1)]
        blocks.append((f"layer{i}", nn.Sequential(*layer)))
        inplanes = planes
    classifier = nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            fc=nn.Linear(inplanes, num_classes),
        )
    )
    blocks.append((CLASSIFIER, classifier))
    for _, block in blocks:
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    notes = {
        "cifar": "resnet18 stem=cifar: conv3x3 stride 1, no max-pool (the common CIFAR ResNet-18)",
        "imagenet": "resnet18 stem=imagenet: torchvision's conv7x7/2 + maxpool3x3/2",
    }
    return SplittableModel(
        blocks,
        name="resnet18",
        stem=stem,
        input_size=input_size,
        num_classes=num_classes,
        notes=(notes[stem],),
    )
