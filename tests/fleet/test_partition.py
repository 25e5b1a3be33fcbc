"""hierbench.fleet.partition: IID and Dirichlet(alpha) shards, with torch and numpy blocked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hierbench.errors import ConfigError
from hierbench.fleet.partition import describe, parse_scheme, partition

# 10 classes, uneven sizes (like a per-class limit that some classes do not reach)
LABELS = [c for c in range(10) for _ in range(40 + 3 * c)]


def _check_exact_cover(parts, n):
    flat = [i for shard in parts for i in shard]
    assert len(flat) == n == len(set(flat)), "shards overlap or miss samples"
    assert sorted(flat) == list(range(n))
    assert all(shard == sorted(shard) for shard in parts)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.1", "dirichlet:1", "dirichlet:100"])
@pytest.mark.parametrize("edges", [1, 3, 7])
def test_shards_are_disjoint_and_cover_everything(scheme, edges):
    parts = partition(LABELS, edges, scheme, seed=3)
    assert len(parts) == edges
    _check_exact_cover(parts, len(LABELS))


def test_iid_sizes_differ_by_at_most_one():
    sizes = [len(s) for s in partition(LABELS, 7, "iid", seed=1)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.5"])
def test_deterministic_by_seed(scheme):
    a = partition(LABELS, 4, scheme, seed=5)
    assert a == partition(LABELS, 4, scheme, seed=5)
    assert a != partition(LABELS, 4, scheme, seed=6)
    assert describe(a) == describe(partition(LABELS, 4, scheme, seed=5))


def _mean_max_share(scheme, edges=5, seeds=range(5)):
    shares = []
    for seed in seeds:
        shares += describe(partition(LABELS, edges, scheme, seed=seed))["max_class_share"]
    return sum(shares) / len(shares)


def test_small_alpha_skews_large_alpha_is_near_iid():
    """The largest class's share of an edge's shard: 1/K = 0.1 for perfectly balanced data.
    alpha = 0.05 concentrates classes (most of a shard is one or two classes); alpha = 1000 is
    as balanced as IID shards of the same data."""
    iid = _mean_max_share("iid")
    tiny = _mean_max_share("dirichlet:0.05")
    huge = _mean_max_share("dirichlet:1000")
    assert tiny > 0.5
    assert huge < 0.2
    assert abs(huge - iid) < 0.05
    assert tiny > 3 * huge


def test_min_per_edge_redraws_and_is_recorded():
    parts = partition(LABELS, 8, "dirichlet:0.1", seed=0, min_per_edge=20)
    assert min(len(s) for s in parts) >= 20
    assert parts.draws >= 1
    desc = describe(parts)
    assert desc["draws"] == parts.draws
    json.dumps(desc, allow_nan=False)  # strict JSON
    assert desc["scheme"] == "dirichlet:0.1" and desc["alpha"] == 0.1 and desc["seed"] == 0
    assert [sum(c) for c in desc["class_counts"]] == desc["sizes"]
    assert desc["samples"] == len(LABELS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(edges=0), "edges must be an integer >= 1"),
        (dict(edges=-2), "edges must be an integer >= 1"),
        (dict(edges=True), "edges must be an integer >= 1"),
        (dict(edges=len(LABELS) + 1), "cannot give"),
        (dict(edges=100, min_per_edge=10), "cannot give"),
        (dict(edges=2, scheme="dirichlet:0"), "ALPHA must be a finite number > 0"),
        (dict(edges=2, scheme="dirichlet:-1"), "ALPHA must be a finite number > 0"),
        (dict(edges=2, scheme="dirichlet:inf"), "ALPHA must be a finite number > 0"),
        (dict(edges=2, scheme="dirichlet:x"), "is not a number"),
        (dict(edges=2, scheme="dirichlet"), "unknown partition"),
        (dict(edges=2, scheme="shards"), "unknown partition"),
        (dict(edges=20, scheme="dirichlet:0.01", min_per_edge=25), "no draw in"),
    ],
)
def test_bad_input_is_a_clear_config_error(kwargs, match):
    kwargs = dict(kwargs)
    edges = kwargs.pop("edges")
    with pytest.raises(ConfigError, match=match):
        partition(LABELS, edges, **kwargs)


def test_labels_out_of_range():
    with pytest.raises(ConfigError, match="labels must lie in"):
        partition([0, 1, 5], 1, num_classes=3)


def test_parse_scheme():
    assert parse_scheme("iid") == ("iid", None)
    assert parse_scheme("dirichlet:0.5") == ("dirichlet", 0.5)


def test_imports_without_torch_or_numpy():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
        "import importlib.util, pathlib\n"
        "spec = importlib.util.spec_from_file_location('p', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.describe(m.partition([0, 1, 1, 0], 2, 'dirichlet:1'))['sizes'])\n"
    )
    path = Path(__file__).resolve().parents[2] / "hierbench" / "fleet" / "partition.py"
    res = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
