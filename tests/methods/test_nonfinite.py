"""Diverging training stops with an error naming the step and the side, whatever the method and
codec (issue 15, item 5); non-finite settings are refused; run records are strict JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from hierbench.errors import ConfigError, NonFiniteError
from hierbench.methods import RunConfig, run
from hierbench.methods.runner import run_two_processes
from hierbench.spec.records import write_record
from tests.methods.test_methods import small

DIVERGING = 1e6  # the issue's --lr: NaN losses from step 3 with a lossless codec


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("method", "codec"),
    [
        ("cloud_only", "fp32"),
        ("split", "fp32"),
        ("split", "fp16+zstd1"),
        ("hierarchical", "fp32"),
        ("hierarchical", "fp16+zstd1"),
        ("hierarchical", "q8"),
    ],
)
def test_diverging_run_stops_naming_step_and_side(cifar10_root, method, codec):
    cfg = small(cifar10_root, method=method, codec=codec, lr=DIVERGING, batches_per_epoch=8)
    with pytest.raises(NonFiniteError, match=r"step \d+ \((edge|cloud)\): the .* is not finite"):
        run(cfg, progress=False)


def test_diverging_two_process_run_stops_on_the_edge_too(cifar10_root):
    """cloud_only: only the cloud sees a loss; it tells the edge, which stops with its error."""
    cfg = small(cifar10_root, method="cloud_only", lr=DIVERGING, batches_per_epoch=8)
    with pytest.raises(NonFiniteError, match=r"step \d+ \(cloud\): the loss is not finite"):
        run_two_processes(cfg, progress=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", math.nan),
        ("lr", math.inf),
        ("lr", 0.0),
        ("lr", -0.1),
        ("momentum", math.nan),
        ("weight_decay", -math.inf),
        ("edge_slowdown", math.nan),
        ("edge_slowdown", math.inf),
        ("backlog_bytes", 0),
        ("batch_size", 2.5),
        ("epochs", True),
        ("outages", ((0.0, math.inf),)),
        ("outages", ((math.nan, 1.0),)),
    ],
)
def test_non_finite_or_invalid_numbers_are_refused(field, value):
    word = "outage" if field == "outages" else field
    with pytest.raises((ConfigError, ValueError), match=word):
        RunConfig(**{field: value})


def test_cli_refuses_lr_nan_before_training(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hierbench.cli", "train", "--lr", "nan", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "lr must be a finite number > 0, got nan" in proc.stderr


def test_records_are_strict_json(tmp_path):
    rec = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": {"d": 2.5}}
    path = write_record(rec, tmp_path / "r.json")
    assert _strict(path.read_text()) == {"a": None, "b": [1.0, None, None], "c": {"d": 2.5}}
