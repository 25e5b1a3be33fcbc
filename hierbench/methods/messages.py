"""The messages edge and cloud roles exchange: a small fixed header, labels, then a payload.

Nothing here unpickles or evaluates anything. Tensors travel as :mod:`hierbench.codec` frames
(self-describing, CRC-checked) or, for raw uint8 image batches, as a shape plus bytes; control
messages are UTF-8 JSON objects. Every field is validated before anything is allocated, and a
malformed message raises :class:`~hierbench.errors.CodecError` naming the field.

Layout (little-endian)::

    offset size  field
    0      4     magic b"HBMS"
    4      1     version (1)
    5      1     kind (Kind)
    6      2     label width in bytes: 0 (no labels), 1 (K <= 256) or 2 (K <= 65536)
    8      8     step (int64): the global batch index, or -1
    16     4     epoch (uint32)
    20     4     number of labels (uint32)
    24     8     payload length (uint64)
    32     ...   labels (count x width bytes), then the payload

Labels are counted as one byte per sample for K <= 256 classes (two above): the convention the
run records state. Integrity of the whole message is the transport's job (the TCP transport
checks a CRC32 per frame); the codec frame inside carries its own CRC32 as well.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass

import torch

from hierbench.errors import CodecError

MAGIC = b"HBMS"
VERSION = 1
_HEADER = struct.Struct("<4sBBHqIIQ")
HEADER_BYTES = _HEADER.size
MAX_LABELS = 1 << 20
MAX_JSON_BYTES = 64 << 20
_RAW = struct.Struct("<IIII")  # B, C, H, W of a raw uint8 image batch


class Kind(enum.IntEnum):
    RAW = 1  # uint8 image batch (cloud-only upload)
    ACT = 2  # encoded cut activations (split, hierarchical)
    GRAD = 3  # encoded gradient at the cut (split, downlink)
    END = 4  # no more training messages
    CONTROL = 5  # JSON object (config, evaluation, records, acknowledgements)
    PARAMS = 6  # flat fp32 edge-model state as a codec frame (fleet FedAvg: hierbench.fleet)


@dataclass
class RoleMessage:
    """One message between the edge and cloud roles (not the engine's received
    :class:`hierbench.transfer.Message`, which carries such a message's bytes)."""

    kind: Kind
    step: int = -1
    epoch: int = 0
    labels: torch.Tensor | None = None  # int64 (B,)
    payload: bytes | memoryview = b""

    @property
    def nbytes(self) -> int:
        width = 0 if self.labels is None else _label_width(self.labels)
        n = 0 if self.labels is None else self.labels.numel()
        return HEADER_BYTES + n * width + len(self.payload)


def _label_width(labels: torch.Tensor) -> int:
    if labels.numel() == 0:
        return 1
    top = int(labels.max())
    if int(labels.min()) < 0 or top >= 1 << 16:
        raise ValueError(f"labels must be in [0, 65536), got range [{labels.min()}, {top}]")
    return 1 if top < 256 else 2


def pack(msg: RoleMessage) -> bytes:
    """Serialise a message (header, labels, payload) into one buffer."""
    labels = b""
    width = n = 0
    if msg.labels is not None and msg.labels.numel() > 0:
        width = _label_width(msg.labels)
        n = msg.labels.numel()
        dtype = torch.uint8 if width == 1 else torch.int16
        lab = msg.labels.to(torch.int32)
        if width == 2:
            lab = torch.where(lab >= 1 << 15, lab - (1 << 16), lab)  # store as little-endian u16
        labels = lab.to(dtype).numpy().tobytes()
    header = _HEADER.pack(
        MAGIC, VERSION, int(msg.kind), width, msg.step, msg.epoch, n, len(msg.payload)
    )
    return b"".join((header, labels, msg.payload))


def unpack(data: bytes | bytearray | memoryview) -> RoleMessage:
    """Parse and validate a message; raises :class:`CodecError` on anything malformed."""
    view = memoryview(data)
    if view.nbytes < HEADER_BYTES:
        raise CodecError(
            f"message: {view.nbytes} bytes is shorter than the {HEADER_BYTES}-byte header"
        )
    magic, version, kind, width, step, epoch, n, length = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise CodecError(f"message: bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise CodecError(f"message: unsupported version {version}, expected {VERSION}")
    try:
        kind = Kind(kind)
    except ValueError:
        raise CodecError(f"message: unknown kind {kind}") from None
    if width not in (0, 1, 2) or (width == 0) != (n == 0):
        raise CodecError(f"message: label width {width} inconsistent with {n} labels")
    if n > MAX_LABELS:
        raise CodecError(f"message: {n} labels exceeds the limit {MAX_LABELS}")
    expected = HEADER_BYTES + n * width + length
    if expected != view.nbytes:
        raise CodecError(
            f"message: length fields say {expected} bytes, the message has {view.nbytes}"
        )
    labels = None
    if width:
        raw = view[HEADER_BYTES : HEADER_BYTES + n * width]
        dtype = torch.uint8 if width == 1 else torch.int16
        labels = torch.frombuffer(bytearray(raw), dtype=dtype).to(torch.int64)
        if width == 2:
            labels = labels % (1 << 16)
    payload = view[HEADER_BYTES + n * width :]
    return RoleMessage(kind, step, epoch, labels, payload)


def pack_raw_images(images: torch.Tensor) -> bytes:
    """uint8 (B, C, H, W) -> shape + bytes (the cloud-only upload: raw pixels, nothing else)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(
            f"raw images must be uint8 (B, C, H, W), got {images.dtype} {images.dim()}-d"
        )
    return _RAW.pack(*images.shape) + images.contiguous().numpy().tobytes()


def unpack_raw_images(payload: bytes | memoryview, batch: int) -> torch.Tensor:
    view = memoryview(payload)
    if view.nbytes < _RAW.size:
        raise CodecError("raw images: payload shorter than its shape header")
    b, c, h, w = _RAW.unpack_from(view)
    if b != batch:
        raise CodecError(f"raw images: {b} images but {batch} labels")
    if c not in (1, 3) or not (0 < h <= 4096 and 0 < w <= 4096):
        raise CodecError(f"raw images: implausible shape ({b}, {c}, {h}, {w})")
    if view.nbytes != _RAW.size + b * c * h * w:
        raise CodecError(
            f"raw images: shape ({b}, {c}, {h}, {w}) needs {b * c * h * w} bytes, "
            f"payload has {view.nbytes - _RAW.size}"
        )
    return torch.frombuffer(bytearray(view[_RAW.size :]), dtype=torch.uint8).view(b, c, h, w)


def pack_json(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def pack_control(obj: dict) -> bytes:
    """A whole ``CONTROL`` message carrying the JSON object ``obj``."""
    return pack(RoleMessage(Kind.CONTROL, payload=pack_json(obj)))


def unpack_json(payload: bytes | memoryview) -> dict:
    view = memoryview(payload)
    if view.nbytes > MAX_JSON_BYTES:
        raise CodecError(f"control message: {view.nbytes} bytes exceeds {MAX_JSON_BYTES}")
    try:
        obj = json.loads(bytes(view).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"control message: not UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CodecError(f"control message: expected a JSON object, got {type(obj).__name__}")
    return obj
