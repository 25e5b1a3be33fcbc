"""Harness overhead: hierarchical training through roles and engine, against a plain loop.

Same model, cut, data, optimizer and seed; the hierarchical run goes through an unshaped
in-process engine link (one process, cloud role in a thread), the anchor is the same math in one
plain PyTorch loop (``hierbench.methods.plain``), timed in the same run — including the codec's
encode + decode of the cut activations, which is part of the method's math (a test holds the two
to identical parameters), so that ``overhead_pct`` (target <= 5 %) measures the harness: roles,
threads, messages, engine. ``overhead_vs_codec_free_pct`` compares with the plain loop without
the codec round trip, to show what the codec itself costs (its speed is in bench_codec.py).
Best of the rounds on both sides, set-up excluded; same torch thread count. The roles may overlap
edge and cloud work on two cores, which the plain loop cannot, so a negative overhead is possible
and is reported as measured.
"""

from __future__ import annotations

import pytest
import torch

from hierbench.methods import RunConfig, run
from hierbench.methods.plain import train_plain

STEPS = 12


def _cfg(codec: str) -> RunConfig:
    return RunConfig(
        method="hierarchical",
        model="resnet18",
        stem="imagenet",
        cut="layer3",
        codec=codec,
        dataset="cifar10",
        limit_per_class=200,
        batch_size=128,
        epochs=1,
        batches_per_epoch=STEPS,
        link=None,
        eval="none",
        threads_edge=2,
        threads_cloud=2,
    )


@pytest.mark.parametrize("codec", ["fp32", "q8"])
def test_hierarchical_harness_vs_plain_loop(benchmark, codec):
    cfg = _cfg(codec)
    torch.set_num_threads(2)
    train_plain(cfg.replace(batches_per_epoch=2))  # warm caches (dataset, allocator)
    plain_s = min(train_plain(cfg)["loop_s"] for _ in range(2))
    plain_free_s = min(train_plain(cfg, codec=False)["loop_s"] for _ in range(2))

    walls: list[float] = []

    def harness():
        walls.append(run(cfg, progress=False)["totals"]["wall_s"])

    benchmark.group = "methods/harness-overhead"
    benchmark.pedantic(harness, rounds=3, iterations=1, warmup_rounds=1)
    harness_s = min(walls[1:])  # training wall clock (first edge step to last cloud step)
    benchmark.extra_info.update(
        steps=STEPS,
        batch=cfg.batch_size,
        plain_loop_s=plain_s,
        plain_loop_codec_free_s=plain_free_s,
        harness_s=harness_s,
        overhead_pct=100 * (harness_s / plain_s - 1),
        overhead_vs_codec_free_pct=100 * (harness_s / plain_free_s - 1),
        threads=torch.get_num_threads(),
    )
