"""hierbench.spec: the one link grammar, dataset shapes, profile names, the run-record reader."""

from __future__ import annotations

import json
import math

import pytest

from hierbench import transfer
from hierbench.errors import ConfigError
from hierbench.spec import (
    DATASET_SHAPES,
    INPUT_SHAPES,
    PRESETS,
    RECORD_VERSION,
    LinkSpec,
    dataset_shape,
    parse_link,
    profile_filename,
    read_record,
    write_record,
)
from hierbench.spec.records import (
    CPU_SHARE_MIN,
    REQUIRED_KEYS,
    TOTALS_KEYS,
    TOTALS_V2,
    disturbed,
    require_clock,
)

# -- links: one grammar for the engine and the runtime model ---------------------------------

SAME_EVERYWHERE = [
    ("3g", (1e6, 4e6, 0.075)),
    ("4G", (10e6, 40e6, 0.025)),
    ("4g/50ms", (10e6, 40e6, 0.05)),
    ("20mbit", (20e6, 20e6, 0.0)),
    ("20mbit/s", (20e6, 20e6, 0.0)),
    ("20 mbit / 5ms", (20e6, 20e6, 0.005)),
    ("1mbit:4mbit/75ms", (1e6, 4e6, 0.075)),
    ("500kbit/0.2ms", (5e5, 5e5, 0.0002)),
    ("2tbit", (2e12, 2e12, 0.0)),
    ("1e6bit/1s", (1e6, 1e6, 1.0)),
    ("inf", (math.inf, math.inf, 0.0)),
    ("unshaped", (math.inf, math.inf, 0.0)),
    ("unlimited/5ms", (math.inf, math.inf, 0.005)),
]


@pytest.mark.parametrize(("text", "expected"), SAME_EVERYWHERE)
def test_engine_and_model_read_a_link_string_alike(text, expected):
    spec = parse_link(text)
    assert (spec.up_bps, spec.down_bps) == expected[:2]
    assert spec.latency_s == pytest.approx(expected[2])
    link = transfer.Link.parse(text)
    assert (link.rate_bps("up"), link.rate_bps("down")) == expected[:2]
    assert link.latency_s == pytest.approx(expected[2])


BAD = [
    "",
    "5g",
    "fast",
    "20",
    "1e6",
    "20mbps",
    "20mb",
    "20mbit/5",
    "20mbit/5min",
    "1mbit:",
    "0mbit",
]


@pytest.mark.parametrize("text", BAD)
def test_engine_and_model_refuse_alike(text):
    for parse in (parse_link, transfer.Link.parse):
        with pytest.raises(ConfigError) as err:
            parse(text)
        msg = str(err.value)
        assert repr(text) in msg and "3g, 4g, wifi, lan" in msg and "20mbit/5ms" in msg


def test_presets_are_the_papers_and_shared():
    assert PRESETS["3g"] == LinkSpec(1e6, 4e6, 0.075, "3g")
    assert transfer.PRESETS is PRESETS
    for name, spec in PRESETS.items():
        assert transfer.Link.preset(name) == transfer.Link.from_spec(spec)


# -- datasets and profile names ----------------------------------------------------------------


def test_dataset_shapes():
    assert DATASET_SHAPES["cifar10"] == (10, 32)
    classes, size = DATASET_SHAPES["tiny-imagenet"]
    assert (classes, size) == (200, 64)
    assert "synthetic" in INPUT_SHAPES and "synthetic" not in DATASET_SHAPES
    assert dataset_shape("synthetic", synthetic=True).image_size == 32
    with pytest.raises(ConfigError, match="cifar10, tiny-imagenet"):
        dataset_shape("synthetic")
    with pytest.raises(ConfigError, match="imagenet-1k"):
        dataset_shape("imagenet-1k")


def test_profile_filename_is_the_one_everyone_uses():
    assert profile_filename("resnet18", "imagenet", "cifar10", "cpu", 1) == (
        "resnet18-imagenet-cifar10-cpu-t1.csv"
    )
    assert profile_filename("vgg16", "cifar", "tiny-imagenet", "cuda", None) == (
        "vgg16-tiny-imagenet-cuda.csv"
    )


# -- run records -------------------------------------------------------------------------------


def _record(**over) -> dict:
    rec = {k: [] for k in REQUIRED_KEYS}
    rec.update(
        record_version=RECORD_VERSION,
        config={"method": "hierarchical"},
        environment={},
        steps_per_epoch=3,
        totals={k: 1 for k in TOTALS_KEYS} | {k: None for k in TOTALS_V2},
    )
    rec.update(over)
    return rec


def test_record_round_trip(tmp_path):
    path = write_record(_record(), tmp_path / "runs" / "a.json")
    assert read_record(path) == _record()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (_record(record_version=3), "record_version 3"),
        (_record(record_version=True), "record_version True"),
        (_record(totals={k: 1 for k in TOTALS_KEYS}), "eval_in_window_s"),
        (_record(totals={k: 1 for k in TOTALS_KEYS} | {k: "x" for k in TOTALS_V2}), "cpu_share"),
        ({k: v for k, v in _record().items() if k != "record_version"}, "record_version None"),
        ({k: v for k, v in _record().items() if k != "edge_steps"}, "missing edge_steps"),
        (_record(totals={"batches": 1}), "wall_s"),
        (_record(totals={**_record()["totals"], "wall_s": "3"}), "wall_s"),
        (_record(config=[]), "must be objects"),
        ([1, 2], "JSON object"),
    ],
)
def test_reader_refuses_with_the_file_named(tmp_path, record, words):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError) as err:
        read_record(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_reader_names_the_file_on_broken_json(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(_record())[:40])
    with pytest.raises(ConfigError, match=r"cut\.json is not valid JSON"):
        read_record(path)
    with pytest.raises(ConfigError, match=r"cannot read run record .*missing\.json"):
        read_record(tmp_path / "missing.json")


def test_version_1_is_read_but_not_validated(tmp_path):
    v1 = _record(record_version=1, totals={k: 1 for k in TOTALS_KEYS})
    rec = read_record(write_record(v1, tmp_path / "v1.json"))
    with pytest.raises(ConfigError, match="old clock"):
        require_clock(rec, "v1.json")
    require_clock(_record())


def test_disturbed_flags_each_side_below_the_cpu_share():
    low = CPU_SHARE_MIN - 0.01
    shares = {"edge_cpu_share": 0.99, "cloud_cpu_share": low}
    rec = _record(processes=2, totals={**_record()["totals"], **shares})
    assert disturbed(rec) == [f"cloud CPU share {low:.3f} < {CPU_SHARE_MIN}"]
    assert disturbed({**rec, "processes": 1}) == []  # one process: both roles share it
    quiet = {**rec["totals"], "cloud_cpu_share": 0.95}
    assert disturbed({**rec, "totals": quiet}) == []


def test_disturbed_flags_an_edge_calibration_that_did_not_get_its_core():
    shares = {"edge_cpu_share": 0.99, "cloud_cpu_share": 0.99}
    rec = _record(processes=2, totals={**_record()["totals"], **shares})
    assert disturbed({**rec, "calibration": {"cpu_share": 0.95}}) == []
    assert disturbed({**rec, "calibration": {"cpu_share": 0.5}}) == [
        f"its edge calibration's CPU share 0.500 < {CPU_SHARE_MIN}"
    ]


@pytest.mark.parametrize(
    "spec, words",
    [("fedavg", "unknown edge_sync"), ("avg:3", "unknown edge_sync"), ("fedavg:0", "K must be"),
     ("fedavg:x", "K must be"), ("fedavg:-2", "K must be"), ("", "unknown edge_sync")],
)  # fmt: skip
def test_edge_sync_grammar_refuses_clearly(spec, words):
    from hierbench.spec.sync import parse_edge_sync

    assert parse_edge_sync("none") == 0 and parse_edge_sync("fedavg:39") == 39
    with pytest.raises(ConfigError, match=words):
        parse_edge_sync(spec)
