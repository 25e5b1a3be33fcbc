"""pytest-benchmark set-up: machine info in every JSON, one file per run, and same-run anchors.

Every benchmark states its anchor measured in the same run (a memcpy of the same bytes, torch's own
op, or the configured link rate) and records bytes, GB/s and the ratio to the anchor in
``extra_info``. Nothing here is a pass/fail threshold.

``--bench-save SUITE`` writes the session's JSON to ``results/bench/<UTC start>_<cpu>_<sha>
[-dirty]_<suite>.json`` (:mod:`benchmarks.record`), created at the start so that no run ever
replaces another's file; ``make bench`` uses it. ``machine_info["hierbench"]`` records the git
SHA and a separate ``git_dirty`` flag, the CPU, the command, and the load average at the start and
the end of the session; each benchmark's ``extra_info`` gets ``loadavg_before`` /
``loadavg_after`` (1, 5, 15 min) around its own test.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from benchmarks import record
from benchmarks.anchors import memcpy_seconds, paired_roofline
from hierbench.spec.provenance import cpu_model

# What the machine looked like when this session started (conftest import = session start).
_START = {"utc": record.now(), **record.load()}
_GIT = record.git_state()


def pytest_addoption(parser):
    parser.getgroup("hierbench").addoption(
        "--bench-save",
        metavar="SUITE",
        default=None,
        help="write the benchmark JSON to results/bench/<UTC start>_<cpu>_<git sha>[-dirty]_"
        "<SUITE>.json (never overwrites an existing file)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    suite = config.getoption("--bench-save", default=None)
    if not suite:
        return
    if config.getoption("benchmark_json", default=None):
        raise pytest.UsageError("--bench-save names the JSON file itself: drop --benchmark-json")
    name = record.json_name(_START["utc"], cpu_model(), *_GIT, suite)
    try:
        path = record.reserve(record.BENCH_DIR, name)
    except (FileExistsError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.option.benchmark_json = path
    config._hierbench_reserved = path


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Remove a reserved file that no benchmark filled (the run failed or selected nothing)."""
    path = getattr(config, "_hierbench_reserved", None)
    if path is not None and path.exists() and path.stat().st_size == 0:
        path.unlink()


def pytest_benchmark_update_machine_info(config, machine_info):
    from hierbench import _ext

    end = record.load()
    machine_info["hierbench"] = {
        "git_sha": _GIT[0],
        "git_dirty": _GIT[1],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_family": record.cpu_family(),
        "torch_threads": torch.get_num_threads(),
        "nproc": os.cpu_count(),
        "extension": _ext.build_info() if _ext.available() else None,
        "command": " ".join(["pytest", *sys.argv[1:]]),
        "started_utc": _START["utc"].isoformat(timespec="seconds"),
        "finished_utc": record.now().isoformat(timespec="seconds"),
        "loadavg_start": _START["loadavg"],
        "loadavg_end": end["loadavg"],
        "proc_loadavg_start": _START["proc_loadavg"],
        "proc_loadavg_end": end["proc_loadavg"],
    }


@pytest.fixture(autouse=True)
def _load_around_each_benchmark(request):
    """The load average before and after each benchmark, in its ``extra_info``."""
    before = record.load()["loadavg"]
    yield
    bench = request.node.funcargs.get("benchmark")
    if bench is not None:
        bench.extra_info["loadavg_before"] = before
        bench.extra_info["loadavg_after"] = record.load()["loadavg"]


@pytest.fixture(scope="session", autouse=True)
def _require_native_build():
    """Benchmarks never time a fallback: the extension must load."""
    from hierbench import _ext

    _ext.load()


#: What ``roofline_ratio`` compares with, written into every benchmark's ``extra_info`` and the
#: terminal summary, so that a figure can be compared with another harness's.
ROOFLINE_DEFINITION = (
    "roofline = dst.copy_(src) of memcpy_bytes = (bytes_read + bytes_written) // 2 bytes "
    "(a copy reads and writes each byte: it moves the op's bytes); bytes_read = the input "
    "(numel * itemsize), bytes_written = the output (quantize: payload + 8 bytes of scale and "
    "offset per group); roofline_ratio = copy time / op time (1.0 = as fast as a copy of the "
    "same bytes moved)"
)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"hierbench benchmarks: {ROOFLINE_DEFINITION}")


@pytest.fixture
def anchor():
    """Record a result beside its memcpy anchor: ``anchor(benchmark, bytes_moved, device)``.

    ``bytes_moved`` counts bytes read + written by the measured op; the anchor copies half of that
    (a copy reads and writes each byte), so ``roofline_ratio`` = op GB/s over memcpy GB/s. With
    ``fn`` (the measured call), ``roofline_ratio_paired`` is also recorded: the median ratio of
    op/copy pairs timed back to back (:func:`benchmarks.anchors.paired_roofline`), which drifting
    memory bandwidth on a shared host does not skew.
    """

    def record_anchor(
        benchmark, bytes_read: int, bytes_written: int, device: str = "cpu", fn=None
    ) -> None:
        moved = bytes_read + bytes_written
        copy_s = memcpy_seconds(max(1, moved // 2), device)
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(
            roofline_definition=ROOFLINE_DEFINITION,
            memcpy_bytes=max(1, moved // 2),
            bytes_read=bytes_read,
            bytes_written=bytes_written,
            gbps=moved / median / 1e9,
            memcpy_gbps=moved / copy_s / 1e9,
            roofline_ratio=copy_s / median,
        )
        if fn is not None:  # the op and a copy timed back to back, round after round
            benchmark.extra_info["roofline_ratio_paired"] = paired_roofline(fn, moved // 2, device)

    return record_anchor
