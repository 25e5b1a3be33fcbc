"""A run whose link rates the kernel makes (tc tbf between two namespaces) trains the same math
as the token-bucket run, at about the rate the model predicts. Root only, like test_netns."""

from __future__ import annotations

import os

import pytest

from hierbench.methods.kernel_shaped import engine_link, run_kernel_shaped
from hierbench.methods.runner import run_two_processes
from hierbench.transfer import netns
from tests.methods.test_methods import small


def test_engine_keeps_only_the_latency():
    assert engine_link("3g") == "inf/75ms"
    assert engine_link("20mbit") == "inf/0ms"


def test_kernel_shaped_run_trains_like_the_engine_shaped_one(cifar10_root):
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"kernel-shaped mode unavailable: {reason}")
    cfg = small(cifar10_root, method="hierarchical", codec="q8", link="3g", batches_per_epoch=4)
    tc = run_kernel_shaped(cfg)
    bucket = run_two_processes(cfg, progress=False)
    assert tc["config"]["link"] == "3g" and tc["shaper"]["engine_link"] == "inf/75ms"
    assert "tbf" in tc["shaper"]["qdisc_up"] and "1Mbit" in tc["shaper"]["qdisc_up"]
    assert tc["totals"]["bytes_up"] == bucket["totals"]["bytes_up"]
    losses = [[r["loss"] for r in rec["cloud_steps"]] for rec in (tc, bucket)]
    assert losses[0] == losses[1]
    # every uploaded byte crossed the 1 Mbit/s tbf inside the timed window (less its burst)
    up = tc["totals"]["bytes_up"]
    assert tc["totals"]["train_wall_s"] >= 8 * (up - 4500) / 1e6, tc["totals"]
    mine = [n for n in netns._run("ip", "netns", "list").stdout.split() if str(os.getpid()) in n]
    assert not mine  # both namespaces removed
