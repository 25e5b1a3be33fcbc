"""Engine accounting and shutdown under faults (issue 15, item 7), on real loopback TCP:

- a message that is lost is counted in ``stats().dropped``, also after the sender thread failed;
- a ``close(timeout)`` that runs out of time still sends CLOSE (the peer sees ``TransferClosed``);
- a consumer that only pauses longer than ``io_timeout`` is not taken for a dead peer;
- a sender's ``records()`` never lags what its peer has received;
- ``set_recv_limit`` refuses a message over the limit the run sets.

Real time, generous timeouts, no timing assertions beyond "did not fail".
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hierbench.errors import TransferClosed, TransferError
from hierbench.transfer import Link, connect, inprocess_pair, listen
from tests.transfer import reference_peer as peer

SECRET = b"engine faults test secret, long enough"
T = 20.0


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


def _pair(pool, client_link=None, frame_macs=False, **options):
    lst = listen(port=0, secret=SECRET, **options)
    fut = pool.submit(lst.accept, timeout=T)
    client = connect(
        "127.0.0.1", lst.port, SECRET, link=client_link, timeout=T, frame_macs=frame_macs, **options
    )
    server = fut.result(T)
    lst.close()
    return client, server


def test_messages_lost_after_the_sender_failed_are_counted(pool):
    """The peer dies with messages queued and one part-sent: every committed message is either
    sent or dropped (before: ``dropped`` read 0 once the sender thread had failed)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    ready = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(T)
        peer.server_handshake(conn, SECRET)
        peer.read_frame(conn)  # the first message arrives whole
        ready.wait(T)
        conn.close()  # then the peer dies: no CLOSE, the rest is lost

    fut = pool.submit(serve)
    # 1 Mbit/s: each 20 kB message takes 160 ms on the link, so the others are queued.
    ep = connect("127.0.0.1", port, SECRET, link="1mbit", slots=6, timeout=T)
    committed = 6
    for _ in range(committed):
        ep.send(bytes(20_000), timeout=T)
    ready.set()
    fut.result(T)
    deadline = time.monotonic() + T
    while True:  # wait until the engine noticed (the next send fails)
        try:
            time.sleep(0.05)
            ep.send(b"x", timeout=1)
            committed += 1
        except TransferError:
            break
        assert time.monotonic() < deadline
    ep.close(timeout=1)
    st = ep.stats()
    assert st.messages_sent >= 1
    assert st.dropped >= 1
    assert st.messages_sent + st.dropped == committed, (st.messages_sent, st.dropped, committed)
    srv.close()


@pytest.mark.parametrize("macs", [False, True], ids=["crc", "mac"])
def test_close_that_runs_out_of_time_still_sends_close(pool, macs):
    """``close(timeout)`` expires mid-message on a slow emulated link: the part-sent message and
    the queued one are dropped and counted, and the peer gets a clean ``TransferClosed`` (before:
    no CLOSE, so the peer saw "the peer died mid-frame"). With frame MACs the cancelled frame
    (filler, flagged trailer) carries a valid tag and CLOSE a valid header MAC."""
    client, server = _pair(pool, client_link="1mbit", frame_macs=macs)  # 100 kB: 0.8 s
    with server:
        assert ("frames authenticated" in repr(server)) == macs
        client.send(b"first", timeout=T)
        assert server.recv(timeout=T).data == b"first"
        client.send(bytes(100_000), timeout=T)
        client.send(bytes(100_000), timeout=T)
        time.sleep(0.2)  # the first big one is on the link, part-sent
        t0 = time.monotonic()
        client.close(timeout=0.1)
        assert time.monotonic() - t0 < 10
        with pytest.raises(TransferClosed, match="peer closed"):
            server.recv(timeout=T)
        st = client.stats()
        assert (st.messages_sent, st.dropped) == (1, 2)


@pytest.mark.parametrize("macs", [False, True], ids=["crc", "mac"])
def test_close_that_runs_out_of_time_before_a_byte_left(pool, macs):
    """The link is down (an outage) when ``close(timeout)`` expires: the frame was begun but
    nothing of it is on the wire. CLOSE still follows and, with frame MACs, takes the frame
    counter the unsent frame had claimed (before the fix the peer saw "header MAC mismatch")."""
    down = Link(rate_bps_up=1e9, outages=((0.0, 60.0),))
    client, server = _pair(pool, client_link=down, frame_macs=macs)
    with server:
        client.send(b"never sent", timeout=T)
        time.sleep(0.2)  # the sender thread has begun the frame and waits for the link
        client.close(timeout=0.1)
        with pytest.raises(TransferClosed, match="peer closed"):
            server.recv(timeout=T)
        st = client.stats()
        assert (st.messages_sent, st.dropped) == (0, 1)


@pytest.mark.parametrize("macs", [False, True], ids=["crc", "mac"])
def test_a_consumer_that_pauses_longer_than_io_timeout_is_not_a_dead_peer(pool, macs):
    """The receiver stops taking messages for 6x ``io_timeout``: its ring and the socket buffers
    fill and the sender's writes stall, but the receiver's keepalives show it is alive, so
    nothing fails and every message arrives (before: both sides reported a dead peer). With
    frame MACs the keepalives are authenticated like any frame."""
    opts = dict(io_timeout=0.5, recv_slots=1, sndbuf=32 << 10, rcvbuf=32 << 10)
    client, server = _pair(pool, frame_macs=macs, **opts)
    n, size = 8, 1 << 20
    with client, server:
        sent = pool.submit(lambda: [client.send(bytes([i]) * size, timeout=T) for i in range(n)])
        time.sleep(3.0)  # the consumer pauses
        got = [server.recv(timeout=T) for _ in range(n)]
        sent.result(T)
        client.flush(timeout=T)
        assert [m.data[:1] for m in got] == [bytes([i]) for i in range(n)]
        assert all(m.nbytes == size for m in got)


@pytest.mark.parametrize("transport", ["tcp", "inprocess"])
def test_sender_records_never_lag_the_receiver(pool, transport):
    """As soon as the receiver holds message k, the sender's records() and stats() include k
    (before: the sender recorded a message after its last bytes had gone, and the receiver
    could be faster: 22-43 of 2,000 in process here, 376 of 2,000 over TCP in the issue)."""
    if transport == "tcp":
        client, server = _pair(pool)
    else:
        client, server = inprocess_pair(None, slots=4)
    n = 2000
    lagged, seen = [], set()
    with client, server:

        def produce():
            for _ in range(n):
                client.send(bytes(64 << 10), timeout=T)

        fut = pool.submit(produce)
        for _ in range(n):
            msg = server.recv(timeout=T)
            counted = client.stats().messages_sent
            seen.update(r.seq for r in client.records(clear=True) if r.direction == "sent")
            if msg.seq not in seen or counted <= msg.seq:
                lagged.append(msg.seq)
        fut.result(T)
    assert lagged == []


def test_recv_limit_refuses_a_larger_message(pool):
    client, server = _pair(pool)
    with client, server:
        server.set_recv_limit(1000)
        client.send(bytes(1000), timeout=T)
        assert server.recv(timeout=T).nbytes == 1000
        client.send(bytes(1001), timeout=T)
        with pytest.raises(TransferError, match=r"1001 bytes, over this endpoint's receive limit"):
            server.recv(timeout=T)
    with pytest.raises(ValueError):
        server.set_recv_limit(-1)
