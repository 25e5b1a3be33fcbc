"""Models: VGG-16-BN and ResNet-18 as ordered named blocks, split at named cuts; early exits.

Responsibility: the networks, where they can be cut, what crosses each cut (shape and bytes per
sample, computed without data), and the early-exit heads. Allowed imports: torch and
``hierbench.errors`` only (no data, codec or method code).

Example::

    model = build_model("resnet18", 10, stem="imagenet", input_size=32)
    edge, cloud = split(model, "layer3")      # cloud(edge(x)) == model(x), shared parameters
    head = attach_exit(model, "layer3")       # the edge's early exit (conv head)
    model.cut_bytes("layer3", bits=8)         # 1024 bytes per sample
    print(describe(model))
"""

from __future__ import annotations

from hierbench.models.base import (
    CLASSIFIER,
    IN_CHANNELS,
    STEMS,
    Split,
    SplittableModel,
    count_parameters,
    cut_table,
    describe,
    split,
    unknown,
)
from hierbench.models.heads import EXIT_HEADS, attach_exit, exit_head
from hierbench.models.resnet import BasicBlock, resnet18
from hierbench.models.vgg import vgg16

__all__ = [
    "CLASSIFIER",
    "EXIT_HEADS",
    "IN_CHANNELS",
    "MODELS",
    "STEMS",
    "BasicBlock",
    "Split",
    "SplittableModel",
    "attach_exit",
    "build_model",
    "count_parameters",
    "cut_table",
    "describe",
    "exit_head",
    "resnet18",
    "split",
    "vgg16",
]

#: Architectures :func:`build_model` knows.
MODELS = ("vgg16", "resnet18")
_BUILDERS = {"vgg16": vgg16, "resnet18": resnet18}


def build_model(
    name: str, num_classes: int = 10, *, stem: str = "cifar", input_size: int = 32
) -> SplittableModel:
    """Build ``name`` (one of ``MODELS``) for ``num_classes`` classes and square inputs.

    Args:
        name: ``"vgg16"`` (VGG-16-BN) or ``"resnet18"``.
        num_classes: output classes (10 for CIFAR-10, 200 for Tiny ImageNet).
        stem: ``"cifar"`` or ``"imagenet"`` (see ``STEMS``; VGG records it but has no stem).
        input_size: input side in pixels (32, 64, ...); cut shapes refer to it.

    Raises:
        ConfigError: unknown ``name`` or ``stem`` (the message lists the choices), or an
            ``input_size`` too small for the network.
    """
    if name not in _BUILDERS:
        raise unknown("model", name, MODELS)
    if stem not in STEMS:
        raise unknown("stem", stem, STEMS)
    return _BUILDERS[name](num_classes, stem=stem, input_size=input_size)
