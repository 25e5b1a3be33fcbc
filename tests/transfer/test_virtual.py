"""The engine in virtual time: exact timestamps, backpressure, order, outages, close.

Every expected time below is computed by hand from the link model (docs/transfer.md): a message
of n bytes on an idle link with an empty bucket takes ceil(8 n 1e9 / rate) ns; the next one
starts when the link is free and the message is committed; delivery is transmission end +
latency (+ jitter), in order. The virtual clock makes these equalities exact and the runs fast.
"""

from __future__ import annotations

import gc
import itertools
import random
import threading

import pytest
import torch

from hierbench.errors import TransferClosed, TransferError, TransferTimeout
from hierbench.transfer import Link, VirtualClock, inprocess_pair

MS = 1_000_000  # ns


def tx_ns(nbytes: int, rate_bps: int) -> int:
    return -(-nbytes * 8 * 10**9 // rate_bps)


def payload(seq: int, n: int) -> bytes:
    return random.Random(seq).randbytes(n)


def sent(ep):
    return [r for r in ep.records() if r.direction == "sent"]


def received(ep):
    return [r for r in ep.records() if r.direction == "received"]


def test_times_match_rate_and_latency_exactly():
    rate, lat = 3_000_000, 7 * MS  # 3 Mbit/s: most sizes do not divide evenly (ceil)
    sizes = [1000, 12345, 1, 0, 99_999, 777]
    clock = VirtualClock()
    a, b = inprocess_pair(Link(rate, latency_s=lat / 1e9), slots=8, recv_slots=8, clock=clock)
    with a, b:
        for i, n in enumerate(sizes):
            assert a.send(payload(i, n)) == i
        assert clock.now_ns() == 0  # 8 slots: nothing blocked
        msgs = [b.recv() for _ in sizes]
        t, expect = 0, []
        for n in sizes:
            start, t = t, t + tx_ns(n, rate)
            expect.append((start, t, t + lat))
        for i, (m, (s, e, d)) in enumerate(zip(msgs, expect)):
            r = m.record
            assert (m.seq, m.nbytes, m.data) == (i, sizes[i], payload(i, sizes[i]))
            assert (r.enqueued_ns, r.tx_start_ns, r.tx_end_ns) == (0, s, e)
            assert (r.arrived_ns, r.delivered_ns, r.taken_ns) == (e, d, d)
        assert [(r.tx_start_ns, r.tx_end_ns, r.delivered_ns) for r in sent(a)] == expect
        assert clock.now_ns() == expect[-1][2]
        st = a.stats()
        assert st.bytes_sent == sum(sizes) and st.messages_sent == len(sizes)
        assert st.link_busy_fraction == 1.0
        assert st.send_span_s == pytest.approx(expect[-1][1] / 1e9, abs=1e-12)


def test_idle_link_starts_at_commit_and_goodput_equals_rate():
    rate = 8_000_000  # 1 byte per microsecond
    clock = VirtualClock()
    a, b = inprocess_pair(Link(rate), slots=4, recv_slots=8, clock=clock)
    with a, b:
        clock.sleep(0.005)
        a.send(bytes(1000))
        a.send(bytes(3000))
        m0, m1 = b.recv(), b.recv()
        assert (m0.record.tx_start_ns, m0.record.tx_end_ns) == (5 * MS, 6 * MS)
        assert (m1.record.tx_start_ns, m1.record.tx_end_ns) == (6 * MS, 9 * MS)
        st = a.stats()
        assert st.goodput_bps == pytest.approx(rate, rel=1e-12)
        assert b.stats().recv_goodput_bps == pytest.approx(rate, rel=1e-12)


def test_token_bucket_burst():
    rate, burst = 8_000_000, 10_000
    clock = VirtualClock()
    a, b = inprocess_pair(Link(rate, burst_bytes=burst), slots=4, recv_slots=8, clock=clock)
    with a, b:
        a.send(bytes(4000))  # the bucket starts full: instant
        a.send(bytes(10_000))  # 6000 B of credit left: 4000 B wait for tokens (4 ms)
        r0, r1 = b.recv().record, b.recv().record
        assert (r0.tx_start_ns, r0.tx_end_ns) == (0, 0)
        assert (r1.tx_start_ns, r1.tx_end_ns) == (0, 4 * MS)
        clock.sleep(0.050)  # refills to the cap (10 000 B), not beyond
        t0 = clock.now_ns()
        a.send(bytes(12_000))
        r2 = b.recv().record
        assert (r2.tx_start_ns, r2.tx_end_ns) == (t0, t0 + 2 * MS)


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_producer_blocks_at_n_in_flight(slots):
    rate, n = 8_000_000, 1000  # 1 ms per message
    clock = VirtualClock()
    a, b = inprocess_pair(Link(rate), slots=slots, recv_slots=16, clock=clock)
    with a, b:
        for _ in range(slots):
            a.send(bytes(n))
        assert clock.now_ns() == 0  # N in flight, none blocked
        with pytest.raises(TransferTimeout, match=f"all {slots} slots are in flight"):
            a.send(bytes(n), timeout=0)
        assert clock.now_ns() == 0
        a.send(bytes(n))  # blocks until the first message has left the link
        assert clock.now_ns() == 1 * MS
        a.send(bytes(n))
        assert clock.now_ns() == 2 * MS
        assert a.stats().producer_stall_s == pytest.approx(0.002, abs=1e-12)
        assert [m.seq for m in (b.recv() for _ in range(slots + 2))] == list(range(slots + 2))


def test_timeout_then_still_usable():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(8_000_000), slots=1, clock=clock)
    with a, b:
        with pytest.raises(TransferTimeout):
            b.recv(timeout=0.25)
        assert clock.now_ns() == 250 * MS
        a.send(bytes(1000))
        with pytest.raises(TransferTimeout):
            a.send(bytes(1000), timeout=0.0005)  # the slot frees at +1 ms
        assert clock.now_ns() == 250 * MS + MS // 2
        a.send(b"ok")
        assert b.recv().data == bytes(1000) and b.recv().data == b"ok"


def test_receiver_backpressure_reaches_the_sender():
    rate = 8_000_000
    clock = VirtualClock()
    a, b = inprocess_pair(Link(rate), slots=2, recv_slots=2, clock=clock)
    with a, b:
        for _ in range(4):  # 2 fill b's ring, 1 waits for a free slot there, 1 queued
            a.send(bytes(1000))
        assert clock.now_ns() == 2 * MS  # the 4th send waited for the 2nd to leave the link
        with pytest.raises(TransferTimeout):
            a.send(bytes(1000), timeout=0.5)
        assert clock.now_ns() == 502 * MS
        first = b.recv()  # frees a slot at b: message 2 can start only now
        assert first.record.tx_end_ns == 1 * MS
        rest = [b.recv().record for _ in range(3)]
        assert rest[1].seq == 2 and rest[1].tx_start_ns == 502 * MS
        assert rest[1].tx_end_ns == 503 * MS and rest[2].tx_end_ns == 504 * MS


def test_order_and_sequence_numbers_hold_with_jitter():
    rng = random.Random(7)
    sizes = [rng.randrange(0, 5000) for _ in range(200)]
    link = Link(100_000_000, latency_s=0.003, jitter_s=0.002, seed=42)

    def run():
        clock = VirtualClock()
        a, b = inprocess_pair(link, slots=2, recv_slots=4, clock=clock)
        got = []
        with a, b:
            for i, n in enumerate(sizes):
                a.send(payload(i, n))
                if i % 3 == 2:  # interleave consumption so the rings keep moving
                    while len(got) < i - 1:
                        got.append(b.recv())
            got += [b.recv() for _ in range(len(sizes) - len(got))]
            with pytest.raises(TransferTimeout):
                b.recv(timeout=1.0)  # no duplicates, nothing extra
        return got

    msgs = run()
    assert [m.seq for m in msgs] == list(range(len(sizes)))
    assert all(m.data == payload(i, n) for i, (m, n) in enumerate(zip(msgs, sizes)))
    recs = [m.record for m in msgs]
    prev = 0
    for r in recs:  # delivered in order, after latency, within latency + jitter unless held back
        assert r.delivered_ns >= max(prev, r.tx_end_ns + 3 * MS)
        assert r.delivered_ns <= max(prev, r.tx_end_ns + 5 * MS)
        prev = r.delivered_ns
    assert len({r.delivered_ns - r.tx_end_ns for r in recs}) > 50  # jitter really varies
    assert [m.record for m in run()] == recs  # deterministic: same inputs, same timeline


def test_outages_delay_but_lose_and_duplicate_nothing():
    rate, n = 8_000_000, 1000  # 1 ms per message
    link = Link(rate, outages=[(0.0015, 0.0035), (0.010, 0.020)])
    clock = VirtualClock(start=100.0)  # outages are relative to the endpoints' creation
    t0 = clock.now_ns()
    a, b = inprocess_pair(link, slots=4, recv_slots=16, clock=clock)
    with a, b:
        for i in range(3):
            a.send(payload(i, n))
        clock.sleep(0.012)  # committed inside the second outage
        a.send(payload(3, n))
        msgs = [b.recv() for _ in range(4)]
        with pytest.raises(TransferTimeout):
            b.recv(timeout=0.1)
        spans = [(m.record.tx_start_ns - t0, m.record.tx_end_ns - t0) for m in msgs]
        # #1 sends 500 B before the outage at 1.5 ms and the other 500 B after it ends at 3.5 ms
        assert spans == [(0, 1 * MS), (1 * MS, 4 * MS), (4 * MS, 5 * MS), (20 * MS, 21 * MS)]
        assert [m.data for m in msgs] == [payload(i, n) for i in range(4)]
        st = a.stats()
        assert st.link_busy_s == pytest.approx(0.004, abs=1e-12)  # outage time is not busy
        assert (st.messages_sent, b.stats().messages_received, st.dropped) == (4, 4, 0)


@pytest.mark.parametrize(("t_c", "t_l", "slots"), [(3, 2, 2), (2, 3, 2), (2, 2, 2), (2, 3, 1)])
def test_overlap_period(t_c, t_l, slots):
    """A producer computing t_c ms into each slot, a link taking t_l ms per message."""
    rate, count = 8_000_000, 12
    n = t_l * 1000  # bytes for t_l ms at 1 byte/us
    clock = VirtualClock()
    a, b = inprocess_pair(Link(rate), slots=slots, recv_slots=count, clock=clock)
    with a, b:
        for _ in range(count):
            with a.acquire(n) as slot:
                clock.sleep(t_c / 1e3)  # "compute" straight into the slot
                slot.buffer[:] = bytes(n)
                slot.commit()
        a.flush()
        ends = [r.tx_end_ns for r in sent(a)]
    periods = {e1 - e0 for e0, e1 in itertools.pairwise(ends)}
    expect = max(t_c, t_l) if slots >= 2 else t_c + t_l
    assert periods == {expect * MS}


def test_bidirectional_with_asymmetric_rates():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(1_000_000, 4_000_000, latency_s=0.075), clock=clock)
    with a, b:
        a.send(bytes(12_500))  # 100 ms up
        m = b.recv()
        assert m.record.delivered_ns == 175 * MS
        b.send(bytes(12_500))  # 25 ms down, sent at 175 ms
        r = a.recv().record
        assert (r.tx_start_ns, r.tx_end_ns, r.delivered_ns) == (175 * MS, 200 * MS, 275 * MS)


def test_tensors_and_slots_without_copies():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(80_000_000), clock=clock)
    with a, b:
        t = torch.arange(1000, dtype=torch.float32).view(10, 100)
        a.send(t)
        a.send(t.T)  # non-contiguous: sent as t.T.contiguous()
        del t
        gc.collect()
        m = b.recv()
        assert torch.equal(m.tensor(torch.float32, (10, 100)), torch.arange(1000.0).view(10, 100))
        m2 = b.recv(copy=False)
        with m2:
            got = m2.tensor(torch.float32, (100, 10))
            assert torch.equal(got, torch.arange(1000.0).view(10, 100).T)
        with a.acquire(16) as slot:
            slot.tensor(torch.int32)[:] = torch.tensor([1, 2, 3, 4], dtype=torch.int32)
            assert slot.commit(12) == 2
        assert b.recv().data == bytes([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0])
        with a.acquire(8) as slot:
            pass  # not committed: given back
        with pytest.raises(ValueError):
            slot.commit()
        a.send(torch.empty(0))
        assert b.recv().nbytes == 0
        with pytest.raises(ValueError, match="frame limit"):
            a.acquire(2 << 30)


def test_close_flushes_then_peer_sees_closed():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(8_000_000, latency_s=0.01), slots=4, clock=clock)
    for i in range(3):
        a.send(payload(i, 1000))
    a.close()  # flushes: the three messages leave the link first
    assert clock.now_ns() >= 3 * MS
    assert [m.data for m in b] == [payload(i, 1000) for i in range(3)]  # iteration ends cleanly
    with pytest.raises(TransferClosed):
        b.recv()
    with pytest.raises(TransferClosed):
        b.send(b"too late")
    with pytest.raises(TransferClosed):
        a.send(b"closed")
    b.close()
    a.close()  # idempotent


def test_peer_close_drops_what_is_queued_and_flush_says_so():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(8_000_000), slots=4, clock=clock)
    for _ in range(4):
        a.send(bytes(1000))  # 1 ms each
    clock.sleep(0.0005)
    b.close()  # while message 0 is on the link
    with pytest.raises(TransferClosed, match="3 queued message"):
        a.flush()
    assert (a.stats().messages_sent, a.stats().dropped) == (1, 3)
    with pytest.raises(TransferClosed):
        a.send(b"x")
    a.close()


def test_close_with_timeout_drops_the_rest():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(8_000_000), slots=8, recv_slots=8, clock=clock)
    with b:
        for _ in range(5):
            a.send(bytes(1000))
        a.close(timeout=0.0025)  # two sent, one cut off mid-message, two never started
        assert (a.stats().messages_sent, a.stats().dropped) == (2, 3)
        assert [m.seq for m in (b.recv(), b.recv())] == [0, 1]


def test_deadlock_is_reported_not_hung():
    clock = VirtualClock()
    a, b = inprocess_pair(Link(8_000_000), clock=clock)
    with a, b, pytest.raises(TransferError, match="deadlock"):
        b.recv()  # nothing was sent, no timeout: nothing can ever happen


def test_two_threads_on_one_virtual_clock_are_deterministic():
    sizes = [random.Random(3).randrange(1, 20_000) for _ in range(40)]

    def run():
        clock = VirtualClock(participants=2)
        a, b = inprocess_pair(Link(20_000_000, latency_s=0.002), slots=2, recv_slots=2, clock=clock)
        out = []

        def consumer():
            for _ in sizes:
                m = b.recv()
                clock.sleep(0.001)  # the consumer's own compute
                out.append(m.record)
            clock.leave()

        th = threading.Thread(target=consumer)
        th.start()
        for i, n in enumerate(sizes):
            clock.sleep(0.0005)
            a.send(payload(i, n))
        a.flush()
        clock.leave()  # joining a thread is not a clock wait: stop counting this one meanwhile
        th.join()
        clock.join()
        a.close()
        b.close()
        return out

    first = run()
    assert [r.seq for r in first] == list(range(len(sizes)))
    assert run() == first
