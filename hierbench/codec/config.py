"""How a codec encodes: :class:`CodecConfig`, and its CLI spelling (``"q4+zstd1"``)."""

from __future__ import annotations

import contextlib
import operator
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zstandard

from hierbench.codec.frame import DEFAULT_MAX_FRAME_SIZE, MAX_NDIM
from hierbench.errors import ConfigError

if TYPE_CHECKING:
    from hierbench.ops.quant import QuantConfig


#: Wire names: ``raw`` keeps the input dtype; ``fp*``/``bf16`` cast; ``q*`` quantize.
WIRES = ("raw", "fp32", "fp16", "bf16", "q8", "q4", "q2")
ZSTD_MIN_LEVEL = -(1 << 17)  # zstd's fastest "negative" level (ZSTD_minCLevel)
ZSTD_MAX_LEVEL = zstandard.MAX_COMPRESSION_LEVEL  # 22

_PARSE_RE = re.compile(r"^zstd(-?\d+)?$")


@dataclass(frozen=True)
class CodecConfig:
    """How :class:`ActivationCodec` encodes. Frozen; validated on construction.

    Attributes:
        wire: ``"raw"`` (values in the input's dtype), ``"fp32"`` / ``"fp16"`` / ``"bf16"``
            (values cast to that dtype; decoding casts back to the input's dtype), or ``"q8"`` /
            ``"q4"`` / ``"q2"`` (quantized; decodes to exactly ``dequantize(quantize(x))``).
        quant: for ``q*`` wires, the :class:`~hierbench.ops.QuantConfig` (its ``bits`` must
            match the wire); ``None`` means ``QuantConfig(bits=N)`` (per-group, 128, nearest).
            Must be ``None`` for the other wires.
        zstd_level: ``None`` for no entropy coder, else a zstd level (1..22, or negative for
            zstd's faster modes; 0 is rejected as ambiguous). Integer fields accept any integer
            type (``numpy.int64``...), stored as ``int``.
        sparse: raw wires only: store a bitmask of the non-zero elements and the non-zero values
            (pays on post-ReLU activations; see docs/frame-format.md, "Sparsity").
        lz4: an LZ4 block stage instead of zstd (faster, compresses less; needs the optional
            python package ``lz4``: :mod:`hierbench.codec.stages`).
        auto_link_bps: choose the stage per frame among none / lz4 / zstd level 1 for a link
            of this many bits/s: the one whose encode + bytes / rate + decode is shortest, from
            stage speeds measured on the frames themselves (:mod:`hierbench.codec.stages`).
            Excludes ``zstd_level`` and ``lz4``.
        max_frame_size: bound, in bytes, on the frame, on its decompressed body and on the
            decoded tensor, enforced when encoding and when decoding.

    ``CodecConfig.parse("q4+zstd1")`` builds one from the CLI spelling.
    """

    wire: str = "raw"
    quant: QuantConfig | None = None
    zstd_level: int | None = None
    sparse: bool = False
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    lz4: bool = False
    auto_link_bps: float | None = None

    def __post_init__(self) -> None:
        for name in ("zstd_level", "max_frame_size"):
            # numpy (or any) integers are stored as int; anything else is reported below
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                with contextlib.suppress(TypeError):
                    object.__setattr__(self, name, operator.index(value))
        if self.wire not in WIRES:
            raise ConfigError(
                f"unknown codec wire {self.wire!r}; valid choices: {', '.join(WIRES)}"
            )
        if self.is_quantized:
            from hierbench.ops.quant import QuantConfig

            bits = int(self.wire[1:])
            if self.quant is None:
                object.__setattr__(self, "quant", QuantConfig(bits=bits))
            elif not isinstance(self.quant, QuantConfig):
                raise ConfigError(
                    f"CodecConfig.quant must be a QuantConfig, got {type(self.quant).__name__}"
                )
            elif self.quant.bits != bits:
                raise ConfigError(
                    f"CodecConfig.quant.bits is {self.quant.bits} but the wire is {self.wire!r}"
                )
            if not -MAX_NDIM <= self.quant.channel_dim < MAX_NDIM:
                raise ConfigError(
                    f"CodecConfig.quant.channel_dim must be in [-{MAX_NDIM}, {MAX_NDIM - 1}], "
                    f"got {self.quant.channel_dim}"
                )
            if self.sparse:
                raise ConfigError(
                    "sparse applies to raw wires only (on quantized activations the mask costs "
                    "more than it saves; see docs/frame-format.md)"
                )
        elif self.quant is not None:
            raise ConfigError(f"CodecConfig.quant is only for q8/q4/q2 wires, not {self.wire!r}")
        if self.zstd_level is not None and (
            type(self.zstd_level) is not int
            or not ZSTD_MIN_LEVEL <= self.zstd_level <= ZSTD_MAX_LEVEL
            or self.zstd_level == 0
        ):
            raise ConfigError(
                f"CodecConfig.zstd_level must be None or a non-zero int in "
                f"[{ZSTD_MIN_LEVEL}, {ZSTD_MAX_LEVEL}], got {self.zstd_level!r}"
            )
        if type(self.lz4) is not bool:
            raise ConfigError(f"CodecConfig.lz4 must be a bool, got {self.lz4!r}")
        if self.auto_link_bps is not None and (
            isinstance(self.auto_link_bps, bool)
            or not isinstance(self.auto_link_bps, int | float)
            or not 0 < self.auto_link_bps < float("inf")
        ):
            raise ConfigError(
                "CodecConfig.auto_link_bps must be None or a finite link rate > 0 in bit/s, "
                f"got {self.auto_link_bps!r}"
            )
        stages = [
            n
            for n, on in (
                ("zstd_level", self.zstd_level is not None),
                ("lz4", self.lz4),
                ("auto_link_bps", self.auto_link_bps is not None),
            )
            if on
        ]
        if len(stages) > 1:
            raise ConfigError(
                f"CodecConfig: {' and '.join(stages)} both choose the compression stage; "
                "give one (zstd_level, lz4=True or auto_link_bps)"
            )
        if self.lz4:
            from hierbench.codec.stages import lz4_block

            lz4_block()  # ConfigError naming the missing package, now rather than at encode
        if type(self.sparse) is not bool:
            raise ConfigError(f"CodecConfig.sparse must be a bool, got {self.sparse!r}")
        if type(self.max_frame_size) is not int or not 64 <= self.max_frame_size <= 1 << 62:
            raise ConfigError(
                f"CodecConfig.max_frame_size must be an int in [64, 2**62], "
                f"got {self.max_frame_size!r}"
            )

    @property
    def is_quantized(self) -> bool:
        return self.wire.startswith("q")

    @property
    def name(self) -> str:
        """The CLI spelling, e.g. ``"q4+zstd1"`` (it does not show a non-default QuantConfig)."""
        parts = [self.wire]
        if self.sparse:
            parts.append("sparse")
        if self.zstd_level is not None:
            parts.append(f"zstd{self.zstd_level}")
        if self.lz4:
            parts.append("lz4")
        if self.auto_link_bps is not None:
            parts.append("auto")
        return "+".join(parts)

    @classmethod
    def parse(cls, spec: str, **overrides) -> CodecConfig:
        """Parse ``<wire>[+sparse][+zstd[<level>] | +lz4 | +auto]``, e.g. ``"fp16"``,
        ``"q4+zstd1"``, ``"q4+lz4"``.

        ``wire`` is one of :data:`WIRES`; ``+zstd`` alone means level 1; ``+zstd-3`` is a fast
        negative level; ``+auto`` needs ``auto_link_bps=`` among the overrides. Case and
        surrounding spaces are ignored. ``overrides`` are passed to the constructor
        (``quant=``, ``max_frame_size=``, ``auto_link_bps=``).

        Raises:
            ConfigError: an unknown wire or suffix (the message lists the valid choices), a
                repeated suffix, or an invalid level.
        """
        if not isinstance(spec, str):
            raise TypeError(f"codec spec must be a str, got {type(spec).__name__}")
        tokens = [t.strip() for t in spec.strip().lower().split("+")]
        wire, suffixes = tokens[0], tokens[1:]
        if wire not in WIRES:
            raise ConfigError(
                f"unknown codec {wire!r} in {spec!r}; valid choices: {', '.join(WIRES)}, "
                "optionally followed by +sparse (raw wires) and/or +zstd<level>"
            )
        kwargs: dict = {"wire": wire}
        for token in suffixes:
            match = _PARSE_RE.match(token)
            key = "zstd_level" if match else token if token in ("sparse", "lz4", "auto") else None
            if key is None:
                raise ConfigError(
                    f"unknown codec suffix {token!r} in {spec!r}; valid choices: +sparse, "
                    "+zstd, +zstd<level> (e.g. +zstd1, +zstd-3), +lz4, +auto"
                )
            if key in kwargs:
                raise ConfigError(f"codec suffix {token!r} repeated in {spec!r}")
            kwargs[key] = (int(match.group(1) or 1)) if match else True
        if kwargs.pop("auto", False) and overrides.get("auto_link_bps") is None:
            raise ConfigError(
                f"codec {spec!r}: +auto chooses the stage for a link rate: pass auto_link_bps="
            )
        kwargs.update(overrides)
        return cls(**kwargs)


def _as_config(config: CodecConfig | str | None) -> CodecConfig:
    if config is None:
        return CodecConfig()
    if isinstance(config, str):
        return CodecConfig.parse(config)
    if not isinstance(config, CodecConfig):
        raise TypeError(f"config must be a CodecConfig or str, got {type(config).__name__}")
    return config
