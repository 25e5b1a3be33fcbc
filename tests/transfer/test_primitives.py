"""CRC32C, SHA-256 and HMAC-SHA256 of the engine against hashlib/hmac and published values."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from hierbench import _ext
from tests.transfer import reference_peer as peer

C = _ext.load().transfer


def test_crc32c_check_value_and_python_reference():
    assert C.crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue check value
    assert C.crc32c(b"") == 0
    rng = random.Random(0)
    # Lengths around the 8-byte words and the 3 x 8 KiB interleaved hardware path.
    for n in [1, 7, 8, 9, 63, 64, 1000, 24575, 24576, 24577, 3 * 24576 + 5]:
        data = rng.randbytes(n)
        assert C.crc32c(data) == peer.crc32c(data), n


def test_crc32c_is_incremental():
    data = random.Random(1).randbytes(100_000)
    for cut in [0, 1, 13, 50_000, 99_999]:
        assert C.crc32c(data[cut:], C.crc32c(data[:cut])) == C.crc32c(data)
    assert C.crc32c(memoryview(data)[10:20]) == C.crc32c(data[10:20])


@pytest.mark.parametrize("n", [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 100_003])
def test_sha256_matches_hashlib(n):
    data = random.Random(n).randbytes(n)
    assert C.sha256(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("key_len", [0, 1, 32, 64, 65, 200])
def test_hmac_sha256_matches_hmac(key_len):
    rng = random.Random(key_len)
    key, msg = rng.randbytes(key_len), rng.randbytes(300)
    assert C.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_hmac_rfc4231_case2():
    mac = C.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_constant_time_equal():
    assert C.constant_time_equal(b"abc", b"abc")
    assert not C.constant_time_equal(b"abc", b"abd")
    assert not C.constant_time_equal(b"abc", b"ab")
