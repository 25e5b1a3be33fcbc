"""The TCP transport on loopback: handshake, wire format, and every failure the issue lists.

Hostile peers are written with tests/transfer/reference_peer.py (an independent Python
implementation of the protocol), so these tests also pin the byte layout documented in
docs/transfer.md. Each failure must give a clear error and leave the other side usable (the
listener keeps accepting). Real time, but no timing assertions: only generous timeouts.
Hostile connections against the listener and authenticated frames: test_hostile.py.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hierbench.errors import TransferClosed, TransferError, TransferTimeout
from hierbench.transfer import Link, connect, listen
from tests.transfer import reference_peer as peer

SECRET = b"correct horse battery staple"
T = 20.0  # generous timeout for every blocking call


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


@pytest.fixture
def rejections():
    return []


@pytest.fixture
def listener(rejections):
    with listen(port=0, secret=SECRET, handshake_timeout=T, on_reject=rejections.append) as lst:
        yield lst


def wait_for_rejections(listener, rejections, n: int) -> list[str]:
    """The listener's first ``n`` reports of dropped connections (waits up to T seconds)."""
    deadline = time.monotonic() + T
    while len(rejections) < n and time.monotonic() < deadline:
        listener.report_rejections()
        time.sleep(0.02)
    assert len(rejections) >= n, rejections
    return rejections[:n]


def check_listener_still_serves(listener, pool):
    fut = pool.submit(listener.accept, timeout=T)
    with connect("127.0.0.1", listener.port, SECRET, timeout=T) as c, fut.result(T) as s:
        c.send(b"still here")
        assert s.recv(timeout=T).data == b"still here"


def test_roundtrip_both_directions(listener, pool):
    fut = pool.submit(listener.accept, timeout=T)
    client = connect("127.0.0.1", listener.port, SECRET, link=Link(200e6), timeout=T)
    server = fut.result(T)
    assert listener.host == "127.0.0.1"
    with client, server:
        for i in range(20):
            client.send(bytes([i]) * (i * 1000))
        for i in range(20):
            m = server.recv(timeout=T)
            assert (m.seq, m.data) == (i, bytes([i]) * (i * 1000))
            server.send(m.data[::-1])
        for i in range(20):
            assert client.recv(timeout=T).data == (bytes([i]) * (i * 1000))[::-1]
        recs = server.records()
        assert [r.seq for r in recs if r.direction == "received"] == list(range(20))
        client.close()
        with pytest.raises(TransferClosed):
            server.recv(timeout=T)
        with pytest.raises(TransferClosed):
            server.send(b"x", timeout=T)


def test_python_client_speaks_the_documented_protocol(listener, pool):
    fut = pool.submit(listener.accept, timeout=T)
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=T)
    assert peer.client_handshake(sock, SECRET, max_frame=4096).peer_max == 1 << 30
    with fut.result(T) as ep:
        assert ep.peer_max_frame == 4096
        for i in range(3):
            sock.sendall(peer.data_frame(i, f"frame {i}".encode(), delay_ns=0, enqueued_ns=5))
        for i in range(3):
            m = ep.recv(timeout=T)
            assert (m.seq, m.data, m.record.enqueued_ns) == (i, f"frame {i}".encode(), 5)
        ep.send(b"reply")
        assert peer.read_frame(sock) == (peer.DATA, 0, b"reply")
        sock.sendall(peer.close_frame(3))
        with pytest.raises(TransferClosed):
            ep.recv(timeout=T)
        # the engine answers a CLOSE with its own CLOSE, then shuts its side down
        assert peer.read_frame(sock) == (peer.CLOSE, 1, b"")
        assert sock.recv(1) == b""
        sock.close()


def test_python_server_accepts_the_engine_client(pool):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(T)
        client_max = peer.server_handshake(conn, SECRET, max_frame=1 << 20).peer_max
        kind, seq, data = peer.read_frame(conn)
        conn.sendall(peer.data_frame(0, data.upper()))
        conn.close()  # dies without a CLOSE frame
        return client_max, kind, seq, data

    fut = pool.submit(serve)
    with connect("127.0.0.1", port, SECRET, timeout=T) as ep:
        assert ep.peer_max_frame == 1 << 20
        ep.send(b"hello")
        assert ep.recv(timeout=T).data == b"HELLO"
        assert fut.result(T) == (1 << 30, peer.DATA, 0, b"hello")
        with pytest.raises(TransferError, match="without a CLOSE frame"):
            ep.recv(timeout=T)
        with pytest.raises(TransferError):  # the engine thread's error, rethrown on send too
            ep.send(b"anyone?", timeout=T)
    srv.close()


def test_wrong_secret_is_refused_both_ways(listener, rejections, pool):
    with pytest.raises(TransferError, match=r"refused the connection: authentication failed.*"):
        connect("127.0.0.1", listener.port, b"wrong secret, 16+ bytes", timeout=T)
    (why,) = wait_for_rejections(listener, rejections, 1)
    assert re.search(r"handshake with 127\.0\.0\.1:\d+ failed.*wrong secret.*dropped", why)
    # a raw client that answers the server's hello with a bad proof
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=T)
    sock.sendall(peer.hello(peer.CLIENT_HELLO, 1 << 20))
    peer.recv_exact(sock, 56)
    sock.sendall(peer.prefix(peer.CLIENT_AUTH) + bytes(32))
    reply = peer.recv_exact(sock, 16)
    assert reply[6:8] == struct.pack("<H", peer.REJECT) and reply[8:10] == struct.pack("<H", 2)
    assert sock.recv(1) == b""  # and nothing else: no proof of the server's
    assert "failed authentication" in wait_for_rejections(listener, rejections, 2)[1]
    sock.close()
    # a server that does not hold the secret: the engine client refuses it
    srv = socket.create_server(("127.0.0.1", 0))

    def impostor():
        conn, _ = srv.accept()
        conn.settimeout(T)
        with pytest.raises(PermissionError):
            peer.server_handshake(conn, b"not the secret, but long enough")
        conn.close()

    fut = pool.submit(impostor)
    with pytest.raises(TransferError, match="refused the connection: authentication failed"):
        connect("127.0.0.1", srv.getsockname()[1], SECRET, timeout=T)
    fut.result(T)
    srv.close()
    assert listener.rejected == 2
    check_listener_still_serves(listener, pool)


def test_protocol_version_mismatch(listener, rejections, pool):
    for version in (1, 3):  # the v1 handshake (server proved first) and a future one
        sock = socket.create_connection(("127.0.0.1", listener.port), timeout=T)
        with pytest.raises(PermissionError, match="reason 1"):
            peer.client_handshake(sock, SECRET, version=version)
        sock.close()
    got = wait_for_rejections(listener, rejections, 2)
    assert "version mismatch: the client speaks v1, this build v2" in got[0]
    assert "the client speaks v3" in got[1]
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=T)
    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert "not a hierbench transfer client" in wait_for_rejections(listener, rejections, 3)[2]
    assert sock.recv(1) == b""  # dropped at once, not at the handshake timeout
    sock.close()
    check_listener_still_serves(listener, pool)


def _raw_session(listener, pool):
    fut = pool.submit(listener.accept, timeout=T)
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=T)
    peer.client_handshake(sock, SECRET)
    return sock, fut.result(T)


def test_corrupted_payload(listener, pool):
    sock, ep = _raw_session(listener, pool)
    with ep:
        sock.sendall(peer.data_frame(0, b"good"))
        frame = bytearray(peer.data_frame(1, b"0123456789"))
        frame[56 + 3] ^= 0x01  # one bit of the payload flips in transit
        sock.sendall(frame)
        assert ep.recv(timeout=T).data == b"good"  # what arrived intact is still delivered
        with pytest.raises(TransferError, match=r"seq 1.*payload CRC32C mismatch.*corrupted"):
            ep.recv(timeout=T)
        with pytest.raises(TransferError, match="CRC32C"):  # the same cause, on send too
            ep.send(b"x", timeout=T)
    sock.close()
    check_listener_still_serves(listener, pool)


def test_corrupted_header(listener, pool):
    sock, ep = _raw_session(listener, pool)
    with ep:
        frame = bytearray(peer.data_frame(0, b"abc"))
        frame[16] ^= 0x04  # the length field
        sock.sendall(frame)
        with pytest.raises(TransferError, match="header CRC32C mismatch"):
            ep.recv(timeout=T)
    sock.close()
    check_listener_still_serves(listener, pool)


def test_oversize_frame(pool):
    with listen(port=0, secret=SECRET, max_frame_bytes=1000) as lst:
        sock, ep = _raw_session(lst, pool)
        with ep:
            sock.sendall(peer.header(0, 10_000))
            with pytest.raises(TransferError, match=r"10000 payload bytes.*limit of 1000"):
                ep.recv(timeout=T)
        sock.close()
        # an engine client learns the limit in the handshake and refuses before sending
        fut = pool.submit(lst.accept, timeout=T)
        with connect("127.0.0.1", lst.port, SECRET, timeout=T) as c, fut.result(T) as s:
            with pytest.raises(ValueError, match="exceeds the peer's frame limit of 1000"):
                c.send(bytes(1001))
            c.send(bytes(1000))
            assert s.recv(timeout=T).nbytes == 1000


def test_peer_dies_mid_frame(listener, pool):
    sock, ep = _raw_session(listener, pool)
    with ep:
        sock.sendall(peer.header(0, 10_000) + bytes(3000))
        sock.close()
        with pytest.raises(TransferError, match=r"got 3000 of 10000 payload bytes.*mid-frame"):
            ep.recv(timeout=T)
    sock, ep = _raw_session(listener, pool)
    with ep:
        sock.sendall(peer.header(0, 10)[:20])
        sock.close()
        with pytest.raises(TransferError, match=r"header: 20 of 56 bytes.*mid-frame"):
            ep.recv(timeout=T)
    check_listener_still_serves(listener, pool)


def test_timeouts_and_misuse(listener, pool):
    with pytest.raises(TransferTimeout):
        listener.accept(timeout=0.05)
    fut = pool.submit(listener.accept, timeout=T)
    with connect("127.0.0.1", listener.port, SECRET, timeout=T) as c, fut.result(T) as s:
        with pytest.raises(TransferTimeout):
            s.recv(timeout=0.05)
        c.send(b"after a timeout")
        assert s.recv(timeout=T).data == b"after a timeout"
    with pytest.raises(ValueError, match="secret"):
        connect("127.0.0.1", listener.port, b"", timeout=T)
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(TransferError, match="cannot connect"):
        connect("127.0.0.1", port, SECRET, timeout=T)
    with pytest.warns(UserWarning, match="not loopback"), listen("0.0.0.0", 0, SECRET):
        pass


def test_listener_close_wakes_accept():
    lst = listen(port=0, secret=SECRET)
    box = {}

    def run():
        try:
            lst.accept(timeout=T)
        except TransferError as e:
            box["err"] = e

    th = threading.Thread(target=run)
    th.start()
    lst.close()
    th.join(T)
    assert not th.is_alive() and isinstance(box["err"], TransferError)


def test_socket_buffer_options_and_shaped_tcp(pool):
    link = Link(80e6, latency_s=0.002)  # 10 MB/s: 100 kB take 10 ms
    with listen(port=0, secret=SECRET, link=link, sndbuf=32768, rcvbuf=32768) as lst:
        fut = pool.submit(lst.accept, timeout=T)
        opts = {"link": link, "sndbuf": 32768, "rcvbuf": 32768}
        with connect("127.0.0.1", lst.port, SECRET, **opts) as c, fut.result(T) as s:
            for _ in range(5):
                c.send(bytes(100_000))
            msgs = [s.recv(timeout=T) for _ in range(5)]
            for m in msgs:
                r = m.record
                assert r.tx_end_ns - r.tx_start_ns >= 10_000_000  # paced, never faster
                assert r.delivered_ns >= r.arrived_ns + 2_000_000  # latency added
