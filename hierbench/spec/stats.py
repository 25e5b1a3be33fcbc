"""Small statistics for results over seeds, torch-free: mean ± sample std, and a difference
paired by seed with its two-sided 95 % Student-t interval (the converge and fleet-accuracy
reports)."""

from __future__ import annotations

import math
import statistics

__all__ = ["T975", "mean_std", "paired_drop", "t975"]

#: Two-sided 95 % Student-t quantiles t_{0.975, df}, df = 1..30 (beyond: 1.96).
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a t-interval needs at least 2 paired values")
    return T975[df - 1] if df <= len(T975) else 1.96


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than 1 / 2 values)."""
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def paired_drop(base: dict[int, float], other: dict[int, float]) -> dict | None:
    """The drop ``base − other`` paired by seed: mean, sample std, 95 % t-interval, n.

    Only seeds present in both count; None when fewer than one pair. With one pair the interval
    is None (no variance estimate).
    """
    seeds = sorted(set(base) & set(other))
    if not seeds:
        return None
    d = [base[s] - other[s] for s in seeds]
    mean = statistics.fmean(d)
    if len(d) < 2:
        return {"n": 1, "mean": mean, "std": None, "lo": None, "hi": None, "seeds": seeds}
    sd = statistics.stdev(d)
    half = t975(len(d) - 1) * sd / math.sqrt(len(d))
    return {
        "n": len(d),
        "mean": mean,
        "std": sd,
        "lo": mean - half,
        "hi": mean + half,
        "seeds": seeds,
    }
