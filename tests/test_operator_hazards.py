"""Operator hazards (issue 15, item 8): ``--overwrite`` deletes only hierbench results folders,
``train --out <folder>`` fails before training, ``hierbench report`` names a corrupt record."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hierbench import experiments
from hierbench.errors import ConfigError
from hierbench.experiments.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
SMOKE = get_preset("smoke")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hierbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_overwrite_never_deletes_a_folder_that_is_not_a_results_folder(tmp_path):
    home = tmp_path / "home"  # what `--out ~ --overwrite` would have deleted
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("precious")
    (home / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match=r"refuses to delete .*home: it has no manifest\.json"):
        experiments.prepare_folder(home, SMOKE, overwrite=True, resume=False)
    (home / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"manifest\.json is unreadable"):
        experiments.prepare_folder(home, SMOKE, overwrite=True, resume=False)
    assert (home / ".ssh" / "id_ed25519").read_text() == "precious"
    assert (home / "notes.txt").read_text() == "precious"
    # through the command line too (reproduce passes --overwrite by default in `make reproduce`)
    res = _cli("reproduce", "--preset", "smoke", "--out", str(home), "--overwrite", "--quiet")
    assert res.returncode == 2, res.stderr
    assert "--overwrite refuses to delete" in res.stderr
    assert (home / "notes.txt").read_text() == "precious"


def test_overwrite_deletes_a_real_results_folder(tmp_path):
    out = tmp_path / "quick"
    shutil.copytree(ROOT / "results" / "quick", out)
    assert experiments.prepare_folder(out, SMOKE, overwrite=True, resume=False) is None
    assert not out.exists()


def test_train_out_folder_fails_before_training(tmp_path, cifar10_root):
    t0 = time.monotonic()
    res = _cli(
        "train",
        "--data-root",
        str(cifar10_root),
        "--limit-per-class",
        "8",
        "--batch-size",
        "16",
        "--batches-per-epoch",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert res.returncode == 2
    assert f"--out {tmp_path} is a folder" in res.stderr
    assert "batches, wall" not in res.stdout  # nothing trained
    assert time.monotonic() - t0 < 120


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda r: r.update(config={}),
        lambda r: r.update(edge_steps="x"),
        lambda r: r.update(epochs=[{"epoch": "a"}]),
        lambda r: r["config"].update(method="bogus"),
        lambda r: r.update(link={"messages": 3}),
        lambda r: r.update(cloud_steps=None),
        lambda r: r.update(edge_steps=[{"step": 0, "t0": "x"}]),
    ],
)
def test_report_names_the_corrupt_record(tmp_path, corrupt):
    out = tmp_path / "quick"
    shutil.copytree(ROOT / "results" / "quick", out)
    path = sorted((out / "runs").glob("timing-*.json"))[0]
    rec = json.loads(path.read_text())
    corrupt(rec)
    path.write_text(json.dumps(rec))
    res = _cli("report", str(out))
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"error: {path} is not a valid run record" in res.stderr
