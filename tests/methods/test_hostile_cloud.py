"""A real `hierbench cloud` process under hostile connections (issue 15, items 1 and 2).

Before the real edge arrives and while it is away (killed, then restarted with --resume), the
cloud gets every attack of the issue: connect-and-close, garbage, a 2^62-byte frame header, a
wrong HMAC, a real `hierbench edge` with the wrong secret, and silent connections (more than
the old backlog, one silent for the whole 10 s handshake timeout). Each is logged and dropped;
the cloud keeps serving; the real edge connects at once and the run completes, every step
trained once and in order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from hierbench.methods.runner import run_edge, start_cloud_process
from tests.methods.test_methods import _edge_cli_args, _free_port, small
from tests.transfer.test_hostile import attacks

SECRET = "hostile-connections-test-secret"


def wrong_secret_edge(cfg, port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hierbench.cli", "edge", "--connect", f"127.0.0.1:{port}"]
    env = dict(os.environ, HIERBENCH_SECRET="not the cloud's secret at all")
    return subprocess.run(
        [*cmd, *_edge_cli_args(cfg), "--quiet"], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def check_drops(log: str, silent_for_10s: bool) -> None:
    drops = [line for line in log.splitlines() if "handshake with 127.0.0.1:" in line]
    for cause in (
        "closed the connection before the handshake",
        "bad handshake magic",
        "failed authentication (wrong secret)",
    ):
        assert any(cause in d for d in drops), (cause, log[-3000:])
    if silent_for_10s:
        assert any("it sent nothing for 10 s" in d for d in drops), log[-3000:]
    assert all(d.endswith(": dropped") for d in drops)


def test_bad_connections_before_the_edge_never_stop_the_cloud(cifar10_root):
    cfg = small(cifar10_root, method="hierarchical", codec="q8", link="20mbit/1ms")
    proc, _, port = start_cloud_process(SECRET, link=cfg.link)
    try:
        silent = attacks(port)  # the last of them stays silent
        t_silent = time.monotonic()
        bad = wrong_secret_edge(cfg, port)
        assert bad.returncode == 2, bad.stderr[-2000:]
        assert "refused the connection: authentication failed" in bad.stderr
        time.sleep(max(0.0, t_silent + 10.5 - time.monotonic()))  # the handshake timeout
        assert proc.poll() is None, proc.stderr.read()
        rec = run_edge(cfg, "127.0.0.1", port, SECRET.encode(), progress=False)
        assert proc.wait(timeout=60) == 0
        for s in silent:
            s.close()
        check_drops(proc.stderr.read(), silent_for_10s=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [s["step"] for s in rec["cloud_steps"]] == list(range(rec["totals"]["batches"]))


def test_bad_connections_while_the_edge_is_away_never_stop_the_cloud(cifar10_root, tmp_path):
    """The reconnect path: the edge is SIGKILLed after its first checkpoint; 20 silent
    connections and the attacks arrive; the restarted edge gets in at once (its connect budget
    is far shorter than 20 handshake timeouts) and the run completes."""
    cfg = small(
        cifar10_root,
        method="hierarchical",
        codec="q8",
        link="20mbit/1ms",
        epochs=2,
        batches_per_epoch=4,
        checkpoint_every=2,
        edge_slowdown=2.0,
    )
    port = _free_port()
    ckpt, out = tmp_path / "ckpt", tmp_path / "edge.json"
    proc, _, _ = start_cloud_process(
        SECRET, link=cfg.link, listen=f"127.0.0.1:{port}", extra=("--checkpoint-dir", str(ckpt))
    )
    edge_cmd = [sys.executable, "-m", "hierbench.cli", "edge", "--connect", f"127.0.0.1:{port}"]
    edge_cmd += [*_edge_cli_args(cfg), "--checkpoint-dir", str(ckpt), "--out", str(out), "--quiet"]
    env = dict(os.environ, HIERBENCH_SECRET=SECRET)
    procs = [proc]
    silent: list[socket.socket] = []
    try:
        first = subprocess.Popen(edge_cmd, env=env, stderr=subprocess.PIPE, text=True)
        procs.append(first)
        deadline = time.monotonic() + 120
        while not (ckpt / "edge.pt").exists():
            assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.02)
        first.kill()
        first.wait()
        silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        silent += attacks(port)
        second = subprocess.Popen(
            [*edge_cmd, "--resume"], env=env, stderr=subprocess.PIPE, text=True
        )
        procs.append(second)
        _, err = second.communicate(timeout=180)
        assert second.returncode == 0, err[-3000:]
        assert proc.wait(timeout=60) == 0
        log = proc.stderr.read()
        assert "an edge reconnected" in log, log[-3000:]
        check_drops(log, silent_for_10s=False)
    finally:
        for s in silent:
            s.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    rec = json.loads(out.read_text())
    total = cfg.epochs * cfg.batches_per_epoch
    assert [s["step"] for s in rec["cloud_steps"]] == list(range(total))


def test_the_cloud_refuses_a_weak_secret():
    """(The edge's connect refuses it the same way: tests/transfer/test_hostile.py.)"""
    env = dict(os.environ, HIERBENCH_SECRET="hunter2")
    cmd = [sys.executable, "-m", "hierbench.cli", "cloud", "--listen", "127.0.0.1:0", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the shared secret is 7 bytes; at least 16 are required" in done.stderr
