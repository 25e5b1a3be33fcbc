"""Separation-point search: exhaustive argmin, constraints, fallback, crossover rate."""

from __future__ import annotations

import itertools
import math

import pytest

from hierbench.runtime import model as rm
from hierbench.runtime.codec_bytes import DEFAULT_CODECS
from hierbench.runtime.model import Conventions, Scenario
from hierbench.runtime.partition import crossover_rate, search
from hierbench.spec.links import LinkSpec
from tests.runtime.helpers import block, profile

# The hand-computed cases spell out PAPER.md's formula: latency in every pipeline period.
NOFRAME = Conventions(frame_overhead=False, latency="per-message")


def four_cut_profile():
    """Cuts shrink in bytes and grow in edge cost, like a real network."""
    return profile(
        [
            block("c1", 0, numel=4000, fwd=0.05, bwd=0.1, step=0.001, exit_conv=0.01, peak=100),
            block("c2", 1, numel=2000, fwd=0.05, bwd=0.1, step=0.002, exit_conv=0.01, peak=200),
            block("c3", 2, numel=1000, fwd=0.1, bwd=0.2, step=0.004, exit_conv=0.02, peak=400),
            block("c4", 3, numel=250, fwd=0.2, bwd=0.4, step=0.008, exit_conv=0.02, peak=800),
            block("classifier", 4, fwd=0.001, bwd=0.001, step=0.001, cut=False),
        ],
        t_full=1.3,
        batch=1,
        input_bytes=3072,
    )


def scenario(rate=1e5, **kw) -> Scenario:
    kw.setdefault("n_batches", 100)
    return Scenario(four_cut_profile(), LinkSpec(rate, 4 * rate, 0.01), **kw)


@pytest.mark.parametrize("rate", [1e4, 1e5, 1e6, 1e7])
def test_search_is_the_exhaustive_argmin(rate):
    sc = scenario(rate)
    result = search(sc)
    totals = {
        (cut, c.name): rm.hierarchical(sc, cut, c).total_s
        for cut, c in itertools.product(sc.edge.cuts, DEFAULT_CODECS)
    }
    best = min(totals, key=totals.get)
    base = rm.cloud_only(sc).total_s
    if totals[best] < base:
        assert result.method == "hierarchical"
        assert (result.best.cut, result.best.codec) == best
        assert result.reduction_vs_cloud == pytest.approx(1 - totals[best] / base)
        split = rm.split_learning(sc, *best).total_s
        assert result.reduction_vs_split == pytest.approx(1 - totals[best] / split)
    else:
        assert result.method == "cloud-only" and result.best is None
    assert len(result.candidates) == 16
    assert not result.accuracy_checked
    assert any("accuracy constraint not applied" in n for n in result.notes)


def test_memory_budget_is_honoured():
    sc = scenario(1e3)
    free = search(sc)
    assert free.best.cut == "c4"  # the smallest activations win on a very slow link
    limited = search(sc, memory_budget_bytes=400)
    assert limited.best.cut in ("c1", "c2", "c3")
    assert all(c.edge_peak_bytes <= 400 for c in limited.feasible)
    excluded = [c for c in limited.candidates if not c.feasible]
    assert {c.cut for c in excluded} == {"c4"}
    assert all("memory" in c.reasons[0] for c in excluded)
    # the best under the budget is the argmin over the allowed candidates
    allowed = [c for c in limited.candidates if c.edge_peak_bytes <= 400]
    assert limited.best.hierarchical.total_s == min(c.hierarchical.total_s for c in allowed)


def test_accuracy_tolerance_is_honoured():
    sc = scenario(1e4)
    free = search(sc)
    best = (free.best.cut, free.best.codec)
    table = {(c.cut, c.codec): 0.90 for c in free.candidates}
    table[best] = 0.80  # the fastest loses 10 points
    table.pop(("c4", "q4"))  # unknown: must be excluded
    result = search(sc, accuracy=table, baseline_accuracy=0.905, tolerance=0.01)
    assert result.accuracy_checked
    assert (result.best.cut, result.best.codec) != best
    assert result.best.accuracy >= 0.905 - 0.01
    reasons = {(c.cut, c.codec): c.reasons for c in result.candidates}
    assert "accuracy unknown" in reasons[("c4", "q4")]
    assert any("accuracy" in r for r in reasons[best])
    with pytest.raises(ValueError, match="baseline"):
        search(sc, accuracy=table)


def test_falls_back_to_cloud_only():
    # an infinitely fast link: only compute matters, and the cloud is 10x faster than the edge
    sc = Scenario(four_cut_profile(), LinkSpec(math.inf, math.inf, 0), n_batches=100)
    result = search(sc)
    assert result.method == "cloud-only" and result.best is None
    assert result.reduction_vs_cloud == 0.0
    assert any("beats cloud-only" in n for n in result.notes)
    # and when the constraints exclude everything
    none = search(scenario(1e4), memory_budget_bytes=10)
    assert none.method == "cloud-only"
    assert any("constraints" in n for n in none.notes)


def test_crossover_rate_exact_single_batch():
    """n = 1, no latency, no frame header: cloud-only T = 8·D0/R + t_full, hierarchical
    T = max(t_eF + 8·D/R + t_C, t_E) (the edge's own step ends the run when it is longer), so
    hierarchical wins below R* = 8(D0 − D) / (t_eF + t_C − t_full) if the first term is the
    larger there, else below R* = 8·D0 / (t_E − t_full)."""
    prof = profile(
        [
            block("a", 0, numel=1000, fwd=0.3, bwd=0.5, step=0.1, exit_conv=0.2),
            block("classifier", 1, fwd=0.1, bwd=0.1, bwd_no=0.05, step=0.05, cut=False),
        ],
        t_full=0.2,
        batch=1,
        input_bytes=3072,
    )
    sc = Scenario(
        prof, LinkSpec(1e6, 1e6, 0.0), n_batches=1, cloud_speedup=1.0, conventions=NOFRAME
    )
    d0 = rm.raw_bytes(sc)
    d = rm.activation_bytes(sc, "a", "q8")
    t_c = 0.1 + 0.05 + 0.05
    t_e = 0.3 + 0.2 + 0.5 + 0.1  # forward, exit head, backward, step
    expected = 8 * (d0 - d) / (0.3 + t_c - 0.2)
    if 0.3 + 8 * d / expected + t_c < t_e:  # the edge's step is the longer at that rate
        expected = 8 * d0 / (t_e - 0.2)
        assert 0.3 + 8 * d / expected + t_c <= t_e
    cross = crossover_rate(sc, codecs=["q8"])
    assert cross.wins_below
    assert cross.sign_changes == 1
    assert cross.rate_bps == pytest.approx(expected, rel=1e-5)
    # just below it hierarchical wins, just above it loses
    for factor, wins in ((0.99, True), (1.01, False)):
        s = sc.with_link(LinkSpec(expected * factor, expected * factor, 0.0))
        assert (rm.hierarchical(s, "a", "q8").total_s < rm.cloud_only(s).total_s) is wins


def test_crossover_large_n_approximation():
    """Many batches, no latency: R* ≈ 8·D0 / max(t_E, t_C) for the best candidate."""
    sc = scenario(1e5, n_batches=100_000, conventions=NOFRAME)
    sc = sc.with_link(LinkSpec(1e5, 4e5, 0.0))
    cross = crossover_rate(sc)
    assert cross.wins_below and cross.sign_changes == 1
    d0 = rm.raw_bytes(sc)
    # the winner just below R* is the candidate with the smallest compute floor that beats it
    floors = [
        max(h.t_E, h.t_C)
        for c in search(sc.with_link(LinkSpec(cross.rate_bps * 0.999, 1e12, 0.0))).candidates
        for h in [c.hierarchical]
    ]
    assert cross.rate_bps == pytest.approx(8 * d0 / min(floors), rel=1e-3)


def test_crossover_never_and_always():
    # D(s) > D0 at every cut with fp32: never wins
    sc = scenario(1e5, conventions=NOFRAME)
    never = crossover_rate(sc, cuts=["c1"], codecs=["fp32"])
    assert never.rate_bps == 0.0 and "never" in never.describe()
    # a cloud 100x slower than the edge: hierarchical (cloud part is tiny) always wins at c4
    slow_cloud = scenario(1e5, cloud_speedup=0.01)
    always = crossover_rate(slow_cloud, cuts=["c4"], codecs=["q2"])
    assert math.isinf(always.rate_bps) and "every" in always.describe()
