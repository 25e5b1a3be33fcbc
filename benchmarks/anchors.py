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


def _seconds(fn, calls: int, device) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / calls


def paired_ratio(
    fn, other, device: str = "cpu", rounds: int = 15, min_sample_s: float = 0.002
) -> float:
    """Median over ``rounds`` of (``fn`` time / ``other`` time), the two timed back to back.

    On a shared host the memory bandwidth and the clock drift between seconds; a ratio of two
    medians taken at different moments can move by ±30 % while each pair, timed within
    milliseconds, sees the same machine. Each sample repeats a call until it lasts about
    ``min_sample_s`` (a 0.1 ms op is timed over ~20 calls), and the order of the two alternates
    between rounds so that neither always runs on the other's warm caches.
    """
    fn()
    other()
    sync(device)
    calls = max(1, round(min_sample_s / max(_seconds(fn, 1, device), 1e-7)))
    ratios = []
    for r in range(rounds):
        if r % 2:
            b = _seconds(other, calls, device)
            a = _seconds(fn, calls, device)
        else:
            a = _seconds(fn, calls, device)
            b = _seconds(other, calls, device)
        ratios.append(a / b)
    return statistics.median(ratios)


def paired_times(
    fn, other, device: str = "cpu", rounds: int = 15, min_sample_s: float = 0.002
) -> dict:
    """``fn`` and ``other`` timed alike: one warm-up call each, then ``rounds`` rounds in which
    the two are timed back to back (order alternating), each sample repeating its call until it
    lasts about ``min_sample_s`` (counted per side, so a 3 s reference and a 10 ms kernel both get
    whole calls). Returns the median seconds per call of each over the same rounds (``fn_s``,
    ``other_s``), the median of the per-round ratios ``fn / other`` (``ratio_paired``), and
    ``rounds``.

    For comparing two things of very different speed (an eager reference against a kernel):
    both see the same warm-up, the same number of rounds and the same moments of a drifting
    machine, unlike one cold call of the slow one beside the other's benchmark median.
    """
    fn()
    other()
    sync(device)
    calls_fn = max(1, round(min_sample_s / max(_seconds(fn, 1, device), 1e-7)))
    calls_other = max(1, round(min_sample_s / max(_seconds(other, 1, device), 1e-7)))
    a_s, b_s, ratios = [], [], []
    for r in range(rounds):
        if r % 2:
            b = _seconds(other, calls_other, device)
            a = _seconds(fn, calls_fn, device)
        else:
            a = _seconds(fn, calls_fn, device)
            b = _seconds(other, calls_other, device)
        a_s.append(a)
        b_s.append(b)
        ratios.append(a / b)
    return {
        "fn_s": statistics.median(a_s),
        "other_s": statistics.median(b_s),
        "ratio_paired": statistics.median(ratios),
        "rounds": rounds,
    }


def paired_roofline(fn, copy_nbytes: int, device: str = "cpu", rounds: int = 15) -> float:
    """Median over ``rounds`` of (memcpy time / ``fn`` time), timed back to back
    (:func:`paired_ratio`), the copy on ``copy_nbytes`` bytes (half the bytes ``fn`` moves)."""
    src = torch.empty(max(1, copy_nbytes), dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    return paired_ratio(lambda: dst.copy_(src), fn, device, rounds)
