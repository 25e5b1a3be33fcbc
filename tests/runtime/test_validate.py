"""Predicted-vs-measured checks on run records, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hierbench.runtime.codec_bytes import parse_codec
from hierbench.runtime.model import Conventions, Scenario, predict
from hierbench.runtime.profiles import load_profile
from hierbench.runtime.validate import check_record
from tests.runtime.helpers import run_record

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "results" / "profiles"


def _record(tmp_path: Path, method: str, measured: float) -> Path:
    path = tmp_path / f"{method}.json"
    path.write_text(json.dumps(run_record({"method": method}, 50, measured)))
    return path


def test_check_record_predicts_the_same_scenario(tmp_path):
    edge = load_profile(PROFILES / "resnet18-imagenet-cifar10-cpu-t1.csv")
    sc = Scenario(
        edge=edge,
        link="3g",
        n_batches=50,
        cloud_speedup=1.0,
        conventions=Conventions(latency="pipelined"),
        grad_codec=parse_codec("q8"),
    )
    want = predict(sc, "layer3", parse_codec("q8"))
    for method, key in (
        ("cloud_only", "cloud-only"),
        ("split", "split"),
        ("hierarchical", "hierarchical"),
    ):
        c = check_record(_record(tmp_path, method, 100.0), PROFILES)
        assert c.predicted_s == want[key].total_s
        assert abs(c.error_pct - 100 * (want[key].total_s / 100.0 - 1)) < 1e-9
        assert c.batches == 50 and c.link == "3g"


def test_validate_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None\nimport hierbench.runtime.validate\n"
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
