"""The runtime model against hand-computed cases, its limits, and split ≥ hierarchical."""

from __future__ import annotations

import math
import random

import pytest

from hierbench.errors import ConfigError
from hierbench.runtime import model as rm
from hierbench.runtime.codec_bytes import (
    CodecSetting,
    encoded_bytes,
    frame_overhead_bytes,
    label_bytes,
    parse_codec,
    quant_overhead_bytes,
)
from hierbench.runtime.model import Conventions, Scenario
from hierbench.spec.links import PRESETS, LinkSpec, parse_link
from tests.runtime.helpers import block, profile, toy_profile

# The hand-computed cases spell out PAPER.md's formula: latency in every pipeline period.
NOFRAME = Conventions(frame_overhead=False, latency="per-message")
# 1000 B/s up, 2000 B/s down, 0.1 s one way
LINK = LinkSpec(8000, 16000, 0.1)


def toy(link: LinkSpec = LINK, **kw) -> Scenario:
    kw.setdefault("conventions", NOFRAME)
    kw.setdefault("cloud_speedup", 2.0)
    kw.setdefault("n_batches", 5)
    return Scenario(toy_profile(), link, **kw)


# -- hand-computed cases (numbers in tests/runtime/helpers.py: toy_profile) ----------------------
def test_cloud_only_hand_computed():
    p = rm.cloud_only(toy())
    # D0 = 3000 B pixels + 10 B labels; t_up = 3.01 + 0.1; t_full = 8 / 2
    assert p.bytes_up == 3010
    assert p.t_L == pytest.approx(3.11)
    assert p.t_C == pytest.approx(4.0)
    assert p.total_s == pytest.approx((3.11 + 4) + 4 * 4)
    assert p.bottleneck == "cloud"


def test_hierarchical_hand_computed():
    p = rm.hierarchical(toy(), "a", "q8")
    # D = 1000 codes + 8 * ceil(1000 / 128) scale/offset bytes + 10 label bytes
    assert p.bytes_up == 1000 + 64 + 10
    t_L = 1.074 + 0.1
    t_E = 1 + 0.3 + 1.5 + 0.5  # fwd + exit + bwd (block 0: no input grad) + step
    t_C = (2 + 0.5) / 2 + (3 + 1) / 2 + (1 + 0.2) / 2  # cloud: b (no input grad) + classifier
    assert (p.t_E, p.t_L, p.t_C) == pytest.approx((t_E, t_L, t_C))
    assert p.fill_s == pytest.approx(1 + t_L + t_C)
    assert p.total_s == pytest.approx(max(1 + t_L + t_C + 4 * max(t_E, t_L, t_C), 5 * t_E))
    assert p.bottleneck == "cloud"
    assert p.bytes_down == 0


def test_split_hand_computed():
    p = rm.split_learning(toy(), "a", "q8")
    up = 1.074 + 0.1
    down = 4000 / 2000 + 0.1  # fp32 gradient, 1000 values
    cloud = (2 + 0.5) / 2 + (4 + 1) / 2 + (1 + 0.2) / 2  # b's backward includes the input grad
    edge = 1 + 1.5 + 0.5
    assert p.bytes_down == 4000
    assert p.total_s == pytest.approx(5 * (edge + up + cloud + down))
    assert (p.t_E, p.t_L, p.t_C) == pytest.approx((edge, up + down, cloud))


def test_upload_once_and_epochs():
    sc = toy(
        epochs=3,
        conventions=Conventions(upload="once", frame_overhead=False, latency="per-message"),
    )
    base = rm.cloud_only(sc)
    # first epoch pipelined, the two others cloud compute only
    assert base.total_s == pytest.approx((3.11 + 4) + 4 * 4 + 2 * 5 * 4)
    every = rm.cloud_only(toy(epochs=3))
    assert every.total_s == pytest.approx((3.11 + 4) + 14 * 4)
    # activations are re-sent every epoch under both conventions
    h_once, h_every = rm.hierarchical(sc, "a", "q8"), rm.hierarchical(toy(epochs=3), "a", "q8")
    assert h_once.total_s == pytest.approx(h_every.total_s)
    assert h_once.n_batches == 15


def test_pipelined_latency_pays_tau_once():
    slow = LinkSpec(800, 800, 0.5)  # link-bound
    a = rm.hierarchical(toy(link=slow), "a", "q8")
    b = rm.hierarchical(
        toy(link=slow, conventions=Conventions(frame_overhead=False, latency="pipelined")),
        "a",
        "q8",
    )
    assert a.t_L == pytest.approx(1074 * 8 / 800 + 0.5)
    assert b.t_L == pytest.approx(1074 * 8 / 800)
    assert a.total_s - b.total_s == pytest.approx(4 * 0.5)


def test_edge_slowdown_and_codec_time():
    k = 3.0
    codec = CodecSetting("q4", encode_Bps=4000.0, decode_Bps=8000.0)
    p = rm.hierarchical(toy(edge_slowdown=k), "a", codec)
    # encode 1000 fp32 values = 4000 B at 4000 B/s = 1 s, × k; decode 0.5 s / cloud factor 2
    assert p.parts["t_enc"] == pytest.approx(3.0)
    assert p.parts["t_dec"] == pytest.approx(0.25)
    assert p.t_E == pytest.approx(k * (1 + 0.3 + 1.5 + 0.5) + 3.0)
    q = rm.hierarchical(toy(), "a", "q4")
    assert p.t_C == pytest.approx(q.t_C + 0.25)


def test_cloud_factor_defaults():
    assert Scenario(toy_profile(), LINK, n_batches=1).cloud_factor == rm.DEFAULT_CLOUD_SPEEDUP
    cloud = toy_profile(device="cuda")
    sc = Scenario(toy_profile(), LINK, n_batches=1, cloud=cloud)
    assert sc.cloud_factor == 1.0
    assert rm.cloud_only(sc).t_C == pytest.approx(8.0)
    assert any("ASSUMED" in line for line in Scenario(toy_profile(), LINK, n_batches=1).lines())


def test_incompatible_cloud_profile():
    other = profile([block("a", 0), block("classifier", 1, cut=False)], batch=32)
    with pytest.raises(ConfigError, match="batch"):
        Scenario(toy_profile(), LINK, n_batches=1, cloud=other)


def test_unknown_cut_lists_cuts():
    with pytest.raises(ConfigError, match="a, b"):
        rm.hierarchical(toy(), "classifier", "q8")


def test_batches_per_epoch():
    assert rm.batches_per_epoch("cifar10", 128) == 391
    assert rm.batches_per_epoch("tiny-imagenet", 128) == 782
    with pytest.raises(ConfigError):
        rm.batches_per_epoch("synthetic", 128)


# -- limits --------------------------------------------------------------------------------------
def test_edge_bound_hierarchical_ends_with_the_edges_last_step():
    """End-to-end clock: when the edge is the bottleneck and its post-upload tail (exit head,
    backward, step) outlasts link + cloud, the run ends with the edge's last step, N·t_E."""
    sc = Scenario(toy_profile(), LinkSpec(math.inf, math.inf, 0.0), n_batches=4, edge_slowdown=10)
    h = rm.hierarchical(sc, "b", "fp32")
    assert h.bottleneck == "edge"
    cloud_last = h.parts["t_eF"] + h.parts["t_enc"] + h.t_L + h.t_C + 3 * h.t_E
    assert 4 * h.t_E > cloud_last
    assert h.total_s == pytest.approx(4 * h.t_E)
    assert rm.hierarchical_time(1.0, 3.0, 0.5, 0.5, 4) == pytest.approx(12.0)
    assert rm.hierarchical_time(1.0, 3.0, 0.5, 2.5, 4) == pytest.approx(1.0 + 0.5 + 2.5 + 9.0)


def test_a_timed_whole_edge_step_scales_the_edge_terms():
    """Cut ``a``'s parts add to 1 + 1.5 + 0.5 + 0.3 = 3.3; a profile that timed the whole edge
    step at 4.4 scales each edge term by 4/3 (proportions kept); other cuts and heads keep the
    block sums."""
    link = LinkSpec(math.inf, math.inf, 0.0)
    plain = rm.hierarchical(Scenario(toy_profile(), link, n_batches=3), "a", "fp32")
    timed = toy_profile(edge_step_s={"a": {"conv": 4.4}})
    assert timed.edge_whole_step("a") == 4.4
    assert timed.edge_whole_step("b") is None and timed.edge_whole_step("a", "minimal") is None
    h = rm.hierarchical(Scenario(timed, link, n_batches=3, edge_slowdown=2), "a", "fp32")
    for term in ("t_eF", "t_eB", "t_eU", "t_X"):
        assert h.parts[term] == pytest.approx(2 * plain.parts[term] * 4.4 / 3.3)
    assert h.t_E == pytest.approx(2 * 4.4)
    b_plain = rm.hierarchical(Scenario(toy_profile(), link, n_batches=3), "b", "fp32")
    assert rm.hierarchical(Scenario(timed, link, n_batches=3), "b", "fp32") == b_plain


def test_infinite_link_is_compute_bound():
    sc = Scenario(toy_profile(), LinkSpec(math.inf, math.inf, 0.0), n_batches=7, cloud_speedup=2)
    base = rm.cloud_only(sc)
    assert base.total_s == pytest.approx(7 * 4.0)
    for cut in ("a", "b"):
        for codec in ("fp32", "q2"):
            h = rm.hierarchical(sc, cut, codec)
            assert h.t_L == 0
            assert h.bottleneck != "link"
            cloud_last = h.parts["t_eF"] + h.t_C + 6 * max(h.t_E, h.t_C)
            assert h.total_s == pytest.approx(max(cloud_last, 7 * h.t_E))  # whichever ends later
            s = rm.split_learning(sc, cut, codec)
            assert s.t_L == 0
            assert s.total_s == pytest.approx(7 * (s.t_E + s.t_C))


def test_free_compute_is_link_bound():
    free = profile(
        [
            block("a", 0, numel=100, fwd=0, bwd=0, step=0, exit_conv=0, exit_minimal=0),
            block("b", 1, numel=50, fwd=0, bwd=0, step=0, exit_conv=0, exit_minimal=0),
            block("classifier", 2, fwd=0, bwd=0, step=0, cut=False),
        ],
        t_full=0.0,
    )
    sc = Scenario(free, LinkSpec(1e4, 1e4, 0.0), n_batches=50, conventions=NOFRAME)
    base = rm.cloud_only(sc)
    for cut in ("a", "b"):
        for codec in ("fp32", "q8", "q4", "q2"):
            h = rm.hierarchical(sc, cut, codec)
            assert h.bottleneck == "link"
            d, d0 = rm.activation_bytes(sc, cut, codec), rm.raw_bytes(sc)
            assert h.reduction_vs(base) == pytest.approx(1 - d / d0)


# -- split learning is never faster than hierarchical ---------------------------------------------
def _random_case(rng: random.Random, exit_zero: bool) -> tuple[Scenario, str]:
    blocks = []
    for i, name in enumerate(("a", "b", "c")):
        bwd_no = rng.uniform(0, 2)
        blocks.append(
            block(
                name,
                i,
                numel=rng.randint(1, 5000),
                fwd=rng.uniform(0, 2),
                bwd=bwd_no + rng.uniform(0, 1),  # the input gradient never costs < 0
                bwd_no=bwd_no,
                step=rng.uniform(0, 1),
                exit_conv=0.0 if exit_zero else rng.uniform(0, 1),
            )
        )
    blocks.append(block("classifier", 3, fwd=rng.uniform(0, 1), bwd=rng.uniform(0, 1), cut=False))
    prof = profile(blocks, t_full=rng.uniform(0, 10), input_bytes=rng.randint(1, 10**5))
    rate = 10 ** rng.uniform(3, 9)
    link = LinkSpec(rate, rate * rng.uniform(0.2, 5), rng.uniform(0, 0.2))
    conv = Conventions(latency=rng.choice(rm.LATENCY_MODES))
    sc = Scenario(
        prof,
        link,
        n_batches=rng.randint(1, 500),
        epochs=rng.randint(1, 3),
        cloud_speedup=10 ** rng.uniform(-1, 2),
        edge_slowdown=rng.uniform(0.5, 5),
        conventions=conv,
    )
    return sc, rng.choice(("a", "b", "c"))


@pytest.mark.parametrize("exit_zero", [True, False])
def test_split_never_faster_than_hierarchical(exit_zero):
    """Condition: t_X <= everything split learning's edge waits for per batch (upload, cloud
    compute, gradient download, codec time); always true when t_X = 0 ("equal edge compute"),
    and given bwd_s >= bwd_noinput_s (the input gradient costs >= 0)."""
    rng = random.Random(1234 + exit_zero)
    checked = 0
    for _ in range(400):
        sc, cut = _random_case(rng, exit_zero)
        for codec in ("fp32", "q8", "q2"):
            s = rm.split_learning(sc, cut, codec)
            h = rm.hierarchical(sc, cut, codec)
            wait = s.t_L + s.t_C
            if h.parts["t_X"] <= wait:
                assert s.total_s >= h.total_s * (1 - 1e-12)
                checked += 1
    assert checked > 300


def test_split_can_win_when_the_exit_head_dominates():
    """The condition above is needed: a huge exit head on an infinite link with a free cloud."""
    prof = profile(
        [
            block("a", 0, fwd=1, bwd=1, step=0, exit_conv=100.0),
            block("classifier", 1, fwd=0, bwd=0, step=0, cut=False),
        ]
    )
    sc = Scenario(prof, LinkSpec(math.inf, math.inf, 0), n_batches=10)
    assert rm.split_learning(sc, "a", "q8").total_s < rm.hierarchical(sc, "a", "q8").total_s


# -- wire and link --------------------------------------------------------------------------------
def test_wire_bytes():
    assert quant_overhead_bytes(1000) == 8 * 8
    assert quant_overhead_bytes(128) == 8
    assert quant_overhead_bytes(129) == 16
    assert frame_overhead_bytes(4) == 92
    assert encoded_bytes(1000, CodecSetting("fp32")) == 4000 + 92
    assert encoded_bytes(1000, CodecSetting("q4")) == 500 + 64 + 92
    assert encoded_bytes(1001, CodecSetting("q2"), frame=False) == 251 + 64
    assert encoded_bytes(1000, CodecSetting("q8", zstd=True), zstd_ratio=2.0) == 532 + 92
    assert encoded_bytes(1000, CodecSetting("q8", zstd=True, zstd_ratio=4.0)) == 266 + 92
    assert label_bytes(128, 10, "byte") == 128
    assert label_bytes(128, 10, "log2") == 64
    assert label_bytes(128, 200, "log2") == 128


@pytest.mark.parametrize(
    ("spec", "wire", "zstd"),
    [
        ("fp32", "fp32", False),
        ("32", "fp32", False),
        ("8", "q8", False),
        ("8bit", "q8", False),
        ("int4", "q4", False),
        ("q2+zstd", "q2", True),
        ("q4+zstd1", "q4", True),
    ],
)
def test_parse_codec(spec, wire, zstd):
    c = parse_codec(spec)
    assert (c.wire, c.zstd) == (wire, zstd)


def test_parse_codec_unknown():
    with pytest.raises(ConfigError, match="fp32, q8, q4, q2"):
        parse_codec("q3")


def test_link_presets_and_parsing():
    assert PRESETS["3g"] == LinkSpec(1e6, 4e6, 0.075, "3g")
    assert parse_link("4g").down_bps == 40e6
    assert parse_link("wifi").latency_s == pytest.approx(5e-3)
    assert parse_link("lan").up_bps == 1e9
    l20 = parse_link("20mbit")
    assert (l20.up_bps, l20.down_bps, l20.latency_s) == (20e6, 20e6, 0.0)
    assert parse_link("20mbit/5ms").latency_s == pytest.approx(5e-3)
    asym = parse_link("1mbit:4mbit/75ms")
    assert (asym.up_bps, asym.down_bps, asym.latency_s) == (1e6, 4e6, pytest.approx(0.075))
    assert parse_link("500kbit/0.2ms").up_bps == 5e5
    assert parse_link("inf").up_bps == math.inf
    assert parse_link("3g").with_up_rate(2e6).down_bps == 8e6


@pytest.mark.parametrize("bad", ["5g", "20mbps", "20mbit/5", "", "fast"])
def test_link_unknown_lists_presets(bad):
    with pytest.raises(ConfigError, match="3g, 4g, wifi, lan"):
        parse_link(bad)
