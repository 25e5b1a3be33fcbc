"""Hostile networks against the TCP transport, on real loopback sockets (issue 15, items 1, 2, 4).

* A listener survives every bad connection, serves the real peer next, and reports each drop.
* Handshakes run at once: silent or slow connections cannot lock a legitimate peer out.
* The client proves first: an unauthenticated peer gets nothing computed from the secret.
* Weak secrets are refused; the key is derived with scrypt (held to hashlib.scrypt).
* With frame MACs (always off loopback; here forced), a man in the middle who alters, replays,
  reorders or injects frames (and fixes up the CRCs) is caught; without them he is not.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hierbench import _ext
from hierbench.errors import TransferClosed, TransferError
from hierbench.transfer import MIN_SECRET_BYTES, connect, listen
from tests.transfer import reference_peer as peer

SECRET = b"correct horse battery staple"
T = 20.0
C = _ext.load().transfer


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=4) as ex:
        yield ex


def wait_until(predicate, what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def serve_one(lst, pool, *, frame_macs: bool = False):
    """A real client connected through `lst` and the endpoint accepted for it."""
    fut = pool.submit(lst.accept, timeout=T)
    client = connect("127.0.0.1", lst.port, SECRET, timeout=T, frame_macs=frame_macs)
    return client, fut.result(T)


def roundtrip(client, server) -> None:
    client.send(b"ping")
    assert server.recv(timeout=T).data == b"ping"
    server.send(b"pong")
    assert client.recv(timeout=T).data == b"pong"


# ---- item 1: every bad connection is logged and dropped; the listener keeps serving ----------


def attacks(port: int) -> list[socket.socket]:
    """The six attacks of the issue, each on its own connection; returns the sockets left open."""
    addr = ("127.0.0.1", port)
    socket.create_connection(addr, timeout=T).close()  # connect and close
    s = socket.create_connection(addr, timeout=T)
    s.sendall(bytes(range(256)) * 4)  # garbage
    s.close()
    s = socket.create_connection(addr, timeout=T)
    s.sendall(peer.header(0, 1 << 62))  # a frame header announcing 2^62 bytes, no handshake
    s.close()
    s = socket.create_connection(addr, timeout=T)  # a proper hello, then a wrong HMAC
    s.sendall(peer.hello(peer.CLIENT_HELLO, 1 << 20))
    peer.recv_exact(s, 56)
    s.sendall(peer.prefix(peer.CLIENT_AUTH) + bytes(32))
    s.close()
    with pytest.raises(TransferError, match="authentication failed"):  # wrong secret
        connect("127.0.0.1", port, b"an edge with the wrong secret", timeout=T)
    return [socket.create_connection(addr, timeout=T)]  # silent


def test_every_bad_connection_is_dropped_and_the_real_peer_served(pool):
    got: list[str] = []
    with listen(port=0, secret=SECRET, handshake_timeout=1.0, on_reject=got.append) as lst:
        silent = attacks(lst.port)
        client, server = serve_one(lst, pool)  # while the silent one still waits
        with client, server:
            roundtrip(client, server)
        wait_until(lambda: len(lst.report_rejections()) >= 0 and len(got) >= 6, f"drops: {got}")
        for s in silent:
            s.close()
        causes = {
            "closed the connection before the handshake": 1,  # connect and close
            "bad handshake magic": 2,  # garbage; a frame header of 2^62 bytes
            "failed authentication (wrong secret): refused": 2,  # wrong HMAC; wrong secret
            "it sent nothing for 1 s": 1,  # silent
        }
        for cause, n in causes.items():
            assert sum(cause in why for why in got) == n, (cause, got)
        assert all(w.startswith("handshake with 127.0.0.1:") for w in got), got
        assert all(w.endswith(": dropped") for w in got), got
        assert lst.rejected == 6
        # ... and it still serves: the same attacks again, then a second real peer
        for s in attacks(lst.port):
            s.close()
        client, server = serve_one(lst, pool)
        with client, server:
            roundtrip(client, server)


# ---- item 2: silent connections do not lock the real peer out ---------------------------------


def test_silent_connections_do_not_lock_the_peer_out(pool):
    """100 silent connections (more than the backlog of old and the handshake limit), each
    allowed the full 10 s handshake timeout: a real peer still connects at once, repeatedly."""
    got: list[str] = []
    with listen(port=0, secret=SECRET, max_pending=64, on_reject=got.append) as lst:
        silent = [socket.create_connection(("127.0.0.1", lst.port), timeout=T) for _ in range(100)]
        try:
            for _ in range(3):  # an edge restarting within its reconnect budget: never blocked
                t0 = time.monotonic()
                fut = pool.submit(lst.accept, timeout=T)
                client = connect("127.0.0.1", lst.port, SECRET, timeout=5.0)
                with client, fut.result(T) as server:
                    roundtrip(client, server)
                assert time.monotonic() - t0 < 5.0
            lst.report_rejections()
            # the listener holds at most 64 handshakes: the oldest silent ones were evicted
            assert sum("evicted: 64 handshakes were already in progress" in g for g in got) >= 36
        finally:
            for s in silent:
                s.close()


def test_a_flood_from_one_address_evicts_only_its_own():
    """A silent connection from 127.0.0.1, then 150 from 127.0.0.2 (loopback too): the 127.0.0.2
    ones are evicted, never the older one from the other address."""
    got: list[str] = []
    with listen(port=0, secret=SECRET, max_pending=16, on_reject=got.append) as lst:
        first = socket.create_connection(("127.0.0.1", lst.port), timeout=T)
        flood = [
            socket.create_connection(
                ("127.0.0.1", lst.port), timeout=T, source_address=("127.0.0.2", 0)
            )
            for _ in range(150)
        ]
        try:
            wait_until(lambda: lst.report_rejections() is not None and len(got) >= 135, str(got))
            assert all("handshake with 127.0.0.2:" in g for g in got), got
            assert all("(15 from 127.0.0.2)" in g for g in got), got
        finally:
            first.close()
            for s in flood:
                s.close()


def test_a_slow_handshake_does_not_hold_up_a_fast_one(pool):
    """A client that sends its hello one byte a second, alongside a real client."""
    with listen(port=0, secret=SECRET, handshake_timeout=T) as lst:
        slow = socket.create_connection(("127.0.0.1", lst.port), timeout=T)
        stop = threading.Event()

        def dribble():
            for b in peer.hello(peer.CLIENT_HELLO, 1 << 20):
                if stop.wait(1.0):
                    return
                slow.sendall(bytes([b]))

        pool.submit(dribble)
        try:
            client, server = serve_one(lst, pool)
            with client, server:
                roundtrip(client, server)
        finally:
            stop.set()
            slow.close()


# ---- item 4: the client proves first; secret strength; frame MACs ----------------------------


def test_an_unauthenticated_client_gets_nothing_from_the_secret():
    """Before the client has proven anything the server sends one SERVER_HELLO: its prefix,
    its frame limit, a fresh random nonce and its flags, the same bytes whatever the secret
    (v1 sent an HMAC under the secret here: an offline oracle). A wrong proof gets REJECT and EOF.
    """
    hellos = []
    for secret in (SECRET, b"another secret of 16+ bytes"):
        with listen(port=0, secret=secret) as lst:
            sock = socket.create_connection(("127.0.0.1", lst.port), timeout=T)
            sock.sendall(peer.hello(peer.CLIENT_HELLO, 1 << 20))
            sh = peer.recv_exact(sock, 56)
            sock.sendall(peer.prefix(peer.CLIENT_AUTH) + hashlib.sha256(b"a guess").digest())
            rest = b""
            while chunk := sock.recv(4096):
                rest += chunk
            sock.close()
            assert rest == peer.prefix(peer.REJECT) + struct.pack("<H", 2) + bytes(6)
            hellos.append(sh)
    for sh in hellos:
        assert sh[:8] == peer.prefix(peer.SERVER_HELLO)
        assert struct.unpack("<Q", sh[8:16])[0] == 1 << 30
    assert hellos[0][:16] + hellos[0][48:] == hellos[1][:16] + hellos[1][48:]
    assert hellos[0][16:48] != hellos[1][16:48]  # the nonces: fresh randomness


def test_the_client_refuses_a_server_that_cannot_prove_the_secret(pool):
    """An impostor server that answers with a made-up SERVER_AUTH."""
    srv = socket.create_server(("127.0.0.1", 0))

    def impostor():
        conn, _ = srv.accept()
        conn.settimeout(T)
        ch = peer.recv_exact(conn, 56)
        conn.sendall(peer.hello(peer.SERVER_HELLO, 1 << 20))
        peer.recv_exact(conn, 40)  # the client's proof
        conn.sendall(peer.prefix(peer.SERVER_AUTH) + bytes(32))
        reply = peer.recv_exact(conn, 16)
        conn.close()
        return ch, reply

    fut = pool.submit(impostor)
    with pytest.raises(TransferError, match="server's proof does not match our secret"):
        connect("127.0.0.1", srv.getsockname()[1], SECRET, timeout=T)
    _, reply = fut.result(T)
    assert reply == peer.prefix(peer.REJECT) + struct.pack("<H", 2) + bytes(6)
    srv.close()


@pytest.mark.parametrize("secret", [b"", b"x", b"fifteen bytes!!", "short-ish"])
def test_weak_secrets_are_refused_with_a_clear_error(secret):
    assert MIN_SECRET_BYTES == 16 == C.MIN_SECRET_BYTES
    msg = r"shared secret is \d+ bytes; at least 16 are required"
    with pytest.raises(ValueError, match=msg):
        listen(port=0, secret=secret)
    with pytest.raises(ValueError, match=msg):
        connect("127.0.0.1", 9, secret, timeout=1.0)
    # the engine itself refuses too, not only the Python facade
    raw = secret.encode() if isinstance(secret, str) else secret
    with pytest.raises(ValueError, match=msg):
        C.Listener("127.0.0.1", 0, raw, C.EndpointOptions())
    listen(port=0, secret=b"s" * 16).close()  # 16 bytes is enough


def test_the_handshake_key_is_scrypt_of_the_secret():
    for secret in (b"0123456789abcdef", SECRET, bytes(range(200))):
        assert C.derive_key(secret) == peer.derive_key(secret)
    assert C.PROTOCOL_VERSION == peer.VERSION == 2


def test_frame_macs_match_the_reference_peer(pool):
    """A Python client asks for frame MACs: the engine seals and checks every frame exactly as
    tests/transfer/reference_peer.py (independent, on hashlib/hmac) does, both ways."""
    with listen(port=0, secret=SECRET) as lst:
        fut = pool.submit(lst.accept, timeout=T)
        sock = socket.create_connection(("127.0.0.1", lst.port), timeout=T)
        session = peer.client_handshake(sock, SECRET, macs=True)
        assert session.macs
        with fut.result(T) as ep:
            assert "frames authenticated" in repr(ep)
            for i in range(3):
                sock.sendall(session.frame(peer.DATA, i, f"frame {i}".encode() * 100))
            for i in range(3):
                assert ep.recv(timeout=T).data == f"frame {i}".encode() * 100
            ep.send(b"reply" * 1000)
            ep.send(b"")
            assert peer.read_frame(sock, session) == (peer.DATA, 0, b"reply" * 1000)
            assert peer.read_frame(sock, session) == (peer.DATA, 1, b"")
            sock.sendall(session.frame(peer.CLOSE, 3))
            with pytest.raises(TransferError):  # TransferClosed
                ep.recv(timeout=T)
            assert peer.read_frame(sock, session) == (peer.CLOSE, 2, b"")
        sock.close()


class Tamperer:
    """A man in the middle on loopback: relays client -> server frame by frame, passing each
    (kind, frame bytes) through `edit`, which returns what to forward. Server -> client is
    relayed untouched. The handshake passes unchanged (he does not know the secret)."""

    def __init__(self, target_port: int, edit, macs: bool):
        self.edit, self.macs = edit, macs
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.target = target_port
        self.threads = [threading.Thread(target=self.run, daemon=True)]
        self.threads[0].start()

    def run(self):
        a, _ = self.srv.accept()
        b = socket.create_connection(("127.0.0.1", self.target), timeout=T)
        b.sendall(peer.recv_exact(a, 56))
        a.sendall(peer.recv_exact(b, 56))
        b.sendall(peer.recv_exact(a, 40))
        a.sendall(peer.recv_exact(b, 40))

        def back():
            with contextlib.suppress(OSError):
                while chunk := b.recv(65536):
                    a.sendall(chunk)

        threading.Thread(target=back, daemon=True).start()
        extra = 32 if self.macs else 0
        try:
            while True:
                h = peer.recv_exact(a, 56)
                kind, _, _, length = struct.unpack("<HHQQ", h[4:24])
                body = b"" if kind != peer.DATA else peer.recv_exact(a, length + 24 + extra)
                b.sendall(self.edit(kind, h + body))
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)


def flip_and_fix_crc(frame: bytes) -> bytes:
    """Flip one payload bit and recompute the payload CRC32C: invisible to the CRCs."""
    f = bytearray(frame)
    (length,) = struct.unpack("<Q", f[16:24])
    f[56] ^= 0x01
    payload, t = bytes(f[56 : 56 + length]), f[56 + length : 56 + length + 24]
    t[16:20] = struct.pack("<I", peer.crc32c(bytes(t[:16]), peer.crc32c(payload)))
    f[56 + length : 56 + length + 24] = t
    return bytes(f)


def tampered_run(lst, pool, edit, macs: bool, *, pause: float = 0.0, **options) -> list:
    """Sends three messages through a Tamperer (`pause` seconds apart); returns what the server
    received (or the error it raised)."""
    mitm = Tamperer(lst.port, edit, macs)
    fut = pool.submit(lst.accept, timeout=T)
    client = connect("127.0.0.1", mitm.port, SECRET, timeout=T, frame_macs=macs, **options)
    out: list = []
    with client, fut.result(T) as server:
        assert ("frames authenticated" in repr(server)) == macs
        for i in range(3):
            if i:
                time.sleep(pause)
            try:
                client.send(f"message {i}".encode())
            except TransferError:  # the server found an attack and cut the connection
                break
        try:
            for _ in range(3):
                out.append(server.recv(timeout=T).data)
        except TransferError as exc:
            out.append(exc)
    mitm.srv.close()
    return out


def alter_second_frame():
    seen = []

    def edit(kind, frame):
        seen.append(kind)
        return flip_and_fix_crc(frame) if len(seen) == 2 else frame

    return edit


def test_frame_macs_catch_what_the_crcs_cannot(pool):
    with listen(port=0, secret=SECRET) as lst:
        # the threat: without MACs (loopback's default) an altered frame passes as genuine
        out = tampered_run(lst, pool, alter_second_frame(), False)
        assert out == [b"message 0", b"lessage 1", b"message 2"]
        out = tampered_run(lst, pool, alter_second_frame(), True)
        assert out[0] == b"message 0" and isinstance(out[1], TransferError), out
        assert "seq 1" in str(out[1]) and "MAC mismatch: the frame was forged" in str(out[1])


@pytest.mark.parametrize("attack", ["replay", "drop", "reorder", "strip-mac"])
def test_frame_macs_catch_replay_drop_reorder_and_injection(pool, attack):
    held: list[bytes] = []

    def edit(kind, frame):
        if kind != peer.DATA:
            return frame
        held.append(frame)
        n = len(held)
        if attack == "replay":  # frame 0 again, as frame 1 (its seq field would pass)
            return frame if n != 2 else held[0]
        if attack == "drop":
            return b"" if n == 2 else frame
        if attack == "reorder":
            return b"" if n == 2 else (frame + held[1] if n == 3 else frame)
        # strip-mac: frame 2 rewritten as an unauthenticated v2 frame (flags 0, no tag)
        if n == 2:
            (length,) = struct.unpack("<Q", frame[16:24])
            payload = b"Z" * length
            return peer.header(1, length) + payload + peer.trailer(payload)
        return frame

    with listen(port=0, secret=SECRET) as lst:
        out = tampered_run(lst, pool, edit, True)
    assert out[0] == b"message 0" and isinstance(out[1], TransferError), out
    expect = "a frame without a MAC" if attack == "strip-mac" else "header MAC mismatch"
    assert expect in str(out[1]), out[1]


def test_frames_are_authenticated_off_loopback(pool):
    """Bound to this machine's non-loopback address, both sides turn frame MACs on by
    themselves (nobody asked)."""
    addrs = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):  # SIOCGIFADDR: the interface's IPv4 address
                req = struct.pack("256s", name[:15].encode())
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24])
                if not addr.startswith("127."):
                    addrs.add(addr)
    if not addrs:
        pytest.skip("this machine has no non-loopback IPv4 address")
    host = sorted(addrs)[0]
    with pytest.warns(UserWarning, match="not loopback"):
        lst = listen(host, 0, SECRET)
    with lst:
        fut = pool.submit(lst.accept, timeout=T)
        with connect(host, lst.port, SECRET, timeout=T) as client, fut.result(T) as server:
            assert "frames authenticated" in repr(client)
            assert "frames authenticated" in repr(server)
            roundtrip(client, server)
            client.send(bytes(3_000_000))
            assert server.recv(timeout=T).nbytes == 3_000_000


# ---- KEEPALIVE frames and the trailer's "cancelled" flag are authenticated too ----------------


def forged_keepalive(macs: bool) -> bytes:
    """What a man in the middle can make without the key: a KEEPALIVE header with the MAC flag
    and a made-up header MAC (or, without MACs, a perfectly valid one)."""
    if not macs:
        return peer.keepalive_frame()
    h = bytearray(peer.keepalive_frame())
    h[6:8] = struct.pack("<H", 1)
    h[40:52] = hashlib.sha256(b"a guess").digest()[:12]
    h[52:56] = struct.pack("<I", peer.crc32c(bytes(h[:52])))
    return bytes(h)


def set_cancelled(frame: bytes) -> bytes:
    """Set the trailer's cancelled flag of a DATA frame (the CRCs do not cover it; the tag does)."""
    f = bytearray(frame)
    (length,) = struct.unpack("<Q", f[16:24])
    f[56 + length + 20 : 56 + length + 24] = struct.pack("<I", peer.TRAILER_CANCELLED)
    return bytes(f)


def keepalive_and_flag_attack(attack: str, macs: bool):
    state = {"data": 0, "done": False}

    def edit(kind, frame):
        if kind == peer.DATA:
            state["data"] += 1
            if attack == "cancel-second" and state["data"] == 2:
                return set_cancelled(frame)
            if attack == "cancel-last" and state["data"] == 3:
                return set_cancelled(frame)
            return frame
        if kind != peer.KEEPALIVE or state["data"] == 0 or state["done"]:
            return frame
        state["done"] = True  # the first keepalive after message 0
        if attack == "forge-keepalive":
            return frame + forged_keepalive(macs)
        if attack == "replay-keepalive":
            return frame + frame
        if attack == "keepalive-as-close":  # the genuine KEEPALIVE, rewritten into CLOSE(1)
            f = bytearray(frame)
            f[4:6] = struct.pack("<H", peer.CLOSE)
            f[8:16] = struct.pack("<Q", 1)
            f[52:56] = struct.pack("<I", peer.crc32c(bytes(f[:52])))
            return bytes(f)
        return frame

    return edit


@pytest.mark.parametrize(
    "attack",
    ["forge-keepalive", "replay-keepalive", "keepalive-as-close", "cancel-second", "cancel-last"],
)
def test_frame_macs_cover_keepalives_and_the_cancelled_flag(pool, attack):
    """A man in the middle injects, replays or rewrites a KEEPALIVE (a fake sign of life keeps a
    stalled writer waiting; one turned into CLOSE ends the channel early), or sets the cancelled
    flag of a DATA trailer (the receiver would discard a genuine message). Without MACs the
    injected KEEPALIVEs pass and the early CLOSE is believed; the flipped flag is at least
    refused as a protocol violation (only CLOSE may follow a cancelled frame, and CLOSE's count
    must match). With MACs every one fails as forged or altered."""
    opts = dict(io_timeout=0.8, pause=0.6)  # a keepalive every 0.2 s, two or more per pause
    with listen(port=0, secret=SECRET, io_timeout=0.8) as lst:
        plain = tampered_run(lst, pool, keepalive_and_flag_attack(attack, False), False, **opts)
        authed = tampered_run(lst, pool, keepalive_and_flag_attack(attack, True), True, **opts)
    messages = [f"message {i}".encode() for i in range(3)]
    if attack in ("forge-keepalive", "replay-keepalive"):
        assert plain == messages  # the threat: nobody notices
    elif attack == "keepalive-as-close":  # believed: the channel ends after message 0
        assert plain[0] == messages[0] and isinstance(plain[1], TransferError), plain
        assert len(plain) == 2, plain
    elif attack == "cancel-second":  # the next frame after the "cancelled" one gives it away
        assert plain[0] == messages[0] and isinstance(plain[1], TransferError), plain
        assert not isinstance(plain[1], TransferClosed), plain
        assert re.search(r"a (KEEPALIVE|DATA frame) after a cancelled", str(plain[1])), plain[1]
    else:  # the sender's next frame (an idle KEEPALIVE or its CLOSE) gives it away
        assert plain[:2] == messages[:2] and isinstance(plain[2], TransferError), plain
        assert not isinstance(plain[2], TransferClosed), plain
        assert re.search(
            r"a KEEPALIVE after a cancelled frame|CLOSE says 3 frame\(s\) were sent, 2 arrived",
            str(plain[2]),
        ), plain[2]
    at = 2 if attack == "cancel-last" else 1  # the first message the attack touches
    assert authed[:at] == messages[:at] and isinstance(authed[at], TransferError), authed
    assert not isinstance(authed[at], TransferClosed), authed
    expect = "header MAC mismatch" if "keepalive" in attack else "MAC mismatch: the frame was"
    assert expect in str(authed[at]), authed[at]


def test_reference_peer_keepalives_and_cancelled_frames_with_macs(pool):
    """Authenticated KEEPALIVEs count for the frame counter both ways, and an authenticated
    cancelled frame is discarded, CLOSE counting only the frames sent whole: the engine and the
    reference peer agree byte for byte."""
    with listen(port=0, secret=SECRET, io_timeout=0.4) as lst:
        fut = pool.submit(lst.accept, timeout=T)
        sock = socket.create_connection(("127.0.0.1", lst.port), timeout=T)
        session = peer.client_handshake(sock, SECRET, macs=True)
        with fut.result(T) as ep:
            sock.sendall(session.frame(peer.DATA, 0, b"zero"))
            sock.sendall(session.frame(peer.KEEPALIVE, 0))
            sock.sendall(session.frame(peer.DATA, 1, b"one"))
            sock.sendall(session.frame(peer.DATA, 2, bytes(1000), flags=peer.TRAILER_CANCELLED))
            assert ep.recv(timeout=T).data == b"zero"
            assert ep.recv(timeout=T).data == b"one"
            time.sleep(0.5)  # the engine sends keepalives (every 0.1 s); the peer checks each MAC
            ep.send(b"reply")
            assert peer.read_frame_flags(sock, session) == (peer.DATA, 0, b"reply", 0)
            assert session.received > 2  # keepalives came first, each authenticated
            sock.sendall(session.frame(peer.CLOSE, 2))
            with pytest.raises(TransferClosed):
                ep.recv(timeout=T)
            assert peer.read_frame(sock, session) == (peer.CLOSE, 1, b"")
        sock.close()
