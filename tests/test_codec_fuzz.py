"""Fuzzing hierbench.codec's decoder: >= 10,000 seeded random mutations of valid frames.

Mutations: bit flips, byte sets, truncations, extensions, splices of two frames (raw, and with
the CRC recomputed), header-field rewrites and shape rewrites with the CRC recomputed (half of
them with the section lengths fixed up to what the decoder expects, so the deeper checks run),
and body corruptions with the CRC recomputed (zstd streams, scales, masks, codes).

Property: every decode either returns a tensor (then the frame's header validates, the tensor
has the declared shape and dtype, an unmutated frame decodes to its original value, and a raw
uncompressed frame is canonical: re-encoding the tensor gives the same bytes; a quantized one
holds no NaN; at most 8 dims) or raises
``CodecError``; never another exception, never a crash, never an allocation beyond
``max_frame_size`` (a hostile size that got through would surface as torch's RuntimeError or a
MemoryError, which fail the test). The same codec decodes every sample frame correctly after the
run (its zstd context survives errors).

The engine is shared with ``scripts/fuzz_codec.py`` (long runs by hand).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import resource
import struct
import time
import zlib
from dataclasses import dataclass, field

import torch

from hierbench.codec import FRAME_VERSION, ActivationCodec, CodecConfig, read_header
from hierbench.errors import CodecError
from hierbench.ops import QuantConfig

MAX_FRAME_SIZE = 1 << 24  # every buffer the decoder may allocate stays below 16 MiB
ITERATIONS = int(os.environ.get("HIERBENCH_FUZZ_ITERATIONS", "30000"))

# name, offset, struct format: an independent reading of the spec table
FIELDS = [
    ("magic", 0, "4s"),
    ("version", 4, "B"),
    ("flags", 5, "B"),
    ("dtype", 6, "B"),
    ("scheme", 7, "B"),
    ("wire", 8, "B"),
    ("bits", 9, "B"),
    ("granularity", 10, "B"),
    ("rounding", 11, "B"),
    ("coder", 12, "B"),
    ("ndim", 13, "B"),
    ("reserved", 14, "H"),
    ("group_size", 16, "I"),
    ("channel_dim", 20, "i"),
    ("seed", 24, "q"),
    ("aux_len", 32, "Q"),
    ("payload_len", 40, "Q"),
    ("body_len", 48, "Q"),
]
_LIMITS = {"B": 8, "H": 16, "I": 32, "Q": 64}
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 9, 16, 31, 32, 33, 64, 127, 128, 255, 256, 2**31 - 1, 2**31]
INTERESTING += [2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -2, -9, -(2**63)]
WIRE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DIMS = [0, 1, 2, 3, 5, 7, 40, 64, 255, 2**16, 2**31, 2**40, 2**62, 2**63 - 1, -1, -(2**63)]


def sample_frames() -> list[tuple[str, bytes, torch.Tensor]]:
    """(label, frame, expected decode) for several schemes, shapes and dtypes."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "relu_2x3x40": torch.relu(torch.randn(2, 3, 40, generator=g)),
        "odd_5": torch.randn(5, generator=g),
        "scalar": torch.tensor(-1.25),
        "empty_0x3": torch.empty(0, 3),
        "ndim8": torch.randn((1, 2, 1, 1, 1, 3, 1, 1), generator=g),
        "bf16_4x33": torch.randn(4, 33, generator=g).to(torch.bfloat16),
        "fp16_relu_7x9": torch.relu(torch.randn(7, 9, generator=g)).half(),
    }
    configs = [
        CodecConfig.parse("raw"),
        CodecConfig.parse("raw+zstd1"),
        CodecConfig.parse("fp16"),
        CodecConfig.parse("bf16+zstd3"),
        CodecConfig.parse("fp32+sparse"),
        CodecConfig.parse("fp16+sparse+zstd1"),
        CodecConfig.parse("q8"),
        CodecConfig.parse("q8+zstd1"),
        CodecConfig.parse("q4", quant=QuantConfig(bits=4, group_size=32)),
        CodecConfig.parse(
            "q4+zstd1", quant=QuantConfig(bits=4, granularity="channel", channel_dim=-1)
        ),
        CodecConfig.parse(
            "q2+zstd1", quant=QuantConfig(bits=2, granularity="tensor", rounding="stochastic")
        ),
    ]
    out = []
    for cfg in configs:
        codec = ActivationCodec(dataclasses.replace(cfg, max_frame_size=MAX_FRAME_SIZE))
        for name, x in tensors.items():
            if cfg.quant is not None and cfg.quant.granularity == "channel" and x.dim() == 0:
                continue
            frame = codec.encode(x, seed=len(out))
            out.append((f"{cfg.name}/{name}", frame, codec.decode(frame)))
    return out


def _header_len(frame: bytes) -> int:
    return 56 + 8 * min(frame[13], 64) if len(frame) > 13 else 0


def _with_crc(data: bytes) -> bytes:
    """``data`` (a frame without its CRC) plus a correct CRC."""
    return data + struct.pack("<I", zlib.crc32(data))


def _pack_field(fmt: str, value: int) -> bytes:
    if fmt == "4s":
        return value
    bits = _LIMITS.get(fmt, 32 if fmt == "i" else 64)
    if fmt in ("i", "q"):  # signed: wrap into range
        value = (value + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)
    else:
        value %= 2**bits
    return struct.pack("<" + fmt, value)


def _expected_lengths(h: dict, shape: tuple[int, ...]) -> tuple[int, int]:
    """The aux and payload lengths a decoder expects for these fields (best effort)."""
    numel = 1
    for d in shape:
        numel *= max(d, 0)
    item = {1: 4, 2: 2, 3: 2}.get(h["wire"], 4)
    if h["scheme"] == 1:
        bits = h["bits"] or 8
        gran = h["granularity"]
        if gran == 1:
            groups = 1
        elif gran == 2 and shape:
            groups = max(shape[h["channel_dim"] % len(shape)], 0)
        else:
            groups = -(-numel // max(h["group_size"], 1))
        return 8 * groups, -(-numel * bits // 8)
    if h["flags"] & 1:
        return -(-numel // 8), h["payload_len"]
    return 0, numel * item


@dataclass
class Mutator:
    rng: random.Random
    frames: list[tuple[str, bytes, torch.Tensor]]

    def mutate(self) -> tuple[str, bytes, int]:
        """(description, mutated frame, index of the base frame)."""
        i = self.rng.randrange(len(self.frames))
        frame = self.frames[i][1]
        kind = self.rng.choices(
            ["flip", "set", "truncate", "extend", "splice", "field", "shape", "body", "none"],
            weights=[12, 8, 6, 5, 6, 35, 12, 15, 1],
        )[0]
        return kind, getattr(self, "_" + kind)(frame), i

    def _none(self, frame: bytes) -> bytes:
        return frame

    def _flip(self, frame: bytes) -> bytes:
        data = bytearray(frame)
        for _ in range(self.rng.choice([1, 1, 1, 2, 3, 8])):
            pos = self.rng.randrange(len(data))
            data[pos] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def _set(self, frame: bytes) -> bytes:
        data = bytearray(frame)
        for _ in range(self.rng.choice([1, 1, 2, 4])):
            data[self.rng.randrange(len(data))] = self.rng.choice([0, 1, 0x7F, 0x80, 0xFF])
        return bytes(data) if self.rng.random() < 0.5 else _with_crc(bytes(data[:-4]))

    def _truncate(self, frame: bytes) -> bytes:
        return frame[: self.rng.randrange(len(frame))]

    def _extend(self, frame: bytes) -> bytes:
        extra = self.rng.randbytes(self.rng.choice([1, 2, 4, 16, 100]))
        if self.rng.random() < 0.5:
            return frame + extra
        # inside the CRC: grow the body, with a correct CRC (a length mismatch must be caught)
        return _with_crc(frame[:-4] + extra)

    def _splice(self, frame: bytes) -> bytes:
        other = self.rng.choice(self.frames)[1]
        a = self.rng.randrange(len(frame) + 1)
        b = self.rng.randrange(len(other) + 1)
        spliced = frame[:a] + other[b:]
        if self.rng.random() < 0.5 and len(spliced) > 4:
            return _with_crc(spliced[:-4])
        return spliced

    def _field(self, frame: bytes) -> bytes:
        data = bytearray(frame[:-4])
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            _name, offset, fmt = self.rng.choice(FIELDS)
            if fmt == "4s":
                value = self.rng.choice([b"HBAC"[::-1], b"\0\0\0\0", b"HBAD", b"hbac"])
            else:
                (current,) = struct.unpack_from("<" + fmt, data, offset)
                value = self.rng.choice(
                    [
                        self.rng.choice(INTERESTING),
                        current + self.rng.choice([-8, -1, 1, 2, 8]),
                        current * 2,
                        self.rng.getrandbits(self.rng.choice([8, 16, 32, 64])),
                    ]
                )
            data[offset : offset + struct.calcsize(fmt)] = _pack_field(fmt, value)
        if self.rng.random() < 0.5:
            self._fix_lengths(data)
        return _with_crc(bytes(data))

    def _shape(self, frame: bytes) -> bytes:
        ndim = frame[13]
        head, rest = frame[:56], frame[56 + 8 * ndim : -4]
        numel = 1
        for d in struct.unpack_from(f"<{ndim}q", frame, 56):
            numel *= d
        choice = self.rng.random()
        if choice < 0.3 and numel > 0:  # the same numel, another shape: often a valid frame
            shape = [numel]
            while self.rng.random() < 0.5 and len(shape) < 9:
                shape.insert(self.rng.randrange(len(shape) + 1), 1)
        else:
            shape = [self.rng.choice(DIMS) for _ in range(self.rng.randrange(10))]
        data = bytearray(head + struct.pack(f"<{len(shape)}q", *shape) + rest)
        data[13] = len(shape) if self.rng.random() < 0.9 else self.rng.randrange(256)
        if self.rng.random() < 0.5:
            self._fix_lengths(data)
        return _with_crc(bytes(data))

    def _body(self, frame: bytes) -> bytes:
        start = _header_len(frame)
        data = bytearray(frame[:-4])
        if len(data) <= start:
            return self._field(frame)
        for _ in range(self.rng.choice([1, 1, 2, 5])):
            pos = self.rng.randrange(start, len(data))
            if self.rng.random() < 0.5:
                data[pos] ^= 1 << self.rng.randrange(8)
            else:  # plant a float: NaN, inf, negative, huge
                value = self.rng.choice([float("nan"), float("inf"), -1.0, 3e38, 0.0, -0.0, 1e-45])
                if pos + 4 <= len(data):
                    struct.pack_into("<f", data, pos, value)
        return _with_crc(bytes(data))

    def _fix_lengths(self, data: bytearray) -> None:
        """Set aux/payload (and, uncompressed, body) lengths to what the decoder would expect,
        so that a rewritten field is caught by its own check, not by a length check."""
        if len(data) < 56:
            return
        h = {name: struct.unpack_from("<" + fmt, data, off)[0] for name, off, fmt in FIELDS}
        ndim = min(h["ndim"], 9)
        if len(data) < 56 + 8 * ndim:
            return
        shape = struct.unpack_from(f"<{ndim}q", data, 56)
        try:
            aux, payload = _expected_lengths(h, shape)
        except (ZeroDivisionError, IndexError):
            return
        struct.pack_into("<Q", data, 32, aux % 2**64)
        struct.pack_into("<Q", data, 40, payload % 2**64)
        if h["coder"] == 0:
            struct.pack_into("<Q", data, 48, (aux + payload) % 2**64)


@dataclass
class FuzzReport:
    iterations: int = 0
    decoded: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rss_growth_mib: float = 0.0  # growth of the process's peak RSS during the run

    def summary(self) -> str:
        lines = [
            f"{self.iterations} mutations in {self.seconds:.1f} s: {self.decoded} decoded, "
            f"{sum(self.rejected.values())} rejected with CodecError, "
            f"{len(self.failures)} failures; peak RSS grew by {self.rss_growth_mib:.0f} MiB",
            "mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())),
            "rejected by: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items(), key=lambda t: -t[1])),
        ]
        return "\n".join(lines + self.failures[:20])


def _field_of(exc: CodecError) -> str:
    text = str(exc)
    if text.startswith("invalid frame: "):
        return text[len("invalid frame: ") :].split(":", 1)[0]
    return text.split(":", 1)[0]


def fuzz(iterations: int, seed: int, *, progress=None) -> FuzzReport:
    """Run ``iterations`` seeded mutations through one reused codec; see the module docstring."""
    rng = random.Random(seed)
    frames = sample_frames()
    codec = ActivationCodec(CodecConfig(max_frame_size=MAX_FRAME_SIZE))
    canonical = {}  # raw, uncompressed frames re-encode to the same bytes
    report = FuzzReport()
    mutator = Mutator(rng, frames)
    peak_before = _peak_rss_mib()
    start = time.perf_counter()
    for it in range(iterations):
        kind, data, base = mutator.mutate()
        report.kinds[kind] += 1
        report.iterations += 1
        try:
            y = codec.decode(data)
        except CodecError as exc:
            report.rejected[_field_of(exc)] += 1
        except BaseException as exc:
            report.failures.append(
                f"iteration {it} (seed {seed}, {kind} of {frames[base][0]}): "
                f"{type(exc).__name__}: {exc} -- frame {data.hex()}"
            )
            if isinstance(exc, KeyboardInterrupt):
                raise
        else:
            report.decoded += 1
            try:
                problem = _check_decoded(data, y, frames[base], canonical)
            except Exception as exc:
                problem = f"checking the decoded tensor raised {type(exc).__name__}: {exc}"
            if problem:
                report.failures.append(
                    f"iteration {it} (seed {seed}, {kind} of {frames[base][0]}): {problem} "
                    f"-- frame {data.hex()}"
                )
        if progress is not None and (it + 1) % progress[0] == 0:
            progress[1](it + 1, report)
    for label, frame, expected in frames:  # the codec still works after all those errors
        y = codec.decode(frame)
        if not (y.dtype == expected.dtype and torch.equal(_bits(y), _bits(expected))):
            report.failures.append(f"{label}: wrong decode after fuzzing")
    report.seconds = time.perf_counter() - start
    report.rss_growth_mib = _peak_rss_mib() - peak_before
    return report


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.element_size() == 4 else torch.int16)


def _check_decoded(data: bytes, y: torch.Tensor, base, canonical: dict) -> str | None:
    _label, frame, expected = base
    h = read_header(data, max_frame_size=MAX_FRAME_SIZE)
    if tuple(y.shape) != h.shape or y.dtype != h.dtype:
        return f"decoded {tuple(y.shape)} {y.dtype}, header says {h.shape} {h.dtype}"
    if y.dim() > 8:
        return f"decoded a {y.dim()}-dimensional tensor (frames allow 8)"
    if h.is_quantized and bool(y.isnan().any()):
        return "a quantized frame decoded to NaN (finite scales and offsets cannot give NaN)"
    if data == frame and not torch.equal(_bits(y), _bits(expected)):
        return "an unmutated frame decoded to another value"
    # (a version-1 frame re-encodes as version 2, so only frames of the current version)
    current = h.version == FRAME_VERSION
    if current and not h.is_quantized and h.coder == "none" and WIRE_DTYPES[h.wire] == y.dtype:
        if h.sparse not in canonical:
            canonical[h.sparse] = ActivationCodec(
                CodecConfig(sparse=h.sparse, max_frame_size=MAX_FRAME_SIZE)
            )
        if canonical[h.sparse].encode(y) != bytes(data):
            return "a raw frame that decodes is not the canonical encoding of its tensor"
    return None


def test_fuzz_decode_never_misbehaves():
    report = fuzz(ITERATIONS, seed=20240501)
    print("\n" + report.summary())
    assert report.iterations == ITERATIONS >= 10_000 or "HIERBENCH_FUZZ_ITERATIONS" in os.environ
    assert not report.failures, report.summary()
    # never a huge allocation: a valid frame here is < 16 MiB, so is every buffer decoding makes
    assert report.rss_growth_mib < 8 * MAX_FRAME_SIZE / 2**20, report.summary()
    # the mutations reach deep: many distinct checks fire, and some mutants are valid frames
    assert len(report.rejected) >= 20, report.rejected
    assert report.decoded > 0
