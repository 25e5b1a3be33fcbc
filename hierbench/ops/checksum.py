"""CRC-32 for frames: the value ``zlib.crc32`` computes, 3-13x faster on x86-64.

The activation codec checks every frame with CRC-32 (zlib / zip / PNG: reflected polynomial
0xEDB88320, initial value and final XOR 0xFFFFFFFF), so a frame can be checked by anything that
has ``zlib``. :func:`crc32` computes the same value in C++ (csrc/checksum/crc32.cpp): on x86-64
by folding with carry-less multiplies, 256 bytes per step on 512-bit registers (``vpclmul``:
AVX-512 VPCLMULQDQ) or 64 bytes per step on 128-bit ones (``pclmul``), elsewhere by slicing-by-8
tables over four interleaved streams (``portable``, about ``zlib.crc32``'s speed).
``benchmarks/bench_checksum.py`` measures each against ``zlib.crc32`` and a memcpy of the same
bytes.

Allowed imports: ``hierbench._ext``.
"""

from __future__ import annotations

from hierbench import _ext

__all__ = ["available_crc32_kernels", "crc32", "crc32_kernel"]

_U32 = 1 << 32


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32 of ``data`` continuing from ``value``: the value ``zlib.crc32(data, value)`` returns.

    ``crc32(b, crc32(a)) == crc32(a + b)``; ``crc32(b"123456789") == 0xCBF43926``. Unlike
    ``zlib.crc32``, which silently keeps the low 32 bits of any int (-1, ``1 << 40``, ``True``),
    ``value`` must be an int in [0, 2**32).

    Args:
        data: any C-contiguous buffer (``bytes``, ``bytearray``, ``memoryview``, numpy array).
            Buffers of 64 KiB and more are read with the GIL released (the buffer stays
            exported, so it cannot be resized or freed meanwhile); bytes that another thread
            writes into it during the call give an unspecified CRC, as with ``zlib.crc32``.
        value: the running CRC of the bytes before ``data`` (0 to start).

    Returns:
        The CRC, an int in [0, 2**32).

    Raises:
        TypeError: ``data`` does not support the buffer protocol, or ``value`` is not an int.
        BufferError: ``data`` is not C-contiguous.
        ValueError: ``value`` is outside [0, 2**32).
    """
    if type(value) is not int:
        raise TypeError(f"value must be an int, got {type(value).__name__}")
    if not 0 <= value < _U32:
        raise ValueError(f"value must be in [0, 2**32), got {value}")
    return _ext.load().crc32(data, value)


def crc32_kernel() -> str:
    """The kernel :func:`crc32` runs: ``"vpclmul"`` (x86-64 with AVX-512 F/VL and VPCLMULQDQ),
    ``"pclmul"`` (x86-64 with PCLMULQDQ and SSE4.1) or ``"portable"`` (slicing-by-8): the
    fastest one this CPU has. All give the same value."""
    return _ext.load().crc32_kernel()


def available_crc32_kernels() -> tuple[str, ...]:
    """The CRC-32 kernels this build and CPU can run, fastest first."""
    return tuple(_ext.load().available_crc32_kernels())
