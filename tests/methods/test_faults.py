"""Faults of two real processes (issue 15): the edge trains on while the cloud is away and the
record counts the wait (item 3); an edge killed before its first checkpoint resumes (item 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from hierbench.methods import run
from hierbench.methods.runner import run_edge, start_cloud_process
from tests.methods.chaos import SECRET, chaos_config, check_against, edge_args
from tests.methods.test_methods import _free_port


def _cloud(port: int, ckpt, *extra: str, progress: bool = False):
    proc, _, _ = start_cloud_process(
        SECRET,
        link="20mbit/1ms",
        listen=f"127.0.0.1:{port}",
        extra=("--checkpoint-dir", str(ckpt), *extra),
        progress_lines=progress,
    )
    return proc


def test_edge_trains_while_the_cloud_is_away_and_counts_its_wait(cifar10_root, tmp_path):
    """SIGKILL the cloud, restart it 4 s later: the edge goes on training until its backlog (about
    3 uploads) is full, then waits, and the record counts that wait in ``uplink_stall_s`` (before:
    ``_recover`` held the lock ``_upload`` needs for the whole outage, so the edge stopped at once
    and the record showed ~0.1 s)."""
    outage = 4.0
    cfg = chaos_config(cifar10_root, epochs=4).replace(backlog_bytes=110_000)
    reference = run(cfg.replace(checkpoint_every=0), progress=False)
    port, ckpt = _free_port(), tmp_path / "ckpt"
    cloud = _cloud(port, ckpt)
    result: dict = {}

    def edge():
        try:
            result["record"] = run_edge(cfg, "127.0.0.1", port, SECRET.encode(), progress=False)
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=edge, daemon=True)
    t.start()
    deadline = time.monotonic() + 120
    while not (ckpt / "cloud.pt").exists():
        assert time.monotonic() < deadline and cloud.poll() is None, cloud.stderr.read()
        time.sleep(0.02)
    t_kill = time.perf_counter()  # the record's clock (CLOCK_MONOTONIC)
    cloud.kill()
    cloud.wait()
    time.sleep(outage)
    t_back = time.perf_counter()
    second = _cloud(port, ckpt, "--resume")
    t.join(timeout=180)
    assert not t.is_alive()
    assert second.wait(timeout=60) == 0, second.stderr.read()
    assert "error" not in result, result.get("error")
    rec = result["record"]
    assert check_against(rec, reference) == []
    steps = rec["edge_steps"]
    during = [s for s in steps if t_kill < s["t0"] and s["t1"] < t_back]
    assert len(during) >= 2, f"the edge trained {len(during)} steps while the cloud was away"
    totals = rec["totals"]
    assert totals["reconnects"] >= 1
    assert totals["cloud_away_s"] >= 0.8 * outage
    # The edge waited (once its backlog was full) inside a step, outside its compute and
    # slowdown: the longest such wait is counted in the record.
    waits = [s["t1"] - s["t0"] - s["compute_s"] - s["idle_s"] for s in steps]
    assert max(waits) > 1.0, max(waits)
    assert totals["uplink_stall_s"] >= max(waits) - 0.5, (totals["uplink_stall_s"], max(waits))


def test_edge_killed_before_its_first_checkpoint_resumes(cifar10_root, tmp_path):
    """SIGKILL the edge process after the cloud has trained some steps but before the edge wrote
    its first checkpoint; ``hierbench edge --resume`` starts again from step 0 (recomputing, as
    training is deterministic), uploads only what the cloud lacks, and the run equals an
    uninterrupted one (before: --resume said there was no checkpoint, and without it the cloud
    said to resume)."""
    cfg = chaos_config(cifar10_root, epochs=3).replace(checkpoint_every=9)
    reference = run(cfg.replace(checkpoint_every=0), progress=False)
    port, ckpt, out = _free_port(), tmp_path / "ckpt", tmp_path / "edge.json"
    cloud = _cloud(port, ckpt, progress=True)
    cmd = [sys.executable, "-m", "hierbench.cli", "edge", "--connect", f"127.0.0.1:{port}"]
    cmd += [*edge_args(cfg), "--checkpoint-dir", str(ckpt), "--out", str(out), "--quiet"]
    env = dict(os.environ, HIERBENCH_SECRET=SECRET)
    procs = [cloud]
    try:
        first = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, text=True)
        procs.append(first)
        # The cloud's progress lines say how far it trained: kill once it is past step 2.
        done = 0
        while done < 3:
            line = cloud.stdout.readline()
            assert line, cloud.stderr.read()
            parts = line.split()
            if parts[:2] == ["progress", "cloud"]:
                done = int(parts[2])
        assert not (ckpt / "edge.pt").exists()
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.Popen([*cmd, "--resume"], stderr=subprocess.PIPE, env=env, text=True)
        procs.append(second)
        threading.Thread(target=lambda: [None for _ in cloud.stdout], daemon=True).start()
        _, err = second.communicate(timeout=180)
        assert second.returncode == 0, err[-3000:]
        assert cloud.wait(timeout=60) == 0, cloud.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    rec = json.loads(out.read_text())
    assert check_against(rec, reference) == []
    assert rec["cloud_steps"][0]["step"] == 0
