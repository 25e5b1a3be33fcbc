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
VERSION = 1
CLIENT_HELLO, SERVER_HELLO, CLIENT_AUTH, ACCEPT, REJECT = 1, 2, 3, 4, 5
DATA, CLOSE, KEEPALIVE = 1, 2, 3
TRAILER_CANCELLED = 1  # trailer flag: a close() that ran out of time ended the frame early
SERVER_LABEL = b"hierbench-transfer/1 server"
CLIENT_LABEL = b"hierbench-transfer/1 client"


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


def client_handshake(
    sock: socket.socket, secret: bytes, max_frame: int = 1 << 30, version: int = VERSION
) -> int:
    """Runs the client side; returns the server's frame limit. Raises PermissionError on REJECT
    or a bad server proof."""
    hello = prefix(CLIENT_HELLO, version) + struct.pack("<Q", max_frame) + os.urandom(32) + bytes(8)
    sock.sendall(hello)
    pre = recv_exact(sock, 8)
    if pre[6:8] == struct.pack("<H", REJECT):
        (reason,) = struct.unpack("<H", recv_exact(sock, 8)[:2])
        raise PermissionError(f"rejected, reason {reason}")
    server_hello = pre + recv_exact(sock, 80)
    expect = hmac.new(secret, SERVER_LABEL + hello + server_hello[:48], hashlib.sha256).digest()
    if not hmac.compare_digest(expect, server_hello[48:80]):
        sock.sendall(prefix(REJECT) + struct.pack("<H", 2) + bytes(6))
        raise PermissionError("bad server proof")
    proof = hmac.new(secret, CLIENT_LABEL + hello + server_hello[:48], hashlib.sha256).digest()
    sock.sendall(prefix(CLIENT_AUTH) + proof)
    pre = recv_exact(sock, 8)
    if pre[6:8] != struct.pack("<H", ACCEPT):
        raise PermissionError(f"not accepted: {pre!r}")
    (server_max,) = struct.unpack("<Q", server_hello[8:16])
    return server_max


def server_handshake(sock: socket.socket, secret: bytes, max_frame: int = 1 << 30) -> int:
    """Runs the server side; returns the client's frame limit."""
    hello = recv_exact(sock, 56)
    assert hello[:4] == HANDSHAKE_MAGIC and hello[4:8] == struct.pack("<HH", VERSION, CLIENT_HELLO)
    head = prefix(SERVER_HELLO) + struct.pack("<Q", max_frame) + os.urandom(32)
    proof = hmac.new(secret, SERVER_LABEL + hello + head, hashlib.sha256).digest()
    sock.sendall(head + proof + bytes(8))
    auth = recv_exact(sock, 40)
    expect = hmac.new(secret, CLIENT_LABEL + hello + head, hashlib.sha256).digest()
    if auth[:8] != prefix(CLIENT_AUTH) or not hmac.compare_digest(expect, auth[8:]):
        sock.sendall(prefix(REJECT) + struct.pack("<H", 2) + bytes(6))
        raise PermissionError("bad client proof")
    sock.sendall(prefix(ACCEPT))
    return struct.unpack("<Q", hello[8:16])[0]


def header(
    seq: int, length: int, *, kind: int = DATA, delay_ns: int = 0, enqueued_ns: int = 0
) -> bytes:
    h = FRAME_MAGIC + struct.pack("<HHQQQq", kind, 0, seq, length, delay_ns, enqueued_ns)
    h += bytes(12)
    return h + struct.pack("<I", crc32c(h))


def trailer(payload: bytes, tx_start_ns: int = 0, tx_end_ns: int = 0) -> bytes:
    t = struct.pack("<qq", tx_start_ns, tx_end_ns)
    return t + struct.pack("<I", crc32c(t, crc32c(payload))) + bytes(4)


def data_frame(seq: int, payload: bytes, **kw) -> bytes:
    return header(seq, len(payload), **kw) + payload + trailer(payload)


def close_frame(frames_sent: int) -> bytes:
    return header(frames_sent, 0, kind=CLOSE)


def read_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    """Reads one frame: (kind, seq, payload); checks both CRCs; skips KEEPALIVEs."""
    h = recv_exact(sock, 56)
    while h[4:6] == struct.pack("<H", KEEPALIVE):
        h = recv_exact(sock, 56)
    assert h[:4] == FRAME_MAGIC, h[:4]
    assert struct.unpack("<I", h[52:56])[0] == crc32c(h[:52]), "header CRC"
    kind, _flags, seq, length = struct.unpack("<HHQQ", h[4:24])
    if kind == CLOSE:
        return kind, seq, b""
    payload = recv_exact(sock, length)
    t = recv_exact(sock, 24)
    assert struct.unpack("<I", t[16:20])[0] == crc32c(t[:16], crc32c(payload)), "payload CRC"
    return kind, seq, payload


def connect(port: int, secret: bytes, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    client_handshake(sock, secret)
    return sock
