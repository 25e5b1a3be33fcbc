"""Loader throughput (images/s) beside a ResNet-18 training step's throughput, same run.

The data path (cached uint8 tensors → augment → normalise) must cost well under 10 % of training
time; ``extra_info`` carries both rates and the share.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.anchors import time_median
from hierbench import data, models

BATCH = 128


@pytest.fixture(scope="module")
def cifar10():
    return data.load_dataset("cifar10", "train")


def _resnet18_step_seconds(ds) -> float:
    model = models.build_model("resnet18", 10, stem="imagenet", input_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = data.normalize(ds.images[:BATCH], ds.mean, ds.std)
    y = ds.labels[:BATCH]

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return time_median(step, repeat=5, warmup=1)


def test_loader_epoch_vs_resnet18_step(benchmark, cifar10):
    loader = data.BatchLoader(cifar10, BATCH, shuffle=True, augment=True, drop_last=True)

    def epoch():
        for x, _ in loader:
            data.normalize(x, cifar10.mean, cifar10.std)

    benchmark.group = "data"
    benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
    images = len(loader) * BATCH
    loader_ips = images / benchmark.stats.stats.median
    train_ips = BATCH / _resnet18_step_seconds(cifar10)
    benchmark.extra_info.update(
        images_per_epoch=images,
        loader_images_per_s=loader_ips,
        resnet18_train_images_per_s=train_ips,
        loader_share_of_training_pct=100 * train_ips / loader_ips,
        threads=torch.get_num_threads(),
    )
