"""Pure-PyTorch reference implementations: the specification every native kernel is tested against.

Each function here defines, in readable eager PyTorch, exactly what the op of the same name in
``torch.ops.hierbench`` computes. The kernels must agree bit for bit where the docstring says so.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "dequantize",
    "group_minmax",
    "hash32",
    "num_groups",
    "quantize",
    "seed_keys",
    "uniform",
    "unpack",
]


def group_minmax(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group min and max of ``x.flatten()`` in groups of ``group_size`` consecutive elements.

    The last group may be partial. Values are widened to float32 (exact for fp16/bf16). A group
    holding a NaN gets NaN for both its min and max; +-inf are ordinary values.
    """
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    groups = -(-n // group_size)
    if groups == 0:
        empty = torch.empty(0, dtype=torch.float32, device=x.device)
        return empty, empty.clone()
    pad = groups * group_size - n
    lo = torch.nn.functional.pad(flat, (0, pad), value=float("inf")).view(groups, group_size)
    hi = torch.nn.functional.pad(flat, (0, pad), value=float("-inf")).view(groups, group_size)
    return lo.amin(dim=1), hi.amax(dim=1)


# ---------------------------------------------------------------------------------------------
# Affine min/max quantization: the specification of ``torch.ops.hierbench.quantize`` and
# ``torch.ops.hierbench.dequantize`` (bit for bit: payload, scale, offset and decoded values).
# ---------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_FLT_MIN = 2.0**-126  # smallest normal float32
_GRANULARITIES = ("tensor", "channel", "group")
_ROUNDINGS = ("nearest", "stochastic")


def hash32(x: int) -> int:
    """The 32-bit integer mixer of the stochastic-rounding generator (Wellons' ``lowbias32``).

    ``x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16`` (mod 2^32).
    """
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return x


def seed_keys(seed: int) -> tuple[int, int]:
    """The two 32-bit keys derived from a 64-bit seed (two's complement bits of an int64).

    ``key0 = hash32(seed_lo ^ 0x9E3779B9)``, ``key1 = hash32(seed_hi ^ key0 ^ 0x85EBCA6B)``.
    """
    s = seed & 0xFFFFFFFFFFFFFFFF
    key0 = hash32((s & _M32) ^ 0x9E3779B9)
    key1 = hash32((s >> 32) ^ key0 ^ 0x85EBCA6B)
    return key0, key1


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2^32 for int64 tensors holding uint32 values, without int64 overflow: the
    # product is split at 16 bits so every intermediate stays below 2^49.
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _hash32_tensor(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform(seed: int, numel: int, *, start: int = 0, device=None) -> torch.Tensor:
    """The counter-based uniform numbers of stochastic rounding: ``u[k]`` for flat indices k.

    For element index ``k`` (its position in ``x.flatten()``, 64-bit) and ``(key0, key1) =
    seed_keys(seed)``, all arithmetic on uint32 modulo 2^32::

        r    = hash32((hash32(lo32(k) ^ key0) + hi32(k)) ^ key1)
        u[k] = (r >> 8) * 2^-24          # float32 in [0, 1), 24 random bits, exact

    The value depends only on (seed, k), so CPU and CUDA kernels are meant to compute the same
    bits (the CUDA kernels are compiled in CI, not yet run on a GPU).
    """
    key0, key1 = seed_keys(seed)
    k = torch.arange(start, start + numel, dtype=torch.int64, device=device)
    a = _hash32_tensor((k & _M32) ^ key0)
    r = _hash32_tensor(((a + (k >> 32)) & _M32) ^ key1)
    return (r >> 8).to(torch.float32) * (2.0**-24)


def num_groups(shape, granularity: str, group_size: int, channel_dim: int) -> int:
    """How many (scale, offset) pairs a tensor of ``shape`` gets (depends on the shape only).

    ``"tensor"``: 1 (also when empty). ``"channel"``: ``shape[channel_dim]``. ``"group"``:
    ``ceil(numel / group_size)`` (0 when empty).
    """
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if granularity == "tensor":
        return 1
    if granularity == "channel":
        return shape[_norm_dim(channel_dim, len(shape))]
    return -(-numel // group_size)


def _norm_dim(dim: int, ndim: int) -> int:
    if not -max(ndim, 1) <= dim < max(ndim, 1) or ndim == 0:
        raise ValueError(
            f"channel_dim must be in [-{max(ndim, 1)}, {max(ndim, 1) - 1}] for a tensor of "
            f"{ndim} dimensions, got {dim}"
        )
    return dim % ndim


def _check_quant_args(bits, granularity, group_size, rounding=None) -> None:
    if bits not in (2, 4, 8):
        raise ValueError(f"bits must be 2, 4 or 8, got {bits!r}")
    if granularity not in _GRANULARITIES:
        raise ValueError(f"granularity must be 'tensor', 'channel' or 'group', got {granularity!r}")
    if granularity == "group" and (group_size < 32 or group_size & (group_size - 1)):
        raise ValueError(f"group_size must be a power of two >= 32, got {group_size!r}")
    if rounding is not None and rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")


def _group_index(shape, granularity: str, group_size: int, channel_dim: int, device):
    """The group of every element of the flattened tensor (int64, numel), and G."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    g = num_groups(shape, granularity, group_size, channel_dim)
    k = torch.arange(numel, dtype=torch.int64, device=device)
    if granularity == "tensor":
        return torch.zeros_like(k), g
    if granularity == "group":
        return k // group_size, g
    d = _norm_dim(channel_dim, len(shape))
    inner = math.prod(shape[d + 1 :])
    return (k // max(inner, 1)) % max(g, 1), g


def quantize(
    x: torch.Tensor,
    bits: int,
    granularity: str,
    group_size: int = 128,
    channel_dim: int = 1,
    rounding: str = "nearest",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min/max affine quantization of ``x.flatten()``; returns ``(payload, scale, offset)``.

    Groups (one ``(scale, offset)`` each, see :func:`num_groups`): ``"tensor"`` all elements;
    ``"channel"`` the elements sharing an index along ``channel_dim``; ``"group"`` runs of
    ``group_size`` consecutive elements of ``x.flatten()`` (the last run may be partial).

    Per group, in float32 (fp16/bf16 inputs widen exactly), with ``qmax = 2^bits - 1``::

        lo = min(x_g), hi = max(x_g)
        scale  = ((hi - lo) + 0) / qmax                 # IEEE division, rounded to nearest
        inv    = 1 / scale  if scale >= 2^-126 else 0   # normal scale; else every code is 0
        t      = min((x - lo) * inv, qmax)              # two roundings, never fused (no FMA)
        nearest:    code = rint(t)                      # round half to even
        stochastic: code = floor(t) + (u[k] < t - floor(t))   # u from `uniform(seed, k)`
        offset = lo + 0                                 # a zero minimum is stored as +0

    A group with no elements gets ``scale = offset = 0``; a constant group (``hi == lo``) gets
    ``scale = 0`` and codes 0, so it decodes exactly. A group holding NaN or +-inf, or whose
    range ``hi - lo`` overflows float32, is *invalid*: its scale and offset are NaN and its codes
    0 (the public :func:`hierbench.ops.quantize` turns that into a ``ValueError``).

    ``payload``: uint8, ``ceil(numel * bits / 8)`` bytes; the code of flat element ``k`` sits at
    bit ``(k * bits) % 8`` of byte ``(k * bits) // 8`` (little-endian, lowest bits first); unused
    high bits of the last byte are 0.
    """
    _check_quant_args(bits, granularity, group_size, rounding)
    shape = tuple(x.shape)
    dev = x.device
    flat = x.detach().reshape(-1).to(torch.float32)
    numel = flat.numel()
    gidx, g = _group_index(shape, granularity, group_size, channel_dim, dev)
    qmax = float((1 << bits) - 1)
    inf = torch.full((g,), float("inf"), dtype=torch.float32, device=dev)
    lo = inf.scatter_reduce(0, gidx, flat, reduce="amin", include_self=True)
    hi = (-inf).scatter_reduce(0, gidx, flat, reduce="amax", include_self=True)
    # scatter_reduce's amin/amax need not propagate NaN: NaN is tracked explicitly.
    has_nan = torch.bincount(gidx, weights=flat.isnan().to(torch.float32), minlength=g) > 0
    count = torch.bincount(gidx, minlength=g)
    empty = count == 0
    lo = torch.where(empty, 0.0, lo)
    hi = torch.where(empty, 0.0, hi)
    rng = (hi - lo) + 0.0  # + 0.0: an all-zero group's range is +0 whichever zeros min/max kept
    invalid = has_nan | ~torch.isfinite(rng)
    lo_q = torch.where(invalid, 0.0, lo)
    scale = torch.where(invalid, 0.0, rng) / qmax
    inv = torch.where(scale >= _FLT_MIN, torch.ones_like(scale) / scale, 0.0)
    t = (flat - lo_q[gidx]) * inv[gidx]
    t = torch.where(t < qmax, t, qmax)
    if rounding == "nearest":
        code = torch.round(t)
    else:
        fl = torch.floor(t)
        u = uniform(seed, numel, device=dev)
        code = fl + (u < (t - fl)).to(torch.float32)
    code = torch.where(invalid[gidx], 0.0, code).to(torch.int64)
    nan = torch.tensor(float("nan"), device=dev)
    scale = torch.where(invalid, nan, scale)
    offset = torch.where(invalid, nan, lo + 0.0)  # + 0.0: -0.0 becomes +0.0, nothing else changes
    return _pack(code, bits), scale, offset


def _pack(code: torch.Tensor, bits: int) -> torch.Tensor:
    per = 8 // bits
    n = code.numel()
    nbytes = -(-n * bits // 8)
    padded = torch.zeros(nbytes * per, dtype=torch.int64, device=code.device)
    padded[:n] = code
    shifts = torch.arange(per, dtype=torch.int64, device=code.device) * bits
    return (padded.view(nbytes, per) << shifts).sum(dim=1).to(torch.uint8)


def unpack(payload: torch.Tensor, numel: int, bits: int) -> torch.Tensor:
    """The integer codes (int64, ``numel``) stored in a packed payload."""
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.int64, device=payload.device) * bits
    codes = (payload.to(torch.int64).view(-1, 1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(-1)[:numel]


def dequantize(
    payload: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor,
    shape,
    bits: int,
    granularity: str,
    group_size: int = 128,
    channel_dim: int = 1,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The inverse of :func:`quantize`: ``x_hat = offset + code * scale`` in float32.

    One multiply and one add, each rounded to float32 (never fused), then converted to ``dtype``
    with round-to-nearest-even. Returns a contiguous tensor of ``shape``.
    """
    _check_quant_args(bits, granularity, group_size)
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    gidx, _ = _group_index(shape, granularity, group_size, channel_dim, payload.device)
    code = unpack(payload, numel, bits).to(torch.float32)
    x = offset[gidx] + code * scale[gidx]
    return x.to(dtype).reshape(shape)
