"""Benchmark JSON naming (benchmarks/record.py): one file per run, never overwritten."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from benchmarks import record


@pytest.mark.parametrize(
    ("model", "slug"),
    [
        ("AMD EPYC", "amd-epyc"),
        ("Intel(R) Xeon(R) Platinum 8480+ @ 2.00GHz", "intel-xeon-platinum-8480"),
        ("AMD EPYC 9654 96-Core Processor", "amd-epyc-9654-96"),
        ("", "unknown-cpu"),
    ],
)
def test_cpu_slug(model, slug):
    assert record.cpu_slug(model) == slug


def test_name_holds_date_cpu_sha_dirty_suite_and_parses_back():
    t = datetime(2026, 12, 2, 6, 25, 58, tzinfo=UTC)
    name = record.json_name(t, "AMD EPYC", "2ac7fce", True, "methods-harness")
    assert name == "2026-12-02T062558Z_amd-epyc_2ac7fce-dirty_methods-harness.json"
    m = record.NAME_RE.match(name)
    assert (m["date"], m["cpu"], m["sha"], m["dirty"], m["suite"]) == (
        "2026-12-02",
        "amd-epyc",
        "2ac7fce",
        "-dirty",
        "methods-harness",
    )
    with pytest.raises(ValueError, match="suite"):
        record.json_name(t, "AMD EPYC", "2ac7fce", False, "Bad_Suite")


def test_reserve_never_overwrites(tmp_path):
    path = record.reserve(tmp_path / "bench", "a.json")
    path.write_text("{}")
    with pytest.raises(FileExistsError, match="never overwritten"):
        record.reserve(tmp_path / "bench", "a.json")
    assert path.read_text() == "{}"


def test_committed_bench_files_follow_the_naming():
    names = [p.name for p in record.REPO.joinpath("results", "bench").glob("*.json")]
    assert names and [n for n in names if not record.NAME_RE.match(n)] == []


def test_cpu_family_names_the_vector_extensions():
    """The family facts every benchmark JSON carries beside the (possibly generic) model name."""
    from pathlib import Path

    info = record.cpu_family()
    text = Path("/proc/cpuinfo").read_text()
    assert info["vendor_id"] in text and info["model"].isdigit()
    flags = set(text.split("\n\n", 1)[0].split("flags", 1)[1].split("\n", 1)[0].split())
    assert info["flags"] == [f for f in record.FAMILY_FLAGS if f in flags]
