"""Kernel throughput against a memcpy of the same bytes, measured in the same run."""

from __future__ import annotations

import pytest
import torch

from benchmarks.anchors import time_median
from hierbench import ops

SHAPES = {
    "activation_64x128x16x16": (64, 128, 16, 16),
    "dram_256MiB": (64 * 1024 * 1024,),
}


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("group_size", [128, 4096])
def test_group_minmax(benchmark, anchor, shape_name, group_size):
    x = torch.randn(SHAPES[shape_name])
    lo = torch.empty((x.numel() + group_size - 1) // group_size)
    hi = torch.empty_like(lo)
    benchmark.group = f"group_minmax/{shape_name}"
    benchmark(ops.group_minmax, x, group_size, out=(lo, hi))
    anchor(benchmark, x.numel() * 4, lo.numel() * 8)
    # torch's own op on the same data, same run: how much faster than torch.aminmax we are.
    v = x.view(-1, group_size)
    torch_s = time_median(lambda: torch.aminmax(v, dim=1), repeat=5)
    benchmark.extra_info["speedup_vs_torch_aminmax"] = torch_s / benchmark.stats.stats.median
