"""Device profiles as data: the CSV format, its torch-free loader and writer.

A profile is what ``hierbench profile`` measured for one model on one device at one batch size:
one CSV row per block of the model (the cuts in order, then ``classifier``), preceded by ``#``
comment lines that describe the measurement (device, CPU model, threads, torch version, batch,
date, command, load average...) as ``# key: <JSON value>``.

Columns (times are seconds per batch, medians over repeats after warm-up; bytes are per batch):

=========================  =======================================================================
column                     meaning
=========================  =======================================================================
block, index, is_cut       block name, position, 1 if a cut follows it (0 for ``classifier``)
out_c, out_h, out_w        output shape per sample (empty for ``classifier``)
out_numel                  output values per sample (``classifier``: num_classes)
params, param_bytes        parameter count and bytes (fp32)
buffer_bytes               buffers (BatchNorm running statistics)
saved_bytes                tensors the block saves for backward in training mode (deduplicated)
fwd_s                      forward (``classifier``: + cross-entropy loss)
bwd_s                      backward, computing the gradient w.r.t. the block's input too
bwd_noinput_s              backward without the input gradient (edge block 0; the first cloud
                           block in hierarchical training, which receives detached activations)
step_s                     SGD step (momentum 0.9, weight decay 5e-4) over the block's parameters
exit_conv_s, exit_minimal_s  exit head at this cut: forward + loss + backward (input gradient
                           included: it flows into the edge) + its SGD step
head_mem_conv_bytes, ...   exit head memory: 3 × parameters (value, grad, momentum) + saved
edge_peak_conv_bytes, ...  peak memory of the edge part with that head (see ``memory_method``)
bytes_fp32, bytes_q8, ...  one codec frame with the batch's activations at this cut (no labels)
zstd_ratio_fp32, ...       measured zstd ratio of that wire (1.0 until measured: data-dependent)
=========================  =======================================================================

Metadata keys the runtime model relies on: ``model``, ``stem``, ``dataset``, ``num_classes``,
``input_size``, ``batch``, ``device``, ``t_full_s`` (one training step of the whole model: the
cloud-only baseline), ``input_bytes`` (the raw uint8 batch), and, where measured,
``edge_step_s`` (``{cut: {head: seconds}}``: one whole edge training step, exit head included,
timed as a unit). Everything else is description.

This module must not import torch: profiles are read wherever tables are made.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hierbench.errors import ConfigError
from hierbench.runtime.codec_bytes import WIRE_BITS
from hierbench.spec.profiles import profile_filename

__all__ = [
    "FORMAT",
    "HEAD_KINDS",
    "REQUIRED_META",
    "BlockProfile",
    "Profile",
    "load_profile",
    "profile_filename",
    "write_profile",
]

FORMAT = "hierbench-profile 1"
#: Exit-head kinds profiled at each cut (``hierbench.models.EXIT_HEADS``).
HEAD_KINDS = ("conv", "minimal")
REQUIRED_META = (
    "model",
    "stem",
    "dataset",
    "num_classes",
    "input_size",
    "batch",
    "device",
    "t_full_s",
    "input_bytes",
)

_INT = "int"
_FLOAT = "float"
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("block", "str"),
    ("index", _INT),
    ("is_cut", _INT),
    ("out_c", _INT),
    ("out_h", _INT),
    ("out_w", _INT),
    ("out_numel", _INT),
    ("params", _INT),
    ("param_bytes", _INT),
    ("buffer_bytes", _INT),
    ("saved_bytes", _INT),
    ("fwd_s", _FLOAT),
    ("bwd_s", _FLOAT),
    ("bwd_noinput_s", _FLOAT),
    ("step_s", _FLOAT),
    *((f"exit_{k}_s", _FLOAT) for k in HEAD_KINDS),
    *((f"head_mem_{k}_bytes", _INT) for k in HEAD_KINDS),
    *((f"edge_peak_{k}_bytes", _INT) for k in HEAD_KINDS),
    *((f"bytes_{w}", _INT) for w in WIRE_BITS),
    *((f"zstd_ratio_{w}", _FLOAT) for w in WIRE_BITS),
)
COLUMNS: tuple[str, ...] = tuple(name for name, _ in _COLUMNS)


@dataclass(frozen=True)
class BlockProfile:
    """One row of a profile. Cut-only fields are empty (``{}``/``None``) for the classifier."""

    block: str
    index: int
    is_cut: bool
    out_shape: tuple[int, int, int] | None
    out_numel: int
    params: int
    param_bytes: int
    buffer_bytes: int
    saved_bytes: int
    fwd_s: float
    bwd_s: float
    bwd_noinput_s: float
    step_s: float
    exit_s: Mapping[str, float] = field(default_factory=dict)
    head_mem_bytes: Mapping[str, int] = field(default_factory=dict)
    edge_peak_bytes: Mapping[str, int] = field(default_factory=dict)
    wire_bytes: Mapping[str, int] = field(default_factory=dict)
    zstd_ratio: Mapping[str, float] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "block": self.block,
            "index": self.index,
            "is_cut": int(self.is_cut),
            "out_numel": self.out_numel,
            "params": self.params,
            "param_bytes": self.param_bytes,
            "buffer_bytes": self.buffer_bytes,
            "saved_bytes": self.saved_bytes,
            "fwd_s": self.fwd_s,
            "bwd_s": self.bwd_s,
            "bwd_noinput_s": self.bwd_noinput_s,
            "step_s": self.step_s,
        }
        if self.out_shape is not None:
            row["out_c"], row["out_h"], row["out_w"] = self.out_shape
        for k in HEAD_KINDS:
            row[f"exit_{k}_s"] = self.exit_s.get(k)
            row[f"head_mem_{k}_bytes"] = self.head_mem_bytes.get(k)
            row[f"edge_peak_{k}_bytes"] = self.edge_peak_bytes.get(k)
        for w in WIRE_BITS:
            row[f"bytes_{w}"] = self.wire_bytes.get(w)
            row[f"zstd_ratio_{w}"] = self.zstd_ratio.get(w)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BlockProfile:
        shape = None
        if row.get("out_c") is not None:
            shape = (row["out_c"], row["out_h"], row["out_w"])

        def per(prefix: str, suffix: str, keys: Iterable[str]) -> dict:
            return {
                k: row[f"{prefix}{k}{suffix}"]
                for k in keys
                if row.get(f"{prefix}{k}{suffix}") is not None
            }

        return cls(
            block=row["block"],
            index=row["index"],
            is_cut=bool(row["is_cut"]),
            out_shape=shape,
            out_numel=row["out_numel"],
            params=row["params"],
            param_bytes=row["param_bytes"],
            buffer_bytes=row["buffer_bytes"],
            saved_bytes=row["saved_bytes"],
            fwd_s=row["fwd_s"],
            bwd_s=row["bwd_s"],
            bwd_noinput_s=row["bwd_noinput_s"],
            step_s=row["step_s"],
            exit_s=per("exit_", "_s", HEAD_KINDS),
            head_mem_bytes=per("head_mem_", "_bytes", HEAD_KINDS),
            edge_peak_bytes=per("edge_peak_", "_bytes", HEAD_KINDS),
            wire_bytes=per("bytes_", "", WIRE_BITS),
            zstd_ratio=per("zstd_ratio_", "", WIRE_BITS),
        )


@dataclass(frozen=True)
class Profile:
    """A measured profile: metadata and one :class:`BlockProfile` per block, in order.

    The sums the runtime model needs are methods here, so the model never indexes rows itself.
    """

    meta: Mapping[str, Any]
    blocks: tuple[BlockProfile, ...]
    path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        missing = [k for k in REQUIRED_META if k not in self.meta]
        if missing:
            raise ConfigError(f"profile {self.path or ''} lacks metadata {missing}")
        if not self.blocks or self.blocks[-1].is_cut:
            raise ConfigError(f"profile {self.path or ''}: the last block must be the classifier")

    # -- description -----------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return str(self.meta["model"])

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"])

    @property
    def batch(self) -> int:
        return int(self.meta["batch"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def input_size(self) -> int:
        return int(self.meta["input_size"])

    @property
    def device(self) -> str:
        return str(self.meta["device"])

    @property
    def t_full(self) -> float:
        """One training step of the whole model (the cloud-only baseline's compute)."""
        return float(self.meta["t_full_s"])

    @property
    def input_bytes(self) -> int:
        """The raw uint8 batch (``batch · 3 · H · W``)."""
        return int(self.meta["input_bytes"])

    @property
    def cuts(self) -> tuple[str, ...]:
        return tuple(b.block for b in self.blocks if b.is_cut)

    def describe(self) -> str:
        """``"resnet18/imagenet cifar10 batch 128 on cpu (Intel ..., 1 thread)"``."""
        m = self.meta
        where = m.get("device_name") or m["device"]
        threads = f", {m['threads']} thread{'s' if m.get('threads') != 1 else ''}"
        threads = threads if m["device"] == "cpu" and "threads" in m else ""
        return (
            f"{m['model']}/{m['stem']} {m['dataset']} batch {m['batch']} on {m['device']} "
            f"({where}{threads})"
        )

    # -- lookups ---------------------------------------------------------------------------------
    def block(self, name: str) -> BlockProfile:
        for b in self.blocks:
            if b.block == name:
                return b
        raise ConfigError(f"{self.model} profile has no block {name!r}; cuts: {self.cuts}")

    def _index(self, cut: str) -> int:
        b = self.block(cut)
        if not b.is_cut:
            raise ConfigError(f"{cut!r} is not a cut of {self.model}; cuts: {', '.join(self.cuts)}")
        return b.index

    def edge_blocks(self, cut: str) -> tuple[BlockProfile, ...]:
        """The blocks up to and including ``cut``."""
        return self.blocks[: self._index(cut) + 1]

    def cloud_blocks(self, cut: str) -> tuple[BlockProfile, ...]:
        """The blocks after ``cut``, classifier included."""
        return self.blocks[self._index(cut) + 1 :]

    def cut_numel(self, cut: str) -> int:
        """Activation values per batch at ``cut``."""
        return self.block(cut).out_numel * self.batch

    def zstd_ratio(self, cut: str, wire: str) -> float:
        return float(self.block(cut).zstd_ratio.get(wire, 1.0))

    # -- sums the runtime model uses -------------------------------------------------------------
    def edge_forward(self, cut: str) -> float:
        """t_eF: forward of the edge blocks."""
        return sum(b.fwd_s for b in self.edge_blocks(cut))

    def edge_backward(self, cut: str) -> float:
        """t_eB: backward of the edge blocks (block 0 needs no input gradient)."""
        blocks = self.edge_blocks(cut)
        return blocks[0].bwd_noinput_s + sum(b.bwd_s for b in blocks[1:])

    def edge_step(self, cut: str) -> float:
        """t_eU: optimizer step over the edge blocks' parameters."""
        return sum(b.step_s for b in self.edge_blocks(cut))

    def exit_cost(self, cut: str, head: str = "conv") -> float:
        """t_X: the exit head's forward + loss + backward + step at ``cut``."""
        b = self.block(cut)
        if head not in b.exit_s:
            raise ConfigError(f"profile has no {head!r} exit head at {cut}; heads: {HEAD_KINDS}")
        return float(b.exit_s[head])

    def edge_whole_step(self, cut: str, head: str = "conv") -> float | None:
        """One whole edge training step at ``cut`` with ``head`` (metadata ``edge_step_s``,
        measured as a unit when the profile was asked to), or None where it was not measured."""
        t = (self.meta.get("edge_step_s") or {}).get(cut, {}).get(head)
        return None if t is None else float(t)

    def cloud_forward(self, cut: str) -> float:
        """t_cF: forward of the cloud blocks, loss included."""
        return sum(b.fwd_s for b in self.cloud_blocks(cut))

    def cloud_backward(self, cut: str, *, input_grad: bool) -> float:
        """t_cB: backward of the cloud blocks; ``input_grad``: the gradient at the cut is
        needed (split learning sends it back), else the first cloud block skips it."""
        blocks = self.cloud_blocks(cut)
        first = blocks[0].bwd_s if input_grad else blocks[0].bwd_noinput_s
        return first + sum(b.bwd_s for b in blocks[1:])

    def cloud_step(self, cut: str) -> float:
        """t_cU: optimizer step over the cloud blocks' parameters."""
        return sum(b.step_s for b in self.cloud_blocks(cut))

    def edge_peak_bytes(self, cut: str, head: str = "conv") -> int:
        """Peak memory of the edge part (blocks up to ``cut`` + exit head) while training."""
        b = self.block(cut)
        if head not in b.edge_peak_bytes:
            raise ConfigError(f"profile has no edge memory for head {head!r} at {cut}")
        return int(b.edge_peak_bytes[head])

    def edge_param_bytes(self, cut: str) -> int:
        return sum(b.param_bytes for b in self.edge_blocks(cut))


def _parse_value(text: str, kind: str) -> Any:
    if text == "":
        return None
    if kind == _INT:
        return int(text)
    if kind == _FLOAT:
        return float(text)
    return text


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as CSV with ``# key: value`` metadata lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    buf.write(f"# {FORMAT}\n")
    for key, value in profile.meta.items():
        buf.write(f"# {key}: {json.dumps(value, sort_keys=True)}\n")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for b in profile.blocks:
        writer.writerow({k: _format_value(v) for k, v in b.to_row().items()})
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)
    return path


def load_profile(path: str | Path) -> Profile:
    """Read a profile written by :func:`write_profile` (plain Python: csv + json).

    A file is parsed once per version (path, modification time, size): reports and validations
    ask for the same few profiles many times.

    Raises:
        ConfigError: not a profile, an unknown format version, missing columns or metadata.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ConfigError(f"no profile at {path}") from exc
    return _load_version(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _load_version(name: str, _mtime_ns: int, _size: int) -> Profile:
    path = Path(name)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"no profile at {path}") from exc
    lines = text.splitlines()
    if not lines or lines[0].strip() != f"# {FORMAT}":
        raise ConfigError(f"{path} is not a {FORMAT!r} file (first line {lines[:1]})")
    meta: dict[str, Any] = {}
    body_start = len(lines)
    for i, line in enumerate(lines[1:], start=1):
        if not line.startswith("#"):
            body_start = i
            break
        key, sep, value = line[1:].strip().partition(":")
        if not sep:
            continue
        try:
            meta[key.strip()] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{i + 1}: bad metadata value for {key!r}: {exc}") from exc
    reader = csv.DictReader(lines[body_start:])
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ConfigError(f"{path}: missing columns {missing}")
    kinds = dict(_COLUMNS)
    blocks = []
    for n, raw in enumerate(reader, start=body_start + 2):
        try:
            row = {c: _parse_value(raw[c], kinds[c]) for c in COLUMNS}
        except ValueError as exc:
            raise ConfigError(f"{path}:{n}: {exc}") from exc
        blocks.append(BlockProfile.from_row(row))
    return Profile(meta=meta, blocks=tuple(blocks), path=str(path))
