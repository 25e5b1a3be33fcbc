"""The shared ingress (csrc/transfer/ingress.h): its arithmetic, exactly; endpoints of one process
sharing it in virtual time, exactly; processes sharing it through a file, over real TCP.

The arithmetic, in integer ns: a chunk of n bytes costs c = ceil(8 n 1e9 / R), the depth is
tau = ceil(8 b 1e9 / R); a chunk that may enter at t starts at max(t, TAT - tau), TAT becomes
max(TAT, t) + c and the chunk ends at max(t, TAT - tau). At 8 Mbit/s a byte is exactly 1 us.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hierbench.errors import ConfigError, TransferError
from hierbench.transfer import Ingress, Link, VirtualClock, connect, inprocess_pair, listen
from hierbench.transfer._peer import SECRET_ENV, payload

REPO = Path(__file__).resolve().parents[2]
US, MS = 1_000, 1_000_000  # ns
T = 60.0


def cost_ns(nbytes: int, rate_bps: int) -> int:
    return -(-nbytes * 8 * 10**9 // rate_bps)


class ReferenceBucket:
    """A FIFO token bucket written as one (not as GCRA): credit in ns of transmission, refilled 1
    per ns up to tau, full at the start; a chunk waits for the chunks before it, then drains its
    cost from the credit and trickles at the refill rate once the credit is gone."""

    def __init__(self, rate_bps: int, burst_bytes: int):
        self.rate = rate_bps
        self.tau = cost_ns(burst_bytes, rate_bps)
        self.level, self.at, self.busy = self.tau, None, None

    def reserve(self, nbytes: int, t: int) -> tuple[int, int]:
        c = cost_ns(nbytes, self.rate)
        start = t if self.busy is None else max(t, self.busy)
        level = self.tau if self.at is None else min(self.tau, self.level + start - self.at)
        end = start + max(0, c - level)
        self.level, self.at, self.busy = max(0, level - c), end, end
        return start, end


# -- the arithmetic ------------------------------------------------------------------------------


def test_hand_computed_sequence():
    g = Ingress(8_000_000, burst_bytes=2000)  # 1 byte = 1 us; the bucket holds 2 ms
    assert (g.rate_bps, g.burst_bytes, g.tolerance_ns, g.path) == (8_000_000, 2000, 2 * MS, None)
    assert g.reserve(1000, 0) == (0, 0)  # from the full bucket: at once, 1000 B left
    assert g.reserve(3000, 0) == (0, 2 * MS)  # 1000 B of credit, 2000 B at the rate
    assert g.reserve(500, 1 * MS) == (2 * MS, 2500 * US)  # queues behind the chunk before
    assert g.reserve(1000, 10 * MS) == (10 * MS, 10 * MS)  # refilled meanwhile (to 2000 B only)
    assert g.reserve(2000, 10 * MS) == (10 * MS, 11 * MS)
    assert g.reserve(0, 12 * MS) == (12 * MS, 12 * MS)


def test_each_chunk_pays_its_own_ceil():
    g = Ingress(3_000_000)  # 1 byte = 2666.67 ns: cost 2667
    assert g.reserve(1, 0) == (0, 2667)
    assert g.reserve(1, 0) == (2667, 5334)
    assert g.reserve(1, 0) == (5334, 8001)  # 3 bytes in one chunk would take 8000 ns
    assert Ingress(3_000_000).reserve(3, 0) == (0, 8000)


@pytest.mark.parametrize(("rate", "burst"), [(8_000_000, 0), (8_000_000, 5000), (3_000_000, 777)])
def test_matches_the_reference_bucket_on_random_sequences(rate, burst):
    rng = random.Random(rate + burst)
    for _ in range(20):
        g, ref = Ingress(rate, burst_bytes=burst), ReferenceBucket(rate, burst)
        t = rng.randrange(10**6)
        for _ in range(200):
            t += rng.choice([0, 0, rng.randrange(3000), rng.randrange(3 * MS)])
            n = rng.choice([0, 1, rng.randrange(1, 1500), rng.randrange(1, 20_000)])
            assert g.reserve(n, t) == ref.reserve(n, t)


def test_out_of_order_reservations_still_hold_every_window_to_the_rate():
    """Processes reserve in whatever order their compare-and-swaps land, so a chunk may come with
    an earlier time than the one before it: the chunks that start and end inside any window
    [a, z] still cost at most z - a + tau."""
    rate, burst = 8_000_000, 3000
    rng = random.Random(7)
    g = Ingress(rate, burst_bytes=burst)
    chunks = []
    for _ in range(60):
        n = rng.randrange(1, 4000)
        s, e = g.reserve(n, rng.randrange(40 * MS))
        assert s <= e
        chunks.append((s, e, cost_ns(n, rate)))
    times = sorted({x for s, e, _ in chunks for x in (s, e)})
    for i, a in enumerate(times):
        for z in times[i:]:
            inside = sum(c for s, e, c in chunks if s >= a and e <= z)
            assert inside <= z - a + g.tolerance_ns


def test_bad_input_is_refused_clearly(tmp_path):
    for rate in (0, -1, math.inf, math.nan, 0.4):
        with pytest.raises(ValueError, match="ingress rate"):
            Ingress(rate)
    with pytest.raises(ConfigError, match="rate"):
        Ingress("0mbit")
    with pytest.raises(ValueError, match="burst_bytes"):
        Ingress(1e6, burst_bytes=-1)
    g = Ingress("2mbit")
    assert g.rate_bps == 2_000_000 and "2 Mbit/s" in repr(g)
    with pytest.raises(ValueError, match="nbytes"):
        g.reserve(-1, 0)
    with pytest.raises(TypeError, match="Ingress"):
        inprocess_pair(ingress="2mbit")


# -- endpoints of one process, in virtual time -------------------------------------------------


def sent(ep):
    return [(r.tx_start_ns, r.tx_end_ns) for r in ep.records() if r.direction == "sent"]


def test_two_pairs_share_the_ingress_exactly():
    """Edge 1 (unshaped link) and edge 2 (16 Mbit/s) behind an 8 Mbit/s ingress. In process a
    message is one chunk, reserved when its own link would start it."""
    clock = VirtualClock()
    g = Ingress("8mbit")
    a1, b1 = inprocess_pair(Link(), slots=4, clock=clock, ingress=g)
    a2, b2 = inprocess_pair(Link(16e6, latency_s=0.001), slots=4, clock=clock, ingress=g)
    with a1, b1, a2, b2:
        a1.send(payload(0, 4000))  # reserved at 0: [0, 4 ms]
        a1.send(payload(1, 2000))  # reserved at 4 ms, when its link is free: after edge 2's
        clock.sleep(0.001)
        a2.send(payload(2, 3000))  # reserved at 1 ms (its own link: [1, 2.5] ms): [4, 7] ms
        got = [b1.recv(), b1.recv(), b2.recv()]
        assert [m.data for m in got] == [payload(0, 4000), payload(1, 2000), payload(2, 3000)]
        assert sent(a1) == [(0, 4 * MS), (7 * MS, 9 * MS)]
        assert sent(a2) == [(4 * MS, 7 * MS)]
        assert got[2].record.delivered_ns == 8 * MS  # + its 1 ms latency
        # 9000 B through the ingress in 9 ms: exactly its 8 Mbit/s, end to end
        assert g.reserve(0, 9 * MS) == (9 * MS, 9 * MS)
        assert a1.stats().ingress_wait_s == pytest.approx(0.009, abs=1e-12)  # 4 + (9 - 4)
        assert a2.stats().ingress_wait_s == pytest.approx(0.0045, abs=1e-12)  # 7 - 2.5
        assert b1.stats().ingress_wait_s == 0.0  # the downlink is not shared


def test_a_slower_own_link_hides_the_ingress_and_a_burst_passes_at_once():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(2e6), clock=clock, ingress=Ingress(8e6, burst_bytes=1000))
    with a, b:
        a.send(bytes(1000))  # own link: 4 ms; the ingress (full) is not what binds
        b.recv()
        assert sent(a) == [(0, 4 * MS)] and a.stats().ingress_wait_s == 0.0
    clock = VirtualClock()
    a, b = inprocess_pair(Link(), clock=clock, ingress=Ingress(8e6, burst_bytes=1000))
    with a, b:
        a.send(bytes(3000))  # 1000 B from the full bucket, 2000 B at 1 B/us
        a.send(bytes(0))  # an empty message takes nothing from the ingress
        b.recv(), b.recv()
        assert sent(a) == [(0, 2 * MS), (2 * MS, 2 * MS)]


def test_an_ingress_serves_one_clock(tmp_path):
    g = Ingress(8e6)
    a, b = inprocess_pair(clock=VirtualClock(), ingress=g)
    with a, b, pytest.raises(ValueError, match="another clock"):
        inprocess_pair(clock=VirtualClock(), ingress=g)
    shared = Ingress.create(tmp_path / "tower", 8e6)
    with pytest.raises(ValueError, match="VirtualClock"):
        inprocess_pair(clock=VirtualClock(), ingress=shared)


def test_listener_ingress_and_the_accept_override():
    """Real clock, real TCP: what an accepted endpoint sends draws from the listener's ingress
    unless accept() says otherwise. 10 kB at 8 Mbit/s costs 10 ms of ingress time."""
    secret = secrets.token_hex(16)
    g = Ingress("8mbit")
    with ThreadPoolExecutor(1) as pool, listen(port=0, secret=secret, ingress=g) as lst:
        fut = pool.submit(lst.accept, timeout=T)
        c1 = connect("127.0.0.1", lst.port, secret, timeout=T)
        s1 = fut.result(T)
        fut = pool.submit(lst.accept, timeout=T, ingress=None)
        c2 = connect("127.0.0.1", lst.port, secret, timeout=T)
        s2 = fut.result(T)
        with c1, s1, c2, s2:
            assert (s1.ingress, s2.ingress, c1.ingress) == (g, None, None)
            for s, c in ((s1, c1), (s2, c2)):
                s.send(payload(3, 10_000))
                assert c.recv(timeout=T).data == payload(3, 10_000)
                s.flush(timeout=T)
            ((start, end),) = sent(s1)
            assert end - start >= 10 * MS and s1.stats().ingress_wait_s >= 0.010 * (1 - 1e-12)
            assert s2.stats().ingress_wait_s == 0.0


# -- the shared file -----------------------------------------------------------------------------


def test_file_create_attach_and_refusals(tmp_path):
    path = tmp_path / "tower"
    with pytest.raises(TransferError, match="does not exist"):
        Ingress.attach(path)
    g = Ingress.create(path, "4mbit", burst_bytes=1000)
    assert (g.path, g.rate_bps, g.burst_bytes) == (str(path), 4_000_000, 1000)
    with pytest.raises(TransferError, match="already exists"):
        Ingress.create(path, "4mbit")
    h = Ingress.attach(path, rate="4mbit", burst_bytes=1000)
    assert h.reserve(3000, 0) == (0, 4 * MS)  # one state, seen through either mapping
    assert g.reserve(500, 0) == (4 * MS, 5 * MS)
    assert Ingress(4e6, 1000, path=path).reserve(0, 0) == (5 * MS, 5 * MS)  # attaches
    for kwargs in ({"rate": "8mbit"}, {"burst_bytes": 0}):
        with pytest.raises(ConfigError, match=r"holds 4000000 bit/s, burst 1000 B"):
            Ingress.attach(path, **kwargs)
    with pytest.raises(ConfigError, match="holds 4000000 bit/s"):
        Ingress("8mbit", path=path)
    assert Ingress(1e6, path=tmp_path / "new").rate_bps == 1_000_000  # creates

    good = path.read_bytes()
    cases = {
        "short": (b"\0" * 10, "has 10 bytes"),
        "magic": (b"XXXXXXXX" + good[8:], "magic"),
        "version": (good[:8] + (2).to_bytes(4, "little") + good[12:], "format version 2"),
        "rate": (good[:16] + (8_000_000).to_bytes(8, "little") + good[24:], "tolerance"),
    }
    for name, (data, why) in cases.items():
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(TransferError, match=why):
            Ingress.attach(bad)


def _run(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
    )  # fmt: skip


HAMMER = """
import sys
from hierbench.transfer import Ingress
g = Ingress.attach(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # go: both processes reserve at the same time
last, gaps = None, 0
for _ in range(int(sys.argv[2])):
    end = g.reserve(1000, 0)[1]
    gaps += last is not None and end - last > 1000 * 1000  # the other process reserved between
    last = end
print(gaps, flush=True)
"""


def test_processes_lose_no_reservation(tmp_path):
    """Two processes reserving at once through one file: every compare-and-swap lands (the
    state ends exactly at the sum of all costs)."""
    path, n = tmp_path / "tower", 200_000
    Ingress.create(path, 8e6)
    procs = [_run(HAMMER, str(path), str(n)) for _ in range(2)]
    for p in procs:  # both have imported and attached: then go at once
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    gaps = []
    for p in procs:
        out, err = p.communicate(timeout=T)
        assert p.returncode == 0, err
        gaps.append(int(out.strip()))
    assert Ingress.attach(path).reserve(0, 0)[1] == 2 * n * 1000 * US
    # they did contend: the reservations interleaved (else this test shows nothing)
    assert sum(gaps) > 0, gaps


SENDER = """
import dataclasses, json, os, sys
from hierbench.transfer import Ingress, connect
from hierbench.transfer._peer import SECRET_ENV, payload
port, path, nbytes, seq = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ingress = Ingress.attach(path, rate=8e6)
with connect("127.0.0.1", port, os.environ[SECRET_ENV], ingress=ingress, timeout=60) as ep:
    print("ready", flush=True)
    sys.stdin.readline()  # go
    ep.send(payload(seq, nbytes), timeout=60)
    ep.flush(timeout=60)
    rec = [dataclasses.asdict(r) for r in ep.records()]
    print(json.dumps({"records": rec, "stats": dataclasses.asdict(ep.stats())}))
"""


def test_two_processes_share_one_ingress_over_tcp(tmp_path):
    """Two edge processes with unshaped links send 1 MB each over TCP, at once, through one
    8 Mbit/s ingress file: together they cannot beat 8 Mbit/s. Bounds only (real time): on the
    host's one monotonic clock the last byte leaves no earlier than 2 s after the first one
    entered, however the two interleave."""
    rate, nbytes = 8_000_000, 1_000_000
    path = tmp_path / "tower"
    Ingress.create(path, rate)
    secret = secrets.token_hex(16)
    with listen(port=0, secret=secret) as lst:
        procs = [
            _run(SENDER, str(lst.port), str(path), str(nbytes), str(i), env={SECRET_ENV: secret})
            for i in range(2)
        ]
        try:
            eps = [lst.accept(timeout=T) for _ in procs]
            for p in procs:
                assert p.stdout.readline() == "ready\n", p.stderr.read()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            msgs = [ep.recv(timeout=T) for ep in eps]
            outs = []
            for p in procs:
                out, err = p.communicate(timeout=T)
                assert p.returncode == 0, err
                outs.append(json.loads(out.splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for ep in eps:
            ep.close()
    assert sorted(m.data for m in msgs) == sorted(payload(i, nbytes) for i in range(2))
    recs = [r for o in outs for r in o["records"]]
    first = min(r["tx_start_ns"] for r in recs)
    bound = 2 * cost_ns(nbytes, rate)  # burst 0
    assert max(r["tx_end_ns"] for r in recs) - first >= bound
    assert max(m.record.arrived_ns for m in msgs) - first >= bound  # as the cloud saw it
    for o in outs:  # alone, each one's chunks were held back by at least its own bytes' cost
        assert o["stats"]["ingress_wait_s"] >= cost_ns(nbytes, rate) * 1e-9 * (1 - 1e-12)
    # Both were told to go at once and each needs 1 s even alone: they overlapped (shared).
    assert max(r["tx_start_ns"] for r in recs) < min(r["tx_end_ns"] for r in recs)
