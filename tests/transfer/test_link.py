"""Link: presets from PAPER.md, the command-line syntax, validation. Pure Python."""

from __future__ import annotations

import math

import pytest

from hierbench.errors import ConfigError
from hierbench.transfer import PRESETS, Link


@pytest.mark.parametrize(
    ("name", "up", "down", "latency"),
    [
        ("3g", 1e6, 4e6, 0.075),
        ("4g", 10e6, 40e6, 0.025),
        ("wifi", 50e6, 50e6, 0.005),
        ("lan", 1000e6, 1000e6, 0.0002),
    ],
)
def test_presets_match_paper(name, up, down, latency):
    link = Link.preset(name)
    assert (link.rate_bps("up"), link.rate_bps("down"), link.latency_s) == (up, down, latency)
    assert Link.parse(name) == link
    assert Link.parse(name.upper()) == link


def test_parse_rates_and_latency():
    assert Link.parse("20mbit") == Link(20e6)
    assert Link.parse("20mbit/5ms") == Link(20e6, latency_s=0.005)
    assert Link.parse("500kbit/0.2ms").latency_s == pytest.approx(0.0002)
    up_down = Link.parse("10mbit:40mbit/25ms")
    assert (up_down.rate_bps("up"), up_down.rate_bps("down")) == (10e6, 40e6)
    assert Link.parse("1gbit/1s") == Link(1e9, latency_s=1.0)
    assert math.isinf(Link.parse("inf").rate_bps("down"))
    assert Link.parse("4g/50ms") == Link.preset("4g", latency_s=0.05)
    link = Link(1e6)
    assert Link.parse(link) is link


@pytest.mark.parametrize("spec", ["5g", "fast", "20", "20mbps", "20mbit/5", "", "20mbit/5min"])
def test_parse_rejects_unknown_with_syntax(spec):
    with pytest.raises(ConfigError) as err:
        Link.parse(spec)
    msg = str(err.value)
    assert all(p in msg for p in PRESETS) and "20mbit/5ms" in msg


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="3g, 4g, wifi, lan"):
        Link.preset("5g")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_bps_up": 0},
        {"rate_bps_up": -1},
        {"rate_bps_up": float("nan")},
        {"rate_bps_down": 0},
        {"latency_s": -0.1},
        {"jitter_s": float("inf")},
        {"burst_bytes": -1},
        {"outages": [(2.0, 1.0)]},
        {"outages": [(-1.0, 1.0)]},
        {"outages": [(1.0,)]},
    ],
)
def test_validation(kwargs):
    with pytest.raises(ValueError):
        Link(**kwargs)


def test_derived_times_and_str():
    link = Link.preset("3g")
    assert link.transmission_s(125_000) == pytest.approx(1.0)
    assert link.transmission_s(125_000, "down") == pytest.approx(0.25)
    assert link.message_s(125_000) == pytest.approx(1.075)
    assert Link().transmission_s(10**9) == 0.0
    assert str(link) == "1 Mbit/s up / 4 Mbit/s down, 75 ms"
    assert Link(outages=[(3, 4), (1, 2)]).outages == ((1.0, 2.0), (3.0, 4.0))
    with pytest.raises(ValueError):
        link.rate_bps("sideways")


def test_only_ext_imports_the_native_module():
    import ast
    from pathlib import Path

    import hierbench.transfer as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
                assert not (node.module == "hierbench" and "_C" in names), path
                assert node.module != "hierbench._C", path
            if isinstance(node, ast.Import):
                assert all(a.name != "hierbench._C" for a in node.names), path
