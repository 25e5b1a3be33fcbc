"""The many-edges runtime model (hierbench.runtime.scale) against hand-computed cases, its
reduction to the one-edge model, and its input checks."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hierbench.errors import ConfigError
from hierbench.runtime import model as rm
from hierbench.runtime.model import Conventions, Scenario
from hierbench.runtime.scale import (
    Fleet,
    allreduce_time,
    fedavg_bytes,
    saturation,
    scale_predict,
)
from hierbench.runtime.table import PAPER_CONFIGS, load_for
from hierbench.spec.links import LinkSpec
from tests.runtime.helpers import toy_profile

REPO = Path(__file__).resolve().parents[2]
NOFRAME = Conventions(frame_overhead=False, latency="per-message")
LINK = LinkSpec(8000, 16000, 0.1)  # 1000 B/s up, 2000 B/s down, 0.1 s one way


def toy(**kw) -> Scenario:
    kw.setdefault("conventions", NOFRAME)
    kw.setdefault("cloud_speedup", 2.0)
    kw.setdefault("n_batches", 5)
    return Scenario(toy_profile(), LINK, **kw)


# Toy numbers at cut "a", q8 (tests/runtime/test_model.py spells them out):
# hierarchical: t_E = 3.3, t_L = 1.074 + 0.1, cloud a = 3.25 per message + b = 0.6 per step;
# split: t_E = 3.0, up 1.174 + down 2.1, cloud a = 3.75 + b = 0.6; D = 1074 B, B = 10 samples.
T_E, T_L, A_H, B_STEP = 3.3, 1.174, 3.25, 0.6


# -- E = 1, W = 1 is the one-edge model --------------------------------------------------------
@pytest.mark.parametrize(
    "conventions",
    [NOFRAME, Conventions(), Conventions(upload="once", latency="pipelined")],
    ids=["per-message", "pipelined", "upload-once"],
)
def test_one_edge_one_worker_is_the_runtime_model(conventions):
    sc = toy(conventions=conventions, epochs=3)
    one = rm.predict(sc, "a", "q8")
    many = scale_predict(sc, Fleet(1, LINK), "a", "q8")
    for method, p in one.items():
        s = many[method]
        assert s.samples_per_s == pytest.approx(10 / p.period_s), method
        assert s.total_s == pytest.approx(p.total_s), method
        assert s.fill_s == pytest.approx(p.fill_s), method
        assert s.bottleneck == p.bottleneck, method


@pytest.mark.parametrize("model,dataset,cut,_published", PAPER_CONFIGS)
@pytest.mark.parametrize("link", ["3g", "wifi"])
def test_one_edge_reduces_on_the_committed_profiles(model, dataset, cut, _published, link):
    edge, cloud = load_for(REPO / "results/profiles", model, "imagenet", dataset, 1)
    sc = Scenario(edge, link, cloud=cloud)
    one = rm.predict(sc, cut, "q8")
    many = scale_predict(sc, Fleet(1, link), cut, "q8")
    for method, p in one.items():
        assert many[method].total_s == pytest.approx(p.total_s, rel=1e-12), method
        assert many[method].samples_per_s == pytest.approx(edge.batch / p.period_s, rel=1e-12)


# -- hand-computed cases -----------------------------------------------------------------------
def test_hierarchical_two_edges_one_worker():
    p = scale_predict(toy(), Fleet(2, LINK), "a", "q8")["hierarchical"]
    cloud = 2 * A_H + B_STEP  # one step over both edges' messages: 7.1 s
    assert p.terms["cloud"] == pytest.approx(cloud)
    assert p.period_s == pytest.approx(cloud)
    assert p.samples_per_s == pytest.approx(20 / cloud)
    assert p.bottleneck == "cloud"
    # 5 batches over 2 edges: 3 steps; fill = t_eF + first upload + the cloud step
    assert p.steps == 3
    assert p.total_s == pytest.approx(max(1 + T_L + cloud + 2 * cloud, 3 * T_E))


def test_split_two_edges_round_trip_includes_the_shared_step():
    p = scale_predict(toy(), Fleet(2, LINK), "a", "q8")["split"]
    period = 3.0 + (1.174 + 2.1) + (2 * 3.75 + 0.6)
    assert p.period_s == pytest.approx(period)
    assert p.samples_per_s == pytest.approx(20 / period)
    assert p.total_s == pytest.approx(3 * period)
    assert p.bottleneck == "cloud"  # 8.1 s of the round trip


def test_per_edge_links_slowest_edge_paces_the_step():
    slow = LinkSpec(800, 16000, 0.2)  # 10.74 s per upload
    p = scale_predict(toy(cloud_speedup=1000.0), Fleet(2, [LINK, slow]), "a", "q8")
    assert p["hierarchical"].terms["link"] == pytest.approx(10.74 + 0.2)
    assert p["hierarchical"].period_s == pytest.approx(10.94)
    assert p["hierarchical"].bottleneck == "link"


def test_allreduce_term():
    # ring: 2(W-1)/W * 8 P / R + 2(W-1) * latency
    assert allreduce_time(1e6, 4, 8e6, 0.01) == pytest.approx(1.5 + 0.06)
    assert allreduce_time(1e6, 1, 8e6, 0.01) == 0.0
    # toy cloud part (blocks b + classifier): 80 parameter bytes
    fleet = Fleet(2, LINK, workers=2, allreduce_bps=640.0, allreduce_latency_s=0.05)
    p = scale_predict(toy(), fleet, "a", "q8")["hierarchical"]
    assert p.terms["all-reduce"] == pytest.approx(1.0 + 0.1)
    assert p.terms["cloud"] == pytest.approx(A_H + B_STEP)  # one message per worker
    assert p.period_s == pytest.approx(A_H + B_STEP + 1.1)
    assert p.bottleneck == "cloud"
    slow = Fleet(2, LINK, workers=2, allreduce_bps=64.0, allreduce_latency_s=0.0)
    q = scale_predict(toy(), slow, "a", "q8")["hierarchical"]
    assert q.terms["all-reduce"] == pytest.approx(10.0)
    assert q.bottleneck == "all-reduce"


def test_shared_ingress_saturates_at_the_computed_edge_count():
    sc = toy(cloud_speedup=1000.0)  # cloud ~free: the edge (3.3 s) paces each edge
    fleet = Fleet(1, LINK, ingress=80_000.0)  # 8 * 1074 / 80000 = 0.1074 s per message
    # E * 0.1074 >= 3.3  <=>  E >= 30.73: the ingress saturates at E = 31
    sat = saturation(sc, fleet, "a", "q8", e_max=200)["hierarchical"]
    assert sat.ingress_edges == 31
    assert sat.cloud_edges is None  # the ingress grows faster than the cloud, never overtaken
    assert sat.ingress_cap == pytest.approx(10 * 80_000 / (8 * 1074))
    x = {e: scale_predict(sc, Fleet(e, LINK, ingress=80_000.0), "a", "q8") for e in (30, 31)}
    assert x[30]["hierarchical"].bottleneck == "edge"
    assert x[31]["hierarchical"].bottleneck == "ingress"
    assert x[31]["hierarchical"].samples_per_s == pytest.approx(sat.ingress_cap)


def test_ingress_ties_with_the_link_at_the_rate_ratio():
    # link-bound edges (8 * 1074 / 800 = 10.74 s per upload, latency pipelined) behind an
    # ingress 1000 times their uplink: E = 1000 edges fill it exactly, to the last bit or not
    sc = toy(cloud_speedup=1000.0, conventions=Conventions(frame_overhead=False))
    slow = LinkSpec(800, 16000, 0.1)
    sat = saturation(sc, Fleet(1, slow, ingress=800_000.0), "a", "q8", e_max=2000)
    assert sat["hierarchical"].ingress_edges == 1000
    assert sat["cloud-only"].ingress_edges == 1000


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("speedup,ingress", [(1000.0, 80_000.0), (100.0, 80_000.0), (30.0, None)])
def test_uniform_scan_equals_the_per_edge_scan(workers, speedup, ingress):
    """saturation() scans one shared link on plain floats; per-edge links go through the
    general terms: the same links both ways must give the same answers."""
    sc = toy(cloud_speedup=speedup)
    kw = {"workers": workers, "ingress": ingress, "allreduce_bps": 2000.0}
    one = saturation(sc, Fleet(1, LINK, **kw), "a", "q8", e_max=120)
    many = saturation(sc, Fleet(120, [LINK] * 120, **kw), "a", "q8")
    assert one == many
    assert any(s.cloud_edges or s.ingress_edges for s in one.values())


def test_throughput_grows_with_edges_then_flattens_at_the_ingress():
    sc = toy(cloud_speedup=1000.0)
    xs = [
        scale_predict(sc, Fleet(e, LINK, ingress=80_000.0), "a", "q8")["hierarchical"]
        for e in range(1, 61)
    ]
    x1 = xs[0].samples_per_s
    for e, p in enumerate(xs[:30], start=1):  # before saturation: E times one edge
        assert p.samples_per_s == pytest.approx(e * x1)
    flat = [p.samples_per_s for p in xs[30:]]
    assert flat == pytest.approx([flat[0]] * len(flat))  # after: flat at the ingress cap
    assert all(b.samples_per_s >= a.samples_per_s * (1 - 1e-12) for a, b in itertools.pairwise(xs))


def test_throughput_rises_towards_the_cloud_cap():
    sc = toy(cloud_speedup=100.0)  # a = 6.5 / 100 = 0.065 s per message, b = 0.012
    sat = saturation(sc, Fleet(1, LINK), "a", "q8", e_max=500)["hierarchical"]
    # E * 0.065 + 0.012 >= 3.3  <=>  E >= 50.58
    assert sat.cloud_edges == 51
    assert sat.ingress_edges is None and sat.ingress_cap is None
    xs = [
        scale_predict(sc, Fleet(e, LINK), "a", "q8")["hierarchical"].samples_per_s
        for e in range(1, 201)
    ]
    assert xs[:50] == pytest.approx([e * xs[0] for e in range(1, 51)])
    assert all(b >= a for a, b in itertools.pairwise(xs))
    assert max(xs) < sat.cloud_cap == pytest.approx(10 / 0.065)


def test_more_edges_than_batches_only_loaded_edges_count():
    sc = toy(cloud_speedup=1000.0)  # 5 batches
    p = scale_predict(sc, Fleet(10, LINK), "a", "q8")["hierarchical"]
    q = scale_predict(sc, Fleet(5, LINK), "a", "q8")["hierarchical"]
    assert p.steps == q.steps == 1
    assert p.total_s == pytest.approx(q.total_s)
    assert p.samples_per_s == pytest.approx(2 * q.samples_per_s)  # steady state: all ten


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"edges": 0}, "edges"),
        ({"edges": 2.5}, "edges"),
        ({"workers": 0}, "workers"),
        ({"ingress": math.inf}, "ingress"),
        ({"ingress": math.nan}, "ingress"),
        ({"ingress": -1.0}, "ingress"),
        ({"ingress": "fast"}, "rate"),
        ({"allreduce_bps": math.inf}, "allreduce_bps"),
        ({"allreduce_bps": 0.0}, "allreduce_bps"),
        ({"allreduce_latency_s": math.nan}, "allreduce_latency_s"),
        ({"links": [LINK, LINK, LINK]}, "per-edge links"),
    ],
)
def test_bad_fleet_names_the_problem(kwargs, needle):
    args = {"edges": 2, "links": LINK} | kwargs
    with pytest.raises(ConfigError, match=needle):
        Fleet(**args)


def test_bad_saturation_range():
    with pytest.raises(ConfigError, match="e_max"):
        saturation(toy(), Fleet(1, LINK), "a", "q8", e_max=0)
    with pytest.raises(ConfigError, match="per-edge links"):
        saturation(toy(), Fleet(2, [LINK, LINK]), "a", "q8", e_max=3)


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None\nimport hierbench.runtime.scale\n"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr


# -- FedAvg of the edge models every K steps -------------------------------------------------
def test_fedavg_bytes_of_the_toy_profile():
    # cut a: 10 parameters (40 B, no buffers); minimal head on C = 100 channels, K = 10 classes
    assert fedavg_bytes(toy_profile(), "a", "minimal") == 40 + 4 * (100 * 10 + 10) + 128
    conv = 9 * 100 * 100 + 4 * 100 + 100 * 10 + 10
    assert fedavg_bytes(toy_profile(), "a", "conv") == 40 + 4 * conv + 128


def test_hierarchical_fedavg_cycle_by_hand():
    sc = toy(head="minimal")
    plain = scale_predict(sc, Fleet(2, LINK), "a", "q8")["hierarchical"]
    p = scale_predict(sc, Fleet(2, LINK, sync_every=2), "a", "q8")["hierarchical"]
    size = 4208  # test_fedavg_bytes_of_the_toy_profile
    cloud = 2 * A_H + B_STEP  # 7.1 s: the period without FedAvg (cloud-bound)
    fill = 1 + T_L + cloud  # t_eF + the first upload + the cloud step
    last = fill + cloud  # the cloud has trained step 2 of the cycle
    sent = last - cloud - 0.1  # the edges' last activations have left
    arrive = max(2 * T_E, sent) + size / 1000 + 0.1  # 8·P / 8000 bit/s + latency
    cycle = max(last, arrive) + size / 2000 + 0.1  # W = 1: no all-reduce; the average comes back
    assert p.period_s == pytest.approx(cycle / 2)
    assert p.samples_per_s == pytest.approx(20 / (cycle / 2))
    assert p.terms["fedavg"] == pytest.approx(cycle / 2 - cloud)
    # 5 batches over 2 edges: 3 steps = one cycle + one step (a fresh pipeline, no sync)
    assert p.steps == 3 and p.total_s == pytest.approx(cycle + max(fill, T_E))
    assert p.total_s > plain.total_s and p.bottleneck == "cloud"  # 7.1 s > the 1.6 s share


def test_split_fedavg_cycle_and_the_fedavg_bottleneck():
    sc = toy(head="minimal")
    period = 3.0 + (1.174 + 2.1) + (2 * 3.75 + 0.6)
    p = scale_predict(sc, Fleet(2, LINK, sync_every=1), "a", "q8")["split"]
    cycle = period + 4.208 + 0.1 + 2.104 + 0.1
    assert p.period_s == pytest.approx(cycle)
    assert p.total_s == pytest.approx(3 * cycle)
    # a slow uplink makes the sync the largest share of a step
    slow = LinkSpec(800, 16000, 0.1)
    q = scale_predict(sc, Fleet(2, slow, sync_every=1), "a", "q8")["hierarchical"]
    assert q.bottleneck == "fedavg" and q.terms["fedavg"] > q.terms["link"]
    # cloud-only has no edge model: FedAvg changes nothing
    c0 = scale_predict(sc, Fleet(2, LINK), "a", "q8")["cloud-only"]
    c1 = scale_predict(sc, Fleet(2, LINK, sync_every=1), "a", "q8")["cloud-only"]
    assert c1 == c0


def test_fedavg_with_a_shared_ingress_and_two_workers():
    sc = toy(head="minimal", cloud_speedup=1000.0)
    fleet = Fleet(4, LINK, workers=2, ingress=8000.0, sync_every=3)
    p = scale_predict(sc, fleet, "a", "q8")["hierarchical"]
    q = scale_predict(sc, replace(fleet, sync_every=0), "a", "q8")["hierarchical"]
    # the four edges' parameters share the 1000 B/s ingress: 4 · 4.208 s; the all-reduce moves
    # the (E, P) table
    ar = allreduce_time(4 * 4208, 2, fleet.allreduce_bps, fleet.allreduce_latency_s)
    assert p.period_s * 3 > 3 * q.period_s + 4 * 4.208 + ar + 2.104
    assert p.period_s * 3 == pytest.approx(
        max(
            q.fill_s + 2 * q.period_s,
            max(
                3 * q.terms["edge"],
                q.fill_s + 2 * q.period_s - q.terms["cloud"] - q.terms["all-reduce"] - 0.1,
            )
            + 4 * 4.208
            + 0.1,
        )
        + ar
        + 2.104
        + 0.1
    )


def test_saturation_refuses_fedavg_and_bad_sync_every():
    with pytest.raises(ConfigError, match="independent edge models"):
        saturation(toy(), Fleet(1, LINK, sync_every=4), "a", "q8")
    for bad in (-1, 1.5, True, "4"):
        with pytest.raises(ConfigError, match="sync_every"):
            Fleet(2, LINK, sync_every=bad)
