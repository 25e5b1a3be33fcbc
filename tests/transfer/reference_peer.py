"""An independent Python implementation of the transfer wire format (docs/transfer.md).

Tests use it to talk to the C++ engine byte by byte, and to send it hostile input (bad secret,
corrupted or oversize frames, a peer dying mid-frame). Nothing here imports the engine.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

HANDSHAKE_MAGIC = b"HBTH"
FRAME_MAGIC = b"HBF1"
VERSION = 2
CLIENT_HELLO, SERVER_HELLO, CLIENT_AUTH, SERVER_AUTH, REJECT = 1, 2, 3, 4, 5
DATA, CLOSE, KEEPALIVE = 1, 2, 3
TRAILER_CANCELLED = 1  # trailer flag: a close() that ran out of time ended the frame early
SERVER_LABEL = b"hierbench-transfer/2 server"
CLIENT_LABEL = b"hierbench-transfer/2 client"
C2S_LABEL = b"hierbench-transfer/2 c2s"
S2C_LABEL = b"hierbench-transfer/2 s2c"
KDF_SALT = b"hierbench-transfer/2"


def derive_key(secret: bytes) -> bytes:
    """K = scrypt(secret, "hierbench-transfer/2", N=2^15, r=8, p=1), 32 bytes."""
    return hashlib.scrypt(secret, salt=KDF_SALT, n=1 << 15, r=8, p=1, maxmem=64 << 20, dklen=32)


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


class Session:
    """What a handshake agreed on; with ``macs`` it seals and opens frames like the engine."""

    def __init__(self, key: bytes, ch: bytes, sh: bytes, ca: bytes, client: bool):
        self.peer_max = struct.unpack("<Q", (sh if client else ch)[8:16])[0]
        flags = struct.unpack("<I", ch[48:52])[0] | struct.unpack("<I", sh[48:52])[0]
        self.macs = bool(flags & 1)
        c2s, s2c = _mac(key, C2S_LABEL, ch, sh, ca), _mac(key, S2C_LABEL, ch, sh, ca)
        self.send_key, self.recv_key = (c2s, s2c) if client else (s2c, c2s)
        self.sent = self.received = 0

    def header_mac(self, key: bytes, n: int, header40: bytes) -> bytes:
        return _mac(key, b"H", struct.pack("<Q", n), header40)[:12]

    def frame(self, kind: int, seq: int, payload: bytes = b"", *, flags: int = 0, **kw) -> bytes:
        """A DATA, CLOSE or KEEPALIVE frame as this side sends it next (counts it). ``flags``:
        the DATA trailer's flags (TRAILER_CANCELLED)."""
        n = self.sent
        self.sent += 1
        if not self.macs:
            if kind == DATA:
                return data_frame(seq, payload, flags=flags, **kw)
            return header(seq, 0, kind=kind)
        h40 = FRAME_MAGIC + struct.pack(
            "<HHQQQq", kind, 1, seq, len(payload), kw.get("delay_ns", 0), kw.get("enqueued_ns", 0)
        )
        h52 = h40 + self.header_mac(self.send_key, n, h40)
        h = h52 + struct.pack("<I", crc32c(h52))
        if kind != DATA:
            return h
        t = trailer(payload, flags=flags)
        return h + payload + t + _mac(self.send_key, b"F", struct.pack("<Q", n), h52, payload, t)


def prefix(kind: int, version: int = VERSION) -> bytes:
    return HANDSHAKE_MAGIC + struct.pack("<HH", version, kind)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return out


def hello(kind: int, max_frame: int, macs: bool = False, version: int = VERSION) -> bytes:
    return (
        prefix(kind, version)
        + struct.pack("<Q", max_frame)
        + os.urandom(32)
        + struct.pack("<I", int(macs))
        + bytes(4)
    )


def client_handshake(
    sock: socket.socket,
    secret: bytes,
    max_frame: int = 1 << 30,
    version: int = VERSION,
    macs: bool = False,
    key: bytes | None = None,
) -> Session:
    """Runs the client side (it proves first); returns the session. Raises PermissionError on
    REJECT or a bad server proof."""
    key = derive_key(secret) if key is None else key
    ch = hello(CLIENT_HELLO, max_frame, macs, version)
    sock.sendall(ch)
    pre = recv_exact(sock, 8)
    if pre[6:8] == struct.pack("<H", REJECT):
        (reason,) = struct.unpack("<H", recv_exact(sock, 8)[:2])
        raise PermissionError(f"rejected, reason {reason}")
    sh = pre + recv_exact(sock, 48)
    ca = prefix(CLIENT_AUTH) + _mac(key, CLIENT_LABEL, ch, sh)
    sock.sendall(ca)
    pre = recv_exact(sock, 8)
    if pre[6:8] == struct.pack("<H", REJECT):
        (reason,) = struct.unpack("<H", recv_exact(sock, 8)[:2])
        raise PermissionError(f"rejected, reason {reason}")
    if pre != prefix(SERVER_AUTH):
        raise PermissionError(f"expected SERVER_AUTH: {pre!r}")
    proof = recv_exact(sock, 32)
    if not hmac.compare_digest(proof, _mac(key, SERVER_LABEL, ch, sh, ca)):
        sock.sendall(prefix(REJECT) + struct.pack("<H", 2) + bytes(6))
        raise PermissionError("bad server proof")
    return Session(key, ch, sh, ca, client=True)


def server_handshake(
    sock: socket.socket, secret: bytes, max_frame: int = 1 << 30, macs: bool = False
) -> Session:
    """Runs the server side (it proves second); returns the session."""
    key = derive_key(secret)
    ch = recv_exact(sock, 56)
    assert ch[:4] == HANDSHAKE_MAGIC and ch[4:8] == struct.pack("<HH", VERSION, CLIENT_HELLO)
    sh = hello(SERVER_HELLO, max_frame, macs)
    sock.sendall(sh)
    ca = recv_exact(sock, 40)
    if ca[:8] != prefix(CLIENT_AUTH) or not hmac.compare_digest(
        ca[8:], _mac(key, CLIENT_LABEL, ch, sh)
    ):
        sock.sendall(prefix(REJECT) + struct.pack("<H", 2) + bytes(6))
        raise PermissionError("bad client proof")
    sock.sendall(prefix(SERVER_AUTH) + _mac(key, SERVER_LABEL, ch, sh, ca))
    return Session(key, ch, sh, ca, client=False)


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C (Castagnoli), incremental like zlib.crc32. Slow: for small test payloads."""
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ _TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def header(
    seq: int, length: int, *, kind: int = DATA, delay_ns: int = 0, enqueued_ns: int = 0
) -> bytes:
    h = FRAME_MAGIC + struct.pack("<HHQQQq", kind, 0, seq, length, delay_ns, enqueued_ns)
    h += bytes(12)
    return h + struct.pack("<I", crc32c(h))


def trailer(payload: bytes, tx_start_ns: int = 0, tx_end_ns: int = 0, flags: int = 0) -> bytes:
    t = struct.pack("<qq", tx_start_ns, tx_end_ns)
    return t + struct.pack("<II", crc32c(t, crc32c(payload)), flags)


def data_frame(seq: int, payload: bytes, *, flags: int = 0, **kw) -> bytes:
    return header(seq, len(payload), **kw) + payload + trailer(payload, flags=flags)


def close_frame(frames_sent: int) -> bytes:
    return header(frames_sent, 0, kind=CLOSE)


def keepalive_frame() -> bytes:
    return header(0, 0, kind=KEEPALIVE)


def read_frame_flags(
    sock: socket.socket, session: Session | None = None
) -> tuple[int, int, bytes, int]:
    """Reads one frame: (kind, seq, payload, trailer flags); checks both CRCs (and, when the
    session authenticates frames, both MACs); checks and skips KEEPALIVEs (they count for the
    MACs' frame counter like any frame)."""
    macs = session is not None and session.macs
    while True:
        h = recv_exact(sock, 56)
        assert h[:4] == FRAME_MAGIC, h[:4]
        kind, hflags, seq, length = struct.unpack("<HHQQ", h[4:24])
        assert hflags == int(macs), hflags
        if macs:
            n = session.received
            session.received += 1
            assert h[40:52] == session.header_mac(session.recv_key, n, h[:40]), "header MAC"
        assert struct.unpack("<I", h[52:56])[0] == crc32c(h[:52]), "header CRC"
        if kind != KEEPALIVE:
            break
        assert length == 0, length
    if kind == CLOSE:
        return kind, seq, b"", 0
    assert kind == DATA, kind
    payload = recv_exact(sock, length)
    t = recv_exact(sock, 24)
    if macs:
        tag = recv_exact(sock, 32)
        expect = _mac(session.recv_key, b"F", struct.pack("<Q", n), h[:52], payload, t)
        assert hmac.compare_digest(tag, expect), "frame MAC"
    assert struct.unpack("<I", t[16:20])[0] == crc32c(t[:16], crc32c(payload)), "payload CRC"
    (tflags,) = struct.unpack("<I", t[20:24])
    assert tflags in (0, TRAILER_CANCELLED), tflags
    return kind, seq, payload, tflags


def read_frame(sock: socket.socket, session: Session | None = None) -> tuple[int, int, bytes]:
    """Reads one frame: (kind, seq, payload); see read_frame_flags."""
    return read_frame_flags(sock, session)[:3]


def connect(port: int, secret: bytes, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    client_handshake(sock, secret)
    return sock
