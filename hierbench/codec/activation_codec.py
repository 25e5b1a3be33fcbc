""":class:`ActivationCodec`: a tensor into one frame and back, reusing its zstd contexts and
counting what it did (:class:`CodecStats`); the one-shot :func:`encode` / :func:`decode`.

Thread safety: an :class:`ActivationCodec` is **not** thread-safe. Its ``ZstdCompressor`` /
``ZstdDecompressor`` contexts (created once, reused by every call) and its counters must not be
used by two threads at once: use one codec per thread. A codec that is nevertheless entered by a
second thread while a call is running raises ``RuntimeError`` in that thread (before: zstd's
shared context could crash the process). Frames themselves are plain bytes.
"""

from __future__ import annotations

import contextlib
import math
import operator
import threading
from dataclasses import dataclass, field

import torch
import zstandard

from hierbench.codec.config import CodecConfig, _as_config
from hierbench.codec.frame import (
    _CODER_LZ4,
    _CODER_NONE,
    _CODER_ZSTD,
    _CRC,
    _DTYPE_CODE,
    _FLAG_SPARSE,
    _GRAN_CODE,
    _INT64_MAX,
    _INT64_MIN,
    _NAME_DTYPE,
    _ROUND_CODE,
    _SCHEME_QUANT,
    _SCHEME_RAW,
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_NDIM,
    FrameHeader,
    _bad,
    _check_host,
    _crc32,
    _num_groups,
    _pack_header,
    _parse,
    quant_fields,
)
from hierbench.codec.sections import (
    _decode_quantized,
    _decode_raw,
    _encode_raw,
    _le_buffer,
    decoded_range_problem,
)
from hierbench.codec.stages import (
    StageSpeed,
    choose_stage,
    lz4_compress,
    lz4_decompress,
    measure_stages,
)
from hierbench.errors import CodecError


@dataclass
class CodecStats:
    """Counters of one :class:`ActivationCodec` (reset with :meth:`ActivationCodec.reset_stats`).

    ``*_tensor_bytes`` count ``numel * itemsize`` of the tensors given to ``encode`` or returned
    by ``decode``; ``*_frame_bytes`` the frames' sizes.
    """

    encoded_frames: int = 0
    encoded_tensor_bytes: int = 0
    encoded_frame_bytes: int = 0
    decoded_frames: int = 0
    decoded_tensor_bytes: int = 0
    decoded_frame_bytes: int = 0
    last_frame_bytes: int = 0
    last_tensor_bytes: int = 0

    @property
    def compression_ratio(self) -> float:
        """Tensor bytes over frame bytes, over every encode so far (nan before the first)."""
        if not self.encoded_frame_bytes:
            return math.nan
        return self.encoded_tensor_bytes / self.encoded_frame_bytes

    @property
    def last_ratio(self) -> float:
        """Tensor bytes over frame bytes of the last frame encoded."""
        return self.last_tensor_bytes / self.last_frame_bytes if self.last_frame_bytes else math.nan


def _zstd_bound(n: int) -> int:
    # ZSTD_COMPRESSBOUND from zstd.h, plus room for the frame header.
    return n + (n >> 8) + (((128 << 10) - n) >> 11 if n < (128 << 10) else 0) + 32


def _lz4_bound(n: int) -> int:
    # LZ4_COMPRESSBOUND from lz4.h.
    return n + n // 255 + 16


#: With ``auto_link_bps``, the stages are measured again on every this many-th frame (the first
#: included), so that the choice follows the data (sparsity, ranges) as training moves.
AUTO_REMEASURE_EVERY = 64


@dataclass
class _Encoded:
    header: bytes
    pieces: list = field(default_factory=list)  # buffers, concatenated they are the body
    body_len: int = 0
    tensor_bytes: int = 0

    @property
    def frame_len(self) -> int:
        return len(self.header) + self.body_len + _CRC.size


class ActivationCodec:
    """Encodes tensors into frames and decodes frames, reusing its zstd contexts.

    Not thread-safe: use one codec per thread (its zstd contexts and counters are shared
    state). Any codec decodes any valid frame (frames are self-describing); the codec's
    ``max_frame_size`` bounds what it accepts.

    Args:
        config: a :class:`CodecConfig`, a spec string for :meth:`CodecConfig.parse`
            (``"q4+zstd1"``), or ``None`` for raw values without compression.
    """

    def __init__(self, config: CodecConfig | str | None = None) -> None:
        self._config = _as_config(config)
        level = self._config.zstd_level
        if self._config.auto_link_bps is not None:
            level = 1  # the zstd candidate of auto
        self._cctx = zstandard.ZstdCompressor(level=level) if level is not None else None
        self._dctx = zstandard.ZstdDecompressor()
        self.stats = CodecStats()
        #: With ``auto_link_bps``: the stage the last frame went through ("none", "lz4" or
        #: "zstd1"), and the measurements it was chosen from (``None`` before the first frame).
        self.stage_choice: str | None = None
        self.stage_speeds: dict[str, StageSpeed] | None = None
        self._frames_since_measure = 0
        self._busy = threading.Lock()  # held by the one call running (not for waiting)

    @contextlib.contextmanager
    def _exclusive(self, what: str):
        """One call at a time: a second thread entering while another runs fails cleanly."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                f"ActivationCodec.{what}() called while another thread is using this codec: an "
                "ActivationCodec is not thread-safe (its zstd contexts are shared); use one codec "
                "per thread"
            )
        try:
            yield
        finally:
            self._busy.release()

    def __repr__(self) -> str:
        return f"ActivationCodec({self._config.name!r})"

    @property
    def config(self) -> CodecConfig:
        return self._config

    @property
    def max_frame_size(self) -> int:
        return self._config.max_frame_size

    def reset_stats(self) -> None:
        self.stats = CodecStats()

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, *, seed: int = 0) -> bytes:
        """Encode ``x`` into one frame.

        Args:
            x: float32, float16 or bfloat16 tensor of any shape (up to 8 dims; 0-d and empty
                included), layout (non-contiguous, channels_last: encoded in row-major order)
                and device (CUDA tensors are cast / quantized on the device, then copied).
            seed: the stochastic-rounding seed (an int64, any integer type) for quantized
                wires; recorded in the frame when ``rounding="stochastic"`` (give a fresh one
                per step then), ignored otherwise (the frame stores 0).

        Returns:
            The frame, ``bytes``; ``decode(frame)`` gives back ``x`` (raw wire), ``x`` cast to
            the wire dtype and back (fp32/fp16/bf16 wires), or ``dequantize(quantize(x))``.
            A frame is bytes: ``x`` may require grad, but no gradient flows through a frame
            (for quantization-aware training see :func:`hierbench.ops.fake_quantize`; in split
            learning the gradient travels back as a frame of its own).

        Raises:
            TypeError: ``x`` is not a float32/float16/bfloat16 tensor.
            CodecError: ``x`` cannot be encoded: more than 8 dims, over ``max_frame_size``,
                or non-finite values on a quantized wire.
        """
        with self._exclusive("encode"):
            enc = self._encode(x, seed)
            crc = _crc32(enc.header)
            for piece in enc.pieces:
                crc = _crc32(piece, crc)
            frame = b"".join([enc.header, *enc.pieces, _CRC.pack(crc)])
            self._count_encoded(enc)
        return frame

    def encode_into(self, x: torch.Tensor, buffer, *, seed: int = 0) -> int:
        """Encode ``x`` into the start of a writable ``buffer``; return the frame's length.

        Same frame as :meth:`encode`, written without building an intermediate ``bytes``
        (for raw wires without zstd, the tensor's bytes are copied once, straight into
        ``buffer``). :meth:`frame_bound` gives a buffer size that is always enough.

        Raises:
            ValueError: ``buffer`` is smaller than the frame (nothing useful is written).
            TypeError, CodecError: as :meth:`encode`.
        """
        out = memoryview(buffer)
        if out.readonly:
            raise TypeError("buffer must be writable")
        out = out.cast("B") if out.format != "B" or out.ndim != 1 else out
        with self._exclusive("encode_into"):
            return self._encode_into(x, out, seed)

    def _encode_into(self, x: torch.Tensor, out: memoryview, seed: int) -> int:
        enc = self._encode(x, seed)
        n = enc.frame_len
        if out.nbytes < n:
            raise ValueError(f"buffer holds {out.nbytes} bytes, the frame needs {n}")
        pos = len(enc.header)
        out[:pos] = enc.header
        crc = _crc32(enc.header)
        for piece in enc.pieces:
            m = memoryview(piece).cast("B")
            out[pos : pos + m.nbytes] = m
            crc = _crc32(m, crc)
            pos += m.nbytes
        _CRC.pack_into(out, pos, crc)
        self._count_encoded(enc)
        return n

    def frame_bound(self, x: torch.Tensor) -> int:
        """An upper bound on the size of ``encode(x)``'s frame (to size an encode_into buffer)."""
        numel = x.numel()
        cfg = self._config
        if cfg.is_quantized:
            groups = cfg.quant.num_groups(tuple(x.shape))
            body = -(-numel * cfg.quant.bits // 8) + 8 * groups
        else:
            item = (x.dtype if cfg.wire == "raw" else _NAME_DTYPE[cfg.wire]).itemsize
            body = numel * item + (-(-numel // 8) if cfg.sparse else 0)
        if cfg.zstd_level is not None:
            body = _zstd_bound(body)
        elif cfg.lz4:
            body = _lz4_bound(body)
        elif cfg.auto_link_bps is not None:
            body = max(_zstd_bound(body), _lz4_bound(body))
        return HEADER_SIZE + 8 * x.dim() + body + _CRC.size

    def _count_encoded(self, enc: _Encoded) -> None:
        s = self.stats
        s.encoded_frames += 1
        s.encoded_tensor_bytes += enc.tensor_bytes
        s.encoded_frame_bytes += enc.frame_len
        s.last_frame_bytes = enc.frame_len
        s.last_tensor_bytes = enc.tensor_bytes

    def _encode(self, x: torch.Tensor, seed: int) -> _Encoded:
        _check_host()
        cfg = self._config
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _DTYPE_CODE:
            raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
        seed = _as_seed(seed)
        if x.dim() > MAX_NDIM:
            raise CodecError(f"cannot encode a {x.dim()}-dimensional tensor (at most {MAX_NDIM})")
        shape = tuple(x.shape)
        numel = x.numel()
        tensor_bytes = numel * x.element_size()
        limit = cfg.max_frame_size
        extent = math.prod(max(d, 1) for d in shape)
        if extent * x.element_size() > limit:
            raise CodecError(
                f"cannot encode a tensor of shape {shape} ({tensor_bytes} bytes of {x.dtype}): "
                f"over max_frame_size {limit}"
            )
        x = x.detach()  # a frame is bytes: no gradient crosses it (see ``encode``)
        flags = 0
        if cfg.is_quantized:
            pieces, aux_len, payload_len, fields = self._quantize(x, seed)
        else:
            wire_dtype = x.dtype if cfg.wire == "raw" else _NAME_DTYPE[cfg.wire]
            t = x.to(wire_dtype).contiguous().cpu()
            if cfg.sparse:
                flags |= _FLAG_SPARSE
            pieces, aux_len, payload_len = _encode_raw(t, cfg.sparse)
            fields = (_SCHEME_RAW, _DTYPE_CODE[wire_dtype], 0, 0, 0, 0, 0, 0)
        content = aux_len + payload_len
        if content > limit:
            raise CodecError(
                f"cannot encode: the body would be {content} bytes, over max_frame_size {limit}"
            )
        coder, stage = _CODER_NONE, "none"
        if cfg.auto_link_bps is not None:
            stage = self._auto_stage(pieces, content)
        elif cfg.lz4:
            stage = "lz4"
        elif self._cctx is not None:
            stage = "zstd"
        if stage != "none":
            coder = _CODER_LZ4 if stage == "lz4" else _CODER_ZSTD
            if content == 0:
                pieces = []
            else:
                src = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces = [lz4_compress(src) if stage == "lz4" else self._cctx.compress(src)]
        body_len = sum(memoryview(p).nbytes for p in pieces)
        header = _pack_header(flags, x.dtype, fields, coder, shape, aux_len, payload_len, body_len)
        enc = _Encoded(header, pieces, body_len, tensor_bytes)
        if enc.frame_len > limit:
            raise CodecError(
                f"cannot encode: the frame would be {enc.frame_len} bytes, over max_frame_size "
                f"{limit}"
            )
        return enc

    def _auto_stage(self, pieces: list, content: int) -> str:
        """The stage of this frame under ``auto_link_bps``: measured on this frame's body every
        :data:`AUTO_REMEASURE_EVERY` frames, the last choice in between."""
        if content == 0:
            return "none"
        if self.stage_speeds is None or self._frames_since_measure >= AUTO_REMEASURE_EVERY:
            src = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self.stage_speeds = measure_stages(src, repeats=2)
            self.stage_choice = choose_stage(self.stage_speeds, self._config.auto_link_bps)
            self._frames_since_measure = 0
        self._frames_since_measure += 1
        return "zstd" if self.stage_choice == "zstd1" else self.stage_choice

    def _quantize(self, x: torch.Tensor, seed: int):
        from hierbench.ops.quant import quantize

        qc = self._config.quant
        if qc.granularity == "channel" and not -x.dim() <= qc.channel_dim < x.dim():
            raise CodecError(
                f"cannot quantize per channel along dim {qc.channel_dim} of a "
                f"{x.dim()}-dimensional tensor"
            )
        try:
            q = quantize(x, qc, seed=seed)
        except ValueError as exc:  # non-finite input, or a range overflowing float32
            raise CodecError(f"cannot encode: {exc}") from exc
        scale = q.scale.cpu()
        offset = q.offset.cpu()
        payload = q.payload.cpu()
        if scale.numel():  # a range at the float32 limit: its frame would decode to inf
            problem = decoded_range_problem(scale, offset, qc.bits, x.dtype)
            if problem is not None:
                raise CodecError(f"cannot encode: {problem}; decoders refuse such a frame")
        groups = _num_groups(tuple(x.shape), qc.granularity, qc.group_size, qc.channel_dim)
        if scale.numel() != groups or payload.numel() != -(-x.numel() * qc.bits // 8):
            raise RuntimeError(  # an internal inconsistency between ops and codec, not input
                f"quantize returned {scale.numel()} groups / {payload.numel()} payload bytes, "
                f"the codec expects {groups} / {-(-x.numel() * qc.bits // 8)}"
            )
        pieces = [_le_buffer(scale), _le_buffer(offset), _le_buffer(payload)]
        group_size, channel_dim, seed_field = quant_fields(qc, x.dim(), seed)
        fields = (
            _SCHEME_QUANT,
            0,
            qc.bits,
            _GRAN_CODE[qc.granularity],
            _ROUND_CODE[qc.rounding],
            group_size,
            channel_dim,
            seed_field,
        )
        return pieces, 8 * groups, payload.numel(), fields

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, data, *, device: str | torch.device = "cpu") -> torch.Tensor:
        """Decode one frame into a new tensor of the frame's shape and dtype on ``device``.

        Every field is validated before anything is allocated (see :mod:`hierbench.codec.frame`).
        Quantized frames are dequantized on ``device`` (so only the packed codes travel to a
        GPU). Reads frame versions 1 and 2. The result is row-major contiguous whatever the
        encoded tensor's layout (a frame holds the logical shape, not strides): for a
        channels_last model, ``decode(frame).contiguous(memory_format=torch.channels_last)``.
        The exact semantics, bit for bit, are docs/frame-format.md's; the torch-free
        :mod:`hierbench.codec.reference_decoder` implements them independently.

        Args:
            data: the frame (``bytes``, ``bytearray`` or a C-contiguous ``memoryview``),
                exactly one frame long.
            device: where the result goes.

        Raises:
            CodecError: the frame is malformed, truncated, corrupted, over ``max_frame_size``
                or otherwise not a frame this encoder could have produced.
            TypeError: ``data`` is not a bytes-like object.
        """
        with self._exclusive("decode"):
            return self._decode(data, device)

    def _decode(self, data, device) -> torch.Tensor:
        header, body = _parse(data, self._config.max_frame_size)
        content = header.aux_bytes + header.payload_bytes
        if header.coder == "zstd" and content:
            body = memoryview(self._decompress(body, content))
        elif header.coder == "lz4" and content:
            body = memoryview(lz4_decompress(body, content))
        aux = body[: header.aux_bytes]
        payload = body[header.aux_bytes : content]
        if header.is_quantized:
            out = self._dequantize(header, aux, payload, device)
        else:
            out = _decode_raw(header, aux, payload).to(device)
        s = self.stats
        s.decoded_frames += 1
        s.decoded_frame_bytes += header.frame_bytes
        s.decoded_tensor_bytes += out.numel() * out.element_size()
        return out

    def _decompress(self, body: memoryview, content: int) -> bytes:
        if body[:4] != zstandard.FRAME_HEADER:
            raise _bad("body", "the coder is zstd but the body is not a zstd frame")
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise _bad("body", f"bad zstd frame header ({exc})") from exc
        if declared != content:
            what = "does not declare its size" if declared < 0 else f"declares {declared} bytes"
            raise _bad("body", f"the zstd frame {what}, the header says {content}")
        try:
            out = self._dctx.decompress(body, max_output_size=content, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise _bad("body", f"zstd: {exc}") from exc
        if len(out) != content:  # pragma: no cover - zstd enforces the declared size
            raise _bad("body", f"zstd gave {len(out)} bytes, expected {content}")
        return out

    def _dequantize(self, header: FrameHeader, aux, payload, device) -> torch.Tensor:
        from hierbench.ops.quant import QuantizedTensor, dequantize

        scale, offset, codes = _decode_quantized(header, aux, payload)
        q = QuantizedTensor(
            payload=codes.to(device),
            scale=scale.to(device),
            offset=offset.to(device),
            shape=header.shape,
            dtype=header.dtype,
            config=header.quant,
            seed=header.seed,
        )
        return dequantize(q)


def _as_seed(seed) -> int:
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)
    except TypeError:
        value = None
    if value is None or not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"seed must be an int64, got {seed!r}")
    return value


def encode(x: torch.Tensor, config: CodecConfig | str | None = None, *, seed: int = 0) -> bytes:
    """One-shot: ``ActivationCodec(config).encode(x, seed=seed)``. In a loop, reuse a codec."""
    return ActivationCodec(config).encode(x, seed=seed)


def decode(
    frame,
    *,
    device: str | torch.device = "cpu",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> torch.Tensor:
    """One-shot: decode a frame of any scheme (frames are self-describing).

    Equivalent to ``ActivationCodec(CodecConfig(max_frame_size=...)).decode(frame)``.
    """
    return ActivationCodec(CodecConfig(max_frame_size=max_frame_size)).decode(frame, device=device)
