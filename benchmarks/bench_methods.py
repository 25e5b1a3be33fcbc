"""Harness overhead: hierarchical training through roles and engine, against a plain loop.

Same model, cut, data, optimizer and seed; the hierarchical run goes through an unshaped
in-process engine link (one process, cloud role in a thread), the anchor is the same math in one
plain PyTorch loop (``hierbench.methods.plain``) — including the codec's encode + decode of the
cut activations, which is part of the method's math (a test holds the two to identical
parameters), so that ``overhead_pct`` (target <= 5 %) measures the harness: roles, threads,
messages, engine. ``overhead_vs_codec_free_pct`` compares with the plain loop without the codec
round trip, to show what the codec itself costs (its speed is in bench_codec.py).

Both sides are treated alike:

* **Parallelism: none on either side.** The process is pinned to one CPU (``cpu`` in
  ``extra_info``; ``HIERBENCH_BENCH_CPU`` picks it, default the last one allowed) and torch runs
  one thread, for the plain loop and for both roles. The plain loop runs edge and cloud math in
  turn on that core; the roles' edge and cloud threads share it. Letting the roles overlap edge
  and cloud on two cores against a one-core loop would credit the harness with the method's
  pipelining (which the two-process timing runs measure), not measure its cost.
* **Warm-up: the same.** Before the timed rounds, one untimed round of every side. Inside each
  call, the roles run their untimed warm-up pass (``methods.parts.warm_up``: forward + backward on
  a synthetic batch, every parameter, buffer and gradient restored) before their clock starts;
  the plain loop gets the same pass on its freshly built parts before its clock starts (a wrapper
  of ``plain._model_parts`` for this benchmark only; the benchmark checks that the losses are
  unchanged by it). Without it, the plain loop's clock includes a first step's one-off costs
  (~0.1–0.3 s of a ~4 s run here) that the roles' clock does not.
* **Clock and pairing.** Harness: the run record's training wall clock (first edge step to last
  cloud step; set-up and warm-up excluded). Plain loop: ``loop_s`` (first batch to last step;
  model building excluded). Each round times the two plain loops and then the harness, back to
  back; ``overhead_pct`` is the median over rounds of the per-round ratio (this shared VM drifts
  between seconds), ``overhead_best_pct`` the ratio of the best times.

``extra_info`` keeps every round's times and the load average (``benchmarks/conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import statistics

import pytest
import torch

from hierbench.methods import RunConfig, run
from hierbench.methods import plain as plain_mod
from hierbench.methods.parts import synthetic_input, warm_up
from hierbench.methods.plain import train_plain

STEPS = 12
ROUNDS = 5


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
        threads_edge=1,
        threads_cloud=1,
    )


def _bench_cpu() -> int:
    allowed = sorted(os.sched_getaffinity(0))
    cpu = int(os.environ.get("HIERBENCH_BENCH_CPU", allowed[-1]))
    if cpu not in allowed:
        raise ValueError(f"HIERBENCH_BENCH_CPU={cpu} is not among the allowed CPUs {allowed}")
    return cpu


@contextlib.contextmanager
def _one_core_one_thread(cpu: int):
    """This thread (and every thread it starts: cloud role, engine, sender) on ``cpu`` only, torch
    on one thread; both restored afterwards."""
    old_aff, old_threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        os.sched_setaffinity(0, old_aff)


def _warmed_model_parts(original):
    """``plain._model_parts`` followed by the roles' own warm-up pass on the parts (edge + exit
    head on a synthetic input batch, cloud on a synthetic cut activation), as the edge and cloud
    roles do before their clock starts."""

    def parts(cfg):
        model, edge, cloud, head = original(cfg)
        shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
        warm_up([edge], synthetic_input(shape), head, cfg.num_classes)
        cut = (cfg.batch_size, *model.cut_shape(cfg.cut))
        warm_up([cloud], synthetic_input(cut), None, cfg.num_classes)
        return model, edge, cloud, head

    return parts


@pytest.mark.parametrize("codec", ["fp32", "q8"])
def test_hierarchical_harness_vs_plain_loop(benchmark, codec, monkeypatch):
    cfg = _cfg(codec)
    cpu = _bench_cpu()
    original_parts = plain_mod._model_parts
    with _one_core_one_thread(cpu):
        monkeypatch.setattr(plain_mod, "_model_parts", _warmed_model_parts(original_parts))

        plain_s: list[float] = []
        plain_free_s: list[float] = []
        walls: list[float] = []
        losses: list = []

        def plain_pair():  # untimed by pytest-benchmark; each loop reports its own clock
            r = train_plain(cfg)
            losses.append(r["losses"])
            plain_s.append(r["loop_s"])
            plain_free_s.append(train_plain(cfg, codec=False)["loop_s"])

        def harness():
            walls.append(run(cfg, progress=False)["totals"]["wall_s"])

        benchmark.group = "methods/harness-overhead"
        # setup runs before every round, the warm-up round included: both sides warm up alike.
        benchmark.pedantic(harness, setup=plain_pair, rounds=ROUNDS, warmup_rounds=1)

        # After the timed rounds: the warm-up pass leaves the plain loop's math unchanged.
        monkeypatch.setattr(plain_mod, "_model_parts", original_parts)
        assert train_plain(cfg)["losses"] == losses[-1], "warm_up changed the plain loop's math"

    # drop the warm-up round on both sides
    plain_s, plain_free_s, walls = plain_s[1:], plain_free_s[1:], walls[1:]
    paired = [h / p for h, p in zip(walls, plain_s, strict=True)]
    paired_free = [h / p for h, p in zip(walls, plain_free_s, strict=True)]
    benchmark.extra_info.update(
        steps=STEPS,
        batch=cfg.batch_size,
        rounds=ROUNDS,
        parallelism="none: process pinned to one CPU, 1 torch thread, both sides",
        cpu=cpu,
        threads=1,
        warm_up="1 untimed round per side; the roles' warm_up pass inside every call of both",
        plain_loop_s_rounds=plain_s,
        plain_loop_codec_free_s_rounds=plain_free_s,
        harness_s_rounds=walls,
        plain_loop_s=min(plain_s),
        plain_loop_codec_free_s=min(plain_free_s),
        harness_s=min(walls),
        overhead_pct=100 * (statistics.median(paired) - 1),
        overhead_vs_codec_free_pct=100 * (statistics.median(paired_free) - 1),
        overhead_best_pct=100 * (min(walls) / min(plain_s) - 1),
        overhead_pct_rounds=[100 * (r - 1) for r in paired],
    )
