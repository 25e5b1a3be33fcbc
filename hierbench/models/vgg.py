"""VGG-16 with BatchNorm as named blocks: ``pool1``..``pool5``, ``classifier``.

The feature stack is torchvision's configuration "D" with batch norm (``vgg16_bn().features``,
same parameter shapes in the same order, convs with bias as torchvision has them): five stages of
3x3 conv + BN + ReLU (64, 64 | 128, 128 | 256 ×3 | 512 ×3 | 512 ×3), each closed by a 2x2
max-pool. Each stage is one block, named after its pool; the cut points are after each pool.

VGG has no stem: its first layer is already a 3x3 conv (torchvision's VGG *is* the "imagenet"
one). ``stem`` is accepted for API uniformity and recorded, but ``"cifar"`` and ``"imagenet"``
build the same network; ``model.notes`` says so.

Classifier (a choice, also recorded in ``model.notes``): adaptive average pool to 1×1 + flatten +
``Linear(512, num_classes)``, the common CIFAR VGG head. torchvision's 7×7×512 → 4096 → 4096 MLP
would add ~120M parameters and is meant for 224×224 inputs.

Initialisation follows torchvision: Kaiming-normal (fan_out, ReLU) convs with zero bias,
BatchNorm 1/0, Linear N(0, 0.01) with zero bias.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from hierbench.models.base import (
    CLASSIFIER,
    IN_CHANNELS,
    STEMS,
    SplittableModel,
    _positive_int,
    unknown,
)

__all__ = ["VGG16_STAGES", "vgg16"]

#: Convolution widths of each stage of configuration "D"; every stage ends with a max-pool.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _stage(cin: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True)]
        cin = w
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg16(num_classes: int = 10, *, stem: str = "cifar", input_size: int = 32) -> SplittableModel:
    """VGG-16-BN; cuts ``pool1``..``pool5``. ``stem`` is recorded only (both give one network).

    Raises:
        ConfigError: unknown ``stem``, or ``input_size`` too small (it must be >= 32: five
            2×2 pools).
    """
    _positive_int("num_classes", num_classes)
    if stem not in STEMS:
        raise unknown("stem", stem, STEMS)
    blocks: list[tuple[str, nn.Module]] = []
    cin = IN_CHANNELS
    for i, widths in enumerate(VGG16_STAGES, start=1):
        blocks.append((f"pool{i}", _stage(cin, widths)))
        cin = widths[-1]
    classifier = nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            fc=nn.Linear(cin, num_classes),
        )
    )
    blocks.append((CLASSIFIER, classifier))
    for _, block in blocks:
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
    notes = (
        f"vgg16 has no stem: stem={stem!r} is recorded only; 'cifar' and 'imagenet' build the "
        "same torchvision vgg16_bn feature stack",
        "vgg16 classifier: global average pool + Linear(512, K), not torchvision's 4096-wide MLP",
    )
    return SplittableModel(
        blocks,
        name="vgg16",
        stem=stem,
        input_size=input_size,
        num_classes=num_classes,
        notes=notes,
    )
