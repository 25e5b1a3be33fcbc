"""Profiles: CSV round trip (torch-free), a tiny real measurement, the torch-free runtime
package, and the ``profile`` / ``predict`` commands."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hierbench import cli
from hierbench.runtime.codec_bytes import WIRE_BITS, CodecSetting, encoded_bytes
from hierbench.runtime.profiles import (
    COLUMNS,
    HEAD_KINDS,
    load_profile,
    profile_filename,
    write_profile,
)
from tests.runtime.helpers import toy_profile

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:the profiler got:RuntimeWarning")
NO_TORCH = "import sys; sys.modules['torch'] = None\n"


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH + textwrap.dedent(code)],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_runtime_imports_without_torch():
    res = _run_without_torch(
        """
        import hierbench.runtime, hierbench.runtime.table
        from hierbench.runtime import model, partition, profiles, codec_bytes
        assert sys.modules["torch"] is None
        import hierbench.profiling  # measuring needs torch: this must fail
        """
    )
    assert "ModuleNotFoundError" in res.stderr or "ImportError" in res.stderr, res.stderr
    assert "hierbench/profiling.py" in res.stderr, res.stderr  # got past the runtime imports


def test_round_trip(tmp_path):
    prof = toy_profile(note="x", nested={"a": [1, 2]})
    path = write_profile(prof, tmp_path / "p.csv")
    assert load_profile(path) == prof
    first = path.read_text().splitlines()[0]
    assert first == "# hierbench-profile 1"


def test_round_trip_torch_free(tmp_path):
    path = write_profile(toy_profile(), tmp_path / "p.csv")
    res = _run_without_torch(
        f"""
        from hierbench.runtime.profiles import load_profile, write_profile
        p = load_profile({str(path)!r})
        write_profile(p, {str(tmp_path / "q.csv")!r})
        assert load_profile({str(tmp_path / "q.csv")!r}) == p
        print(p.cuts, p.t_full)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "('a', 'b') 8.0" in res.stdout


def test_load_rejects_other_files(tmp_path):
    from hierbench.errors import ConfigError

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not a"):
        load_profile(bad)
    with pytest.raises(ConfigError, match="no profile"):
        load_profile(tmp_path / "missing.csv")


def test_filenames():
    assert profile_filename("resnet18", "imagenet", "cifar10", "cpu", 1) == (
        "resnet18-imagenet-cifar10-cpu-t1.csv"
    )
    assert profile_filename("vgg16", "cifar", "tiny-imagenet", "cpu", 2) == (
        "vgg16-tiny-imagenet-cpu-t2.csv"
    )
    assert profile_filename("resnet18", "cifar", "cifar10", "cuda", None).endswith("-cuda.csv")


@pytest.fixture(scope="module")
def tiny_profile_path(tmp_path_factory) -> Path:
    """A real measurement: ResNet-18 (imagenet stem) at 32×32, batch 8, 1 repeat, via the CLI."""
    out = tmp_path_factory.mktemp("prof") / "r18.csv"
    rc = cli.main(
        [
            "profile",
            "--model",
            "resnet18",
            "--stem",
            "imagenet",
            "--dataset",
            "cifar10",
            "--batch",
            "8",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_tiny_real_profile_is_complete(tiny_profile_path):
    prof = load_profile(tiny_profile_path)
    assert prof.cuts == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert [b.block for b in prof.blocks][-1] == "classifier"
    assert prof.batch == 8 and prof.num_classes == 10 and prof.input_size == 32
    assert prof.input_bytes == 8 * 3 * 32 * 32
    assert prof.t_full > 0
    for key in ("device_name", "threads", "torch", "date_utc", "command", "loadavg_start"):
        assert key in prof.meta
    assert prof.meta["threads"] == 1
    # CPU time got / (wall x threads): about 1 for an uncontended 1-thread run, lower when other
    # work competes; it can exceed 1 a little (torch's helper threads).
    assert 0 < prof.meta["cpu_share"] < 1.5
    text = tiny_profile_path.read_text()
    header = next(line for line in text.splitlines() if not line.startswith("#"))
    assert tuple(header.split(",")) == COLUMNS
    peaks = []
    for b in prof.blocks:
        assert b.fwd_s > 0 and b.bwd_s > 0 and b.bwd_noinput_s > 0 and b.step_s > 0
        assert b.params > 0 and b.param_bytes == 4 * b.params
        if not b.is_cut:
            continue
        assert b.saved_bytes > 0
        assert set(b.exit_s) == set(HEAD_KINDS) and all(v > 0 for v in b.exit_s.values())
        assert set(b.wire_bytes) == set(WIRE_BITS)
        for w in WIRE_BITS:
            assert b.wire_bytes[w] == encoded_bytes(8 * b.out_numel, CodecSetting(w))
            assert b.zstd_ratio[w] == 1.0
        assert b.out_numel == b.out_shape[0] * b.out_shape[1] * b.out_shape[2]
        assert b.edge_peak_bytes["conv"] > b.edge_peak_bytes["minimal"] > 0
        peaks.append(b.edge_peak_bytes["minimal"])
    assert peaks == sorted(peaks)  # the edge part only grows
    assert prof.block("layer3").out_shape == (256, 2, 2)


def test_predict_cli_on_a_measured_profile(tiny_profile_path, capsys):
    rc = cli.main(
        [
            "predict",
            "--model",
            "resnet18",
            "--dataset",
            "cifar10",
            "--edge-profile",
            str(tiny_profile_path),
            "--batches",
            "100",
            "--link",
            "3g",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "ASSUMED 10× faster" in out
    assert "| layer3 (paper) | q8" in out
    assert "chosen:" in out and "crossover:" in out
    assert "published 61%" in out


def test_predict_cli_errors(tmp_path, capsys):
    rc = cli.main(
        ["predict", "--model", "vgg16", "--dataset", "cifar10", "--profile-dir", str(tmp_path)]
    )
    assert rc == 2
    assert "scripts/make_profiles.sh" in capsys.readouterr().err
    path = write_profile(toy_profile(dataset="cifar10"), tmp_path / "toy.csv")
    rc = cli.main(
        [
            "predict",
            "--model",
            "vgg16",
            "--dataset",
            "cifar10",
            "--edge-profile",
            str(path),
            "--link",
            "5g",
        ]
    )
    assert rc == 2
    assert "3g, 4g, wifi, lan" in capsys.readouterr().err


def test_whole_edge_step_is_timed_at_the_asked_cuts(tmp_path):
    """``edge_cuts``: the profile times the whole edge step there (both heads), it survives the
    CSV round trip, and the model's edge terms then add up to it."""
    import math

    from hierbench import profiling
    from hierbench.errors import ConfigError
    from hierbench.runtime import model as rm
    from hierbench.spec.links import LinkSpec

    prof = profiling.measure_profile(
        "resnet18", dataset="cifar10", batch=4, threads=1, repeats=1, edge_cuts=["layer1"]
    )
    steps = prof.meta["edge_step_s"]
    assert set(steps) == {"layer1"} and set(steps["layer1"]) == {"conv", "minimal"}
    assert all(t > 0 for t in steps["layer1"].values())
    back = profiling.load_profile(profiling.write_profile(prof, tmp_path / "p.csv"))
    assert back.edge_whole_step("layer1") == pytest.approx(steps["layer1"]["conv"])
    assert back.edge_whole_step("layer2") is None
    h = rm.hierarchical(
        rm.Scenario(back, LinkSpec(math.inf, math.inf, 0.0), n_batches=2), "layer1", "fp32"
    )
    assert h.t_E == pytest.approx(steps["layer1"]["conv"])
    with pytest.raises(ConfigError, match="not a cut"):
        profiling.measure_profile(
            "resnet18", dataset="cifar10", batch=2, repeats=1, edge_cuts=["nope"]
        )


def test_whole_edge_step_runs_the_gap_between_steps():
    """``edge_gap``: called after every whole edge step with its time (as the edge-slowdown knob
    does between a run's steps), 1 warm-up + at most 3 timed steps, recorded in the metadata."""
    from hierbench import profiling

    seen = []
    prof = profiling.measure_profile(
        "resnet18",
        dataset="cifar10",
        batch=2,
        threads=1,
        repeats=5,
        edge_cuts=["layer1"],
        # a gap 20x the step, asleep: counted, the CPU share would read under 1/20
        edge_gap=("record the gap", lambda t: (seen.append(t), time.sleep(20 * t))),
        edge_heads=["conv"],
    )
    assert set(prof.meta["edge_step_s"]["layer1"]) == {"conv"}
    assert prof.meta["edge_step_gap"] == "record the gap"
    assert len(seen) == 4 and all(t > 0 for t in seen)
    assert prof.meta["cpu_share"] > 0.3  # the gaps are left out of the profiler's CPU share
    assert prof.meta["edge_step_s"]["layer1"]["conv"] == sorted(seen[1:])[1]  # median of 3
