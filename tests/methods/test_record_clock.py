"""The run record's end-to-end clock and CPU shares, on real runs of every method."""

from __future__ import annotations

import pytest

from hierbench.methods import run
from hierbench.spec.records import check_record
from tests.methods.test_methods import small


@pytest.mark.parametrize("method", ["cloud_only", "split", "hierarchical"])
def test_train_wall_is_first_edge_step_to_last_training_event(cifar10_root, method):
    cfg = small(cifar10_root, method=method, codec="q8", epochs=2, eval="epoch", eval_samples=32)
    rec = check_record(run(cfg, progress=False))
    steps = rec["edge_steps"] + rec["cloud_steps"]
    first = min(r["t0"] for r in rec["edge_steps"])
    last = max(r["t1"] for r in steps)
    totals = rec["totals"]
    # nothing subtracted: evaluation after epoch 1 falls inside the window and is only reported
    assert totals["train_wall_s"] == pytest.approx(last - first, abs=1e-9)
    assert totals["eval_in_window_s"] > 0
    assert totals["eval_in_window_s"] <= totals["edge_eval_s"] + 1e-9
    assert totals["wall_s"] >= totals["train_wall_s"]  # from the cloud's welcome
    # CPU shares: CPU time over the compute spans, both roles in this one process
    assert 0 < totals["cloud_cpu_share"] < 4
    if method == "cloud_only":
        assert totals["edge_cpu_share"] is None  # the edge computes nothing there
    else:
        assert 0 < totals["edge_cpu_share"] < 4
        assert all(r["cpu_s"] >= 0 for r in rec["edge_steps"])
    env = rec["environment"]
    assert (env["cpu_model"] and len(env["git_sha"]) in (7, 40)) or env["git_sha"] == "unknown"
    assert env["git_dirty"] in (True, False, None)
