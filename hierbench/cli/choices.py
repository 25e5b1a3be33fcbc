"""Argument choices shared by several subcommands."""

from __future__ import annotations

#: dataset -> (classes, input size) of the commands that build a model without loading data.
DATASET_INPUT = {"cifar10": (10, 32), "tiny-imagenet": (200, 64)}
