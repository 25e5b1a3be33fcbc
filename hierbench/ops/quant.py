"""Fused min/max affine quantization: ``quantize`` / ``dequantize`` and their config types.

Thin typed wrappers over ``torch.ops.hierbench.quantize`` and ``torch.ops.hierbench.dequantize``
(CPU kernels; CUDA kernels, compiled in CI but not yet run on a GPU; fake kernels for
``torch.compile``). The exact semantics, bit for bit, are
those of :func:`hierbench.ops.reference.quantize` and :func:`hierbench.ops.reference.dequantize`.

Granularity (one float32 ``scale`` and ``offset`` per group; ``G`` groups):

=============  ==============================================  =====================
granularity    a group is                                      G
=============  ==============================================  =====================
``"tensor"``   every element                                   1
``"channel"``  the elements with one index along channel_dim   ``x.shape[channel_dim]``
``"group"``    group_size consecutive elements of x.flatten()  ``ceil(numel / group_size)``
=============  ==============================================  =====================

Calling conventions: ``quantize(x, QuantConfig(bits=4, group_size=64))`` or the keyword
shorthand ``quantize(x, bits=4, group_size=64)`` (the fields of :class:`QuantConfig`; giving both a
config and fields is a ``TypeError``). Integer fields accept any integer type (``int``,
``numpy.int64``...; not ``bool``).

Autograd: ``quantize`` is not differentiable (its codes are integers). Called on a tensor that
requires grad, with grad mode on, it raises ``ValueError`` rather than silently returning a result
that drops the gradient; ``dequantize`` does the same for a scale or offset that requires grad.
For quantization-aware training use :func:`hierbench.ops.fake_quantize`, the documented
straight-through estimator (forward ``dequantize(quantize(x))``, backward identity).

Memory format: a channels_last (4-d) or channels_last_3d (5-d) input is quantized in its logical
row-major order like any other layout; :class:`QuantizedTensor` records the format and
:func:`dequantize` returns its result in it (``QuantizedTensor.memory_format``).

Allowed imports: ``hierbench._ext``, ``hierbench.errors``, torch.
"""

from __future__ import annotations

import contextlib
import math
import operator
from dataclasses import dataclass, fields

import torch

from hierbench.ops import reference

__all__ = ["QuantConfig", "QuantizedTensor", "dequantize", "quantize"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def as_int(value, what: str) -> int:
    """``value`` as a Python int if it is an integer of any type (``int``, ``numpy.int64``, a 0-d
    integer tensor: anything with ``__index__``), else ``ValueError`` naming ``what``. ``bool``
    is rejected: ``bits=True`` is a mistake, not 1."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ValueError(f"{what} must be an int, got {value!r}")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize: bits, granularity and rounding. Frozen; validated on construction.

    Attributes:
        bits: code width, 2, 4 or 8.
        granularity: ``"tensor"``, ``"channel"`` or ``"group"`` (see the module docstring).
        group_size: for ``"group"``, a power of two >= 32 (consecutive elements of
            ``x.flatten()``; the last group may be partial). Checked for every granularity.
        channel_dim: for ``"channel"``, the dimension that indexes channels (negative counts
            from the end).
        rounding: ``"nearest"`` (round half to even) or ``"stochastic"`` (unbiased, from a
            counter-based generator keyed by ``(seed, element index)``).
    """

    bits: int = 8
    granularity: str = "group"
    group_size: int = 128
    channel_dim: int = 1
    rounding: str = "nearest"

    def __post_init__(self) -> None:
        for name in ("bits", "group_size", "channel_dim"):
            # numpy (or any) integers are stored as int, so that configs compare and hash alike;
            # anything else is reported below, with the valid choices
            with contextlib.suppress(ValueError):
                object.__setattr__(self, name, as_int(getattr(self, name), name))
        if type(self.bits) is not int or self.bits not in (2, 4, 8):
            raise ValueError(f"QuantConfig.bits must be one of 2, 4, 8, got {self.bits!r}")
        if self.granularity not in ("tensor", "channel", "group"):
            raise ValueError(
                "QuantConfig.granularity must be one of 'tensor', 'channel', 'group', "
                f"got {self.granularity!r}"
            )
        gs = self.group_size
        if type(gs) is not int or gs < 32 or gs & (gs - 1):
            raise ValueError(f"QuantConfig.group_size must be a power of two >= 32, got {gs!r}")
        if type(self.channel_dim) is not int:
            raise ValueError(f"QuantConfig.channel_dim must be an int, got {self.channel_dim!r}")
        if self.rounding not in ("nearest", "stochastic"):
            raise ValueError(
                "QuantConfig.rounding must be one of 'nearest', 'stochastic', "
                f"got {self.rounding!r}"
            )

    def num_groups(self, shape: tuple[int, ...]) -> int:
        """G, the number of (scale, offset) pairs for a tensor of ``shape``."""
        return reference.num_groups(shape, self.granularity, self.group_size, self.channel_dim)


@dataclass(frozen=True)
class QuantizedTensor:
    """A quantized tensor: packed codes plus per-group float32 scale and offset.

    Attributes:
        payload: uint8 ``(ceil(numel * bits / 8),)``: the codes of ``x.flatten()`` (row-major),
            packed little-endian, lowest bits first (element k at bit ``(k*bits) % 8`` of byte
            ``(k*bits) // 8``).
        scale: float32 ``(G,)``.
        offset: float32 ``(G,)``, the group minimum.
        shape: the original shape.
        dtype: the original dtype (the default of :func:`dequantize`).
        config: the :class:`QuantConfig` used.
        seed: the stochastic-rounding seed used (recorded also for ``"nearest"``).
        memory_format: the input's memory format (``torch.channels_last`` for a 4-d
            channels_last input, ``torch.channels_last_3d`` for a 5-d one, else
            ``torch.contiguous_format``): :func:`dequantize` returns its result in it.
    """

    payload: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    shape: tuple[int, ...]
    dtype: torch.dtype
    config: QuantConfig
    seed: int = 0
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def num_groups(self) -> int:
        return self.scale.numel()

    @property
    def nbytes(self) -> int:
        """Bytes of payload + scale + offset."""
        return (
            self.payload.numel()
            + self.scale.numel() * self.scale.element_size()
            + self.offset.numel() * self.offset.element_size()
        )

    @property
    def device(self) -> torch.device:
        return self.payload.device


def check_input(x: torch.Tensor, config: QuantConfig) -> None:
    """TypeError unless ``x`` is a float32/float16/bfloat16 tensor and ``config`` a QuantConfig."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")


_CONFIG_FIELDS = tuple(f.name for f in fields(QuantConfig))


def resolve_config(config: QuantConfig | None, fields_: dict, caller: str) -> QuantConfig:
    """The config of a call given either ``config`` or keyword ``fields_`` (None = not given)."""
    given = {k: v for k, v in fields_.items() if v is not None}
    if config is not None:
        if given:
            raise TypeError(
                f"{caller}() takes a QuantConfig or its fields as keywords, not both: got a "
                f"config and {', '.join(f'{k}=' for k in given)}"
            )
        if not isinstance(config, QuantConfig):
            raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
        return config
    return QuantConfig(**given)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` / ``channels_last_3d`` for a 4-d / 5-d tensor laid out so (and not
    also row-major contiguous), else ``torch.contiguous_format``."""
    if x.dim() in (4, 5) and not x.is_contiguous():
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        if x.is_contiguous(memory_format=fmt):
            return fmt
    return torch.contiguous_format


def check_no_grad(t: torch.Tensor, what: str, caller: str) -> None:
    """ValueError if ``t`` requires grad under grad mode: the op would drop the gradient."""
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{caller}: {what} requires grad, but {caller} is not differentiable and would "
            f"silently drop the gradient. Use hierbench.ops.fake_quantize (straight-through "
            f"estimator) to train through quantization, or pass {what}.detach() / run under "
            "torch.no_grad() to quantize without a gradient"
        )


def _op_args(cfg: QuantConfig) -> tuple[int, str, int, int]:
    return cfg.bits, cfg.granularity, cfg.group_size, cfg.channel_dim


def _raise_non_finite(x: torch.Tensor, scale: torch.Tensor) -> None:
    bad = ~torch.isfinite(x.detach().reshape(-1))
    count = int(bad.sum())
    if count:
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"x has {count} non-finite value(s) (NaN or inf), the first at flat index {first} "
            f"(value {x.detach().reshape(-1)[first].item()}); quantize needs finite input"
        )
    group = int((~torch.isfinite(scale)).nonzero()[0, 0])
    raise ValueError(
        f"x's range overflows float32 in group {group} (max - min is inf); quantize needs "
        "max - min <= 3.4e38 per group"
    )


def quantize(
    x: torch.Tensor,
    config: QuantConfig | None = None,
    *,
    bits: int | None = None,
    granularity: str | None = None,
    group_size: int | None = None,
    channel_dim: int | None = None,
    rounding: str | None = None,
    seed: int = 0,
    out: QuantizedTensor | None = None,
) -> QuantizedTensor:
    """Quantize ``x`` to ``config.bits``-bit codes with per-group min/max affine parameters.

    ``quantize(x, QuantConfig(bits=4, group_size=64))`` or, equivalently, the keyword shorthand
    ``quantize(x, bits=4, group_size=64)`` (fields not given take :class:`QuantConfig`'s
    defaults; ``quantize(x)`` is ``QuantConfig()``: 8 bits, groups of 128, nearest).

    One fused pass per group on CPU and CUDA (min/max, quantize, pack). Per group, in float32
    (fp16/bf16 widen exactly), ``qmax = 2^bits - 1``::

        lo = min(x_g), hi = max(x_g)
        scale  = ((hi - lo) + 0) / qmax                  # IEEE division; + 0 turns -0 to +0
        inv    = 1 / scale  if scale >= 2^-126 else 0    # else (tiny or zero range) codes are 0
        t      = min((x - lo) * inv, qmax)               # each op rounded, never fused
        nearest:    code = rint(t)                       # round half to even
        stochastic: code = floor(t) + (u[k] < t - floor(t))
        offset = lo + 0                                  # a zero minimum is stored as +0

    ``u[k]`` in [0, 1) (24 bits) comes from a counter-based generator keyed by ``(seed, k)``, k
    the element's index in ``x.flatten()``: see :func:`hierbench.ops.reference.uniform`. The same
    seed gives the same bits on every CPU kernel, and is meant to on CUDA (compiled in CI, not yet
    run on a GPU). A constant group gets ``scale = 0`` and decodes
    exactly; with ``"nearest"``, ``|x - dequantize(q)| <= scale / 2`` up to float32 rounding.

    Args:
        x: float32, float16 or bfloat16, any shape and layout, on CPU or CUDA (read as
            ``x.flatten()``; non-contiguous inputs are made contiguous first). Must not require
            grad under grad mode (see the module docstring; :func:`fake_quantize` trains).
        config: bits, granularity, rounding; ``None`` to use the keyword fields.
        bits, granularity, group_size, channel_dim, rounding: :class:`QuantConfig`'s fields,
            as keywords, instead of ``config``.
        seed: stochastic-rounding seed, an int64 (ignored by ``"nearest"``).
        out: a previous result whose ``payload``, ``scale`` and ``offset`` buffers are reused
            (same device, and sizes matching this ``x`` and ``config``); loops use it to avoid
            allocating.

    Returns:
        A :class:`QuantizedTensor` (its tensors are ``out``'s when ``out`` is given).

    Raises:
        ValueError: ``x`` holds NaN or +-inf (the message gives the count and the first flat
            index), or a group's ``max - min`` overflows float32. An activation with NaN means
            training diverged: quantizing it silently would hide that. (On CUDA, this check
            reads G floats back to the host; the raw op ``torch.ops.hierbench.quantize`` does
            not check, and marks such groups with NaN scale and offset instead.)
            Also: ``x`` requires grad under grad mode (the gradient would be dropped), or a
            field is invalid (see :class:`QuantConfig`).
        TypeError: ``x`` is not a float32/float16/bfloat16 tensor, ``config`` is not a
            :class:`QuantConfig`, or both ``config`` and keyword fields are given.

    Reference: :func:`hierbench.ops.reference.quantize` (bit-exact).
    """
    fields_ = {
        "bits": bits,
        "granularity": granularity,
        "group_size": group_size,
        "channel_dim": channel_dim,
        "rounding": rounding,
    }
    config = resolve_config(config, fields_, "quantize")
    check_input(x, config)
    check_no_grad(x, "x", "quantize")
    seed = check_seed(seed)
    if out is not None and not isinstance(out, QuantizedTensor):
        raise TypeError(f"out must be a QuantizedTensor, got {type(out).__name__}")
    args = (*_op_args(config), config.rounding, seed)
    if out is None:
        payload, scale, offset = torch.ops.hierbench.quantize.default(x, *args)
    else:
        payload, scale, offset = out.payload, out.scale, out.offset
        torch.ops.hierbench.quantize.out(x, *args, payload=payload, scale=scale, offset=offset)
    # Under torch.compile the data-dependent check would break the graph: it is skipped there,
    # and invalid groups keep the op's NaN scale/offset. One reduction + one read-back: the sum is
    # finite when every scale is (an overflowing sum of finite scales is re-checked exactly).
    if (
        not torch.compiler.is_compiling()
        and scale.numel()
        and not math.isfinite(scale.sum().item())
        and not bool(torch.isfinite(scale).all())
    ):
        _raise_non_finite(x, scale)
    fmt = memory_format_of(x)
    return QuantizedTensor(payload, scale, offset, tuple(x.shape), x.dtype, config, seed, fmt)


def check_seed(seed) -> int:
    """``seed`` as an int if it is an int64 of any integer type, else ``ValueError``."""
    try:
        value = as_int(seed, "seed")
    except ValueError:
        value = None
    if value is None or not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"seed must be an int64, got {seed!r}")
    return value


def dequantize(
    q: QuantizedTensor,
    dtype: torch.dtype | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode a :class:`QuantizedTensor`: ``x_hat = offset + code * scale``.

    The multiply and the add are each rounded to float32 (never fused); the result is then
    converted to ``dtype`` rounding to nearest even. Bit-exact on the CPU; the CUDA kernel is
    written to match (compiled in CI, not yet run on a GPU). Not differentiable: a ``q`` whose
    scale or offset requires grad (under grad mode) is a ``ValueError``, not a silent drop.

    Args:
        q: the quantized tensor.
        dtype: float32, float16 or bfloat16; default ``q.dtype``.
        out: optional contiguous tensor of ``q.shape`` on ``q``'s device to write into; its
            dtype is the output dtype (``dtype``, if also given, must equal it).

    Returns:
        A tensor of shape ``q.shape`` in ``q.memory_format`` (row-major contiguous unless the
        quantized input was channels_last); ``out`` when given.

    Reference: :func:`hierbench.ops.reference.dequantize` (bit-exact).
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"q must be a QuantizedTensor, got {type(q).__name__}")
    if dtype is None:
        dtype = out.dtype if out is not None else q.dtype
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    check_no_grad(q.scale, "q.scale", "dequantize")
    check_no_grad(q.offset, "q.offset", "dequantize")
    args = (q.payload, q.scale, q.offset, list(q.shape), *_op_args(q.config))
    if out is None:
        y = torch.ops.hierbench.dequantize.default(*args, dtype)
        if q.memory_format != torch.contiguous_format:
            y = y.contiguous(memory_format=q.memory_format)
        return y
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must be {dtype} (the requested dtype), got {out.dtype}")
    torch.ops.hierbench.dequantize.out(*args, out=out)
    return out
