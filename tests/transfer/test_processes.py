"""Real sockets on loopback between two processes (spawned interpreters, not forks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hierbench.errors import TransferError
from hierbench.transfer import listen
from hierbench.transfer._peer import SECRET_ENV
from hierbench.transfer.netns import run_pair

REPO = Path(__file__).resolve().parents[2]
T = 60.0


def test_two_processes_both_directions_every_byte_in_order():
    sizes = [0, 1, 7, 1000, 65_536, 65_537, 300_000, 12_345] * 3
    listener, sender = run_pair(sizes=sizes, echo=True, send_link="400mbit/1ms", timeout=T)
    assert [c[0] for c in listener["checks"]] == list(range(len(sizes)))
    assert all(ok for _, _, ok in listener["checks"])  # listener got every byte, in order
    assert [c[1] for c in sender["checks"]] == sizes and all(ok for *_, ok in sender["checks"])
    recs = [r for r in listener["records"] if r["direction"] == "received"]
    for r, n in zip(recs, sizes):
        # paced at 400 Mbit/s, delivered >= 1 ms after arrival; generous bounds only (real time)
        assert r["tx_end_ns"] - r["tx_start_ns"] >= n * 8 * 1e9 / 400e6 - 1
        assert r["delivered_ns"] - r["arrived_ns"] >= 1_000_000


def test_shaped_goodput_between_processes():
    rate = 40e6
    listener, _ = run_pair(count=10, nbytes=100_000, send_link="40mbit", timeout=T)
    recs = [r for r in listener["records"] if r["direction"] == "received"]
    # first commit (sender) -> last arrival (receiver), on the host's one monotonic clock: the
    # emulated link can never beat its rate; on a loaded machine it may fall well short of it.
    span_s = (recs[-1]["arrived_ns"] - recs[0]["enqueued_ns"]) * 1e-9
    goodput = 10 * 100_000 * 8 / span_s
    assert 0.5 * rate < goodput <= rate * (1 + 1e-9)


def test_peer_process_killed_mid_frame():
    env = dict(os.environ, PYTHONPATH=str(REPO), **{SECRET_ENV: "a 16+ byte secret"})
    with listen(port=0, secret="a 16+ byte secret") as lst:
        child = subprocess.Popen(
            [sys.executable, "-m", "hierbench.transfer._peer", "send", "--port", str(lst.port),
             "--link", "2mbit", "--count", "1", "--bytes", "2000000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            ep = lst.accept(timeout=T)
            line = child.stdout.readline()  # its first send() has returned: 8 s of frame to go
            assert json.loads(line)["event"] == "sending", child.stderr.read()
            time.sleep(0.5)
            child.send_signal(signal.SIGKILL)
            child.wait(T)
            with ep, pytest.raises(TransferError, match="mid-frame"):
                ep.recv(timeout=T)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
