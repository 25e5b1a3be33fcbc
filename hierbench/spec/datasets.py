"""Each dataset's label count and input size, as the models, profiles and runtime model see them.

Images are ``(3, image_size, image_size)`` uint8. ``synthetic`` (random images, for tests and
smoke runs) stands in for CIFAR-10's shape; it has no profiles and no published numbers, so it is
in :data:`INPUT_SHAPES` (what a run may train on) but not in :data:`DATASET_SHAPES` (the real
datasets that profiles and the paper's tables cover).
"""

from __future__ import annotations

from typing import NamedTuple

from hierbench.errors import ConfigError

__all__ = ["DATASET_SHAPES", "INPUT_SHAPES", "TRAIN_SAMPLES", "DatasetShape", "dataset_shape"]


class DatasetShape(NamedTuple):
    """``(num_classes, image_size)``; unpacks as a pair."""

    num_classes: int
    image_size: int


#: The real datasets: CIFAR-10 (32×32) and Tiny ImageNet (64×64).
DATASET_SHAPES: dict[str, DatasetShape] = {
    "cifar10": DatasetShape(10, 32),
    "tiny-imagenet": DatasetShape(200, 64),
}

#: Training-set sizes (samples) of the published datasets, from which the runtime model derives
#: batches per epoch. The Tiny ImageNet folder of this environment is a 100-images-per-class
#: subset; runs count what they load, predictions of the paper's schedule use the full size.
TRAIN_SAMPLES: dict[str, int] = {"cifar10": 50_000, "tiny-imagenet": 100_000}

#: Everything a run may use: the real datasets and ``synthetic``.
INPUT_SHAPES: dict[str, DatasetShape] = {**DATASET_SHAPES, "synthetic": DatasetShape(10, 32)}


def dataset_shape(name: str, *, synthetic: bool = False) -> DatasetShape:
    """The shape of dataset ``name``; ``synthetic=True`` also accepts ``"synthetic"``.

    Raises:
        ConfigError: an unknown name; the message lists the known ones.
    """
    table = INPUT_SHAPES if synthetic else DATASET_SHAPES
    if name not in table:
        raise ConfigError(f"unknown dataset {name!r}; valid choices: {', '.join(table)}")
    return table[name]
