"""pytest-benchmark set-up: machine info in every JSON, and same-run anchors.

Every benchmark states its anchor measured in the same run (a memcpy of the same bytes, torch's own
op, or the configured link rate) and records bytes, GB/s and the ratio to the anchor in
``extra_info``. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.anchors import memcpy_seconds, paired_roofline

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def pytest_benchmark_update_machine_info(config, machine_info):
    from hierbench import _ext

    machine_info["hierbench"] = {
        "git_sha": _git_sha(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "nproc": os.cpu_count(),
        "extension": _ext.build_info() if _ext.available() else None,
    }


@pytest.fixture(scope="session", autouse=True)
def _require_native_build():
    """Benchmarks never time a fallback: the extension must load."""
    from hierbench import _ext

    _ext.load()


@pytest.fixture
def anchor():
    """Record a result beside its memcpy anchor: ``anchor(benchmark, bytes_moved, device)``.

    ``bytes_moved`` counts bytes read + written by the measured op; the anchor copies half of that
    (a copy reads and writes each byte), so ``roofline_ratio`` = op GB/s over memcpy GB/s. With
    ``fn`` (the measured call), ``roofline_ratio_paired`` is also recorded: the median ratio of
    op/copy pairs timed back to back (:func:`benchmarks.anchors.paired_roofline`), which drifting
    memory bandwidth on a shared host does not skew.
    """

    def record(
        benchmark, bytes_read: int, bytes_written: int, device: str = "cpu", fn=None
    ) -> None:
        moved = bytes_read + bytes_written
        copy_s = memcpy_seconds(max(1, moved // 2), device)
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(
            bytes_read=bytes_read,
            bytes_written=bytes_written,
            gbps=moved / median / 1e9,
            memcpy_gbps=moved / copy_s / 1e9,
            roofline_ratio=copy_s / median,
        )
        if fn is not None:  # the op and a copy timed back to back, round after round
            benchmark.extra_info["roofline_ratio_paired"] = paired_roofline(fn, moved // 2, device)

    return record
