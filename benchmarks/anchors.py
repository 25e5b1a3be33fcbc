"""Same-run anchors for benchmarks: medians of plain timed loops (memcpy, torch ops)."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_median(
    fn, *, device="cpu", repeat: int = 7, warmup: int = 2, min_time_s: float = 0.2
) -> float:
    """Median wall time of ``fn()`` in seconds (synchronising CUDA), for same-run anchors.

    At least ``repeat`` timed calls, and more until ``min_time_s`` seconds of them: a fast op
    timed only a few times right after warm-up reads high (frequency ramp, thread-pool wake-up),
    which would flatter the ratio of a benchmark to its anchor.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < repeat or sum(times) < min_time_s:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_MEMCPY_CACHE: dict[tuple[int, str], float] = {}


def memcpy_seconds(nbytes: int, device: str = "cpu") -> float:
    """Median time of copying ``nbytes`` into a preallocated buffer on ``device`` (the roofline)."""
    key = (nbytes, str(device))
    if key not in _MEMCPY_CACHE:
        src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
        dst = torch.empty_like(src)
        _MEMCPY_CACHE[key] = time_median(lambda: dst.copy_(src), device=device)
    return _MEMCPY_CACHE[key]


def paired_roofline(fn, copy_nbytes: int, device: str = "cpu", rounds: int = 15) -> float:
    """Median over ``rounds`` of (memcpy time / ``fn`` time), the two timed back to back in each
    round, the copy on ``copy_nbytes`` bytes (half the bytes ``fn`` moves).

    On a shared host the memory bandwidth drifts between seconds; a ratio of two medians taken at
    different moments can move by ±30 % while each pair, timed within milliseconds, sees the
    same machine.
    """
    src = torch.empty(max(1, copy_nbytes), dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    fn()
    dst.copy_(src)
    sync(device)
    ratios = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        sync(device)
        t1 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        t2 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(ratios)
