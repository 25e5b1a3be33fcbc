# One file on purpose (~520 lines): the derivation of every formula (this docstring) sits beside
# the code that implements it, so a reader checks one against the other on one page.
r"""The runtime model: total training time of cloud-only, split learning and hierarchical training.

Pure functions of measured profiles (:mod:`hierbench.runtime.profiles`), a link
(:class:`~hierbench.spec.links.LinkSpec`), a codec setting
(:class:`~hierbench.runtime.codec_bytes.CodecSetting`), a cut and a number of batches. No torch:
tables regenerate from committed profiles anywhere.

Formulas (``../shared/PAPER.md``, "Reconstructed runtime model"; all times per batch)
--------------------------------------------------------------------------------------

Inputs, with ``k`` the edge slowdown and ``f`` the cloud factor (below)::

    t_eF, t_eB, t_eU = k · (edge forward, backward, SGD step of the blocks up to the cut)
    t_X              = k · (exit head forward + loss + backward + step)      hierarchical only
    t_cF, t_cB, t_cU = (cloud forward incl. loss, backward, step of the blocks after the cut) / f
                       t_cB includes the gradient at the cut in split learning only
    t_full           = (one training step of the whole model) / f
    t_enc = k · encode(cut activations),  t_dec = decode(...) / f     (codec rates are inputs)
    D0   = raw uint8 batch + labels (+ frame header)          bytes up, cloud-only
    D(s) = encoded cut activations + labels (+ frame header)  bytes up, split and hierarchical
    G(s) = gradient at the cut, encoded with the gradient codec (fp32 by default)   bytes down
    link(b, R) = 8·b / R + τ

Cloud-only (pipelined upload)::

    t_up = link(D0, R_up)
    T = (t_up + t_full) + (N − 1) · max(t_up, t_full)

Split learning (strictly sequential)::

    T = N · [t_eF + t_enc + link(D, R_up) + t_dec + t_cF + t_cB + t_cU
             + t_enc,G + link(G, R_down) + t_dec,G + t_eB + t_eU]

Hierarchical training (three-stage pipeline, no gradient comes back)::

    t_E = t_eF + t_X + t_eB + t_eU + t_enc
    t_L = link(D, R_up)
    t_C = t_dec + t_cF + t_cB + t_cU
    T = max[(t_eF + t_enc + t_L + t_C) + (N − 1) · max(t_E, t_L, t_C),  N · t_E]

The second term is the edge's own last event: the end-to-end clock stops at the last training
event on either side, and an edge that is the bottleneck finishes its last exit-head step and
backward (``t_X + t_eB + t_eU`` after its last upload) after the cloud's last step whenever
that tail is longer than ``t_L + t_C``.

``reduction = 1 − T_hier / T_baseline``. ``N`` is the number of batches trained (epochs ×
batches per epoch).

Conventions (:class:`Conventions`; printed next to every prediction)
------------------------------------------------------------------
- ``upload="every-epoch"`` (default, the online setting): every batch is uploaded every time it is
  used, so ``N = epochs · n`` for all three methods. ``"once"``: the *baseline's* raw data is
  uploaded once; its later epochs are cloud compute only:
  ``T_cloud = [(t_up + t_full) + (n − 1)·max(t_up, t_full)] + (epochs − 1)·n·t_full``.
  Activations are re-sent every epoch in either convention (the edge layers change every step).
- ``labels="byte"`` (one byte a sample) or ``"log2"`` (``ceil(log2 K)`` bits a sample).
- ``latency="pipelined"`` (default): the sender keeps messages in flight (the transfer engine's
  ring), so τ is paid once in the fill term and the period's link stage is ``8·b/R`` — what the
  measured two-process runs support (report table (c): error with τ per message beside it).
  ``"per-message"`` (PAPER.md's formula): τ counts in every period of the pipeline, as for a
  stop-and-wait sender; a row of the report's sensitivity table.
- ``frame_overhead=True``: each message carries the codec's frame header (``60 + 8·ndim`` bytes).

Assumptions (stated, not measured)
---------------------------------
- **Cloud factor** ``f``: when no cloud profile is given, the cloud runs the *edge* profile's
  blocks ``f`` times faster, ``f = DEFAULT_CLOUD_SPEEDUP = 10`` unless ``cloud_speedup`` says
  otherwise. This is an assumption standing in for a GPU profile (a V100/A100-class GPU is
  typically 10–100× faster than one CPU core on these networks). With a cloud profile, ``f = 1``
  unless ``cloud_speedup`` is given.
- **Edge slowdown** ``k`` (default 1): the edge is ``k`` times slower than the profiled device.
- Codec encode/decode rates are inputs
  (:class:`~hierbench.runtime.codec_bytes.CodecSetting`, default free); they are taken on the
  edge profile's device and scaled like compute (× k on the edge, ÷ f in the cloud). zstd
  ratios come from the profile (1.0 until measured).
- Block times add up (the profile's ``t_full_s`` beside the sum of its blocks shows how well)
  unless the profile timed the whole edge step at the cut (``edge_step_s``, what a calibrating
  ``reproduce`` measures): then the edge terms are scaled by
  ``s = whole / (t_eF + t_eB + t_eU + t_X)``, keeping their proportions (parts profiled one at
  a time, each repeated while its weights stay in cache, need not add up to the step a run
  takes). A partial last batch costs a full one, and data loading / augmentation is free.
- ``bottleneck`` is the largest of ``t_E, t_L, t_C`` — for split learning, which has no pipeline,
  it is the stage with the largest share of the sequential sum.

What a run record must provide to validate this model (later; no comparison code here)
-------------------------------------------------------------------------------------
For each run: the configuration (method, model, stem, dataset, cut, codec, exit head, batch,
batches per epoch, epochs, link rates and latency, threads per role, edge slowdown) and the
machine; per batch: edge timestamps (forward, exit, backward, step, encode: start/end), each
message's bytes and timestamps (enqueued, transmission start/end, delivered) in each direction,
cloud timestamps (decode, forward, backward, step: start/end); and the wall-clock from the first
edge forward to the cloud's last optimizer step. Validation then compares the medians of the
per-batch stage times with ``t_E, t_L, t_C`` of :class:`Prediction` and the wall-clock with
``total_s``, built from profiles taken with the run's thread counts and no cloud factor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from hierbench.errors import ConfigError
from hierbench.runtime.codec_bytes import (
    LABEL_CONVENTIONS,
    CodecSetting,
    encoded_bytes,
    frame_overhead_bytes,
    label_bytes,
    parse_codec,
)
from hierbench.runtime.profiles import HEAD_KINDS, Profile
from hierbench.spec.datasets import DATASET_SHAPES, TRAIN_SAMPLES
from hierbench.spec.links import LinkSpec, parse_link

__all__ = [
    "DATASET_SHAPES",
    "DEFAULT_CLOUD_SPEEDUP",
    "LATENCY_MODES",
    "METHODS",
    "TRAIN_SAMPLES",
    "UPLOAD_CONVENTIONS",
    "Conventions",
    "Prediction",
    "Scenario",
    "activation_bytes",
    "batches_per_epoch",
    "cloud_only",
    "cloud_only_time",
    "gradient_bytes",
    "hierarchical",
    "hierarchical_time",
    "link_time",
    "pipeline_time",
    "predict",
    "raw_bytes",
    "split_learning",
    "split_time",
]

METHODS = ("cloud-only", "split", "hierarchical")
UPLOAD_CONVENTIONS = ("every-epoch", "once")
LATENCY_MODES = ("per-message", "pipelined")
#: Cloud speed factor assumed when no cloud (GPU) profile exists: cloud = edge-CPU profile / 10.
DEFAULT_CLOUD_SPEEDUP = 10.0


# -- the formulas, on plain numbers -------------------------------------------------------------
def link_time(nbytes: float, rate_bps: float, latency_s: float) -> float:
    """``8·nbytes / rate + latency`` seconds (an infinite rate costs the latency only)."""
    return 8.0 * nbytes / rate_bps + latency_s


def pipeline_time(fill_s: float, period_s: float, n: int) -> float:
    """``fill + (n − 1) · period``: ``n`` items through a pipeline whose first item takes
    ``fill`` and whose slowest stage takes ``period``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return fill_s + (n - 1) * period_s


def cloud_only_time(t_up: float, t_full: float, n: int) -> float:
    """``(t_up + t_full) + (n − 1)·max(t_up, t_full)``."""
    return pipeline_time(t_up + t_full, max(t_up, t_full), n)


def split_time(per_batch_s: float, n: int) -> float:
    """``n · (sum of every step of one batch)``: nothing overlaps."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return n * per_batch_s


def hierarchical_time(t_eF: float, t_E: float, t_L: float, t_C: float, n: int) -> float:
    """``max[(t_eF + t_L + t_C) + (n − 1)·max(t_E, t_L, t_C), n·t_E]`` (fold encode/decode into
    the terms): the cloud's last step or the edge's last one, whichever ends later."""
    return max(pipeline_time(t_eF + t_L + t_C, max(t_E, t_L, t_C), n), n * t_E)


def batches_per_epoch(dataset: str, batch: int) -> int:
    """``ceil(train samples / batch)`` for a dataset in :data:`TRAIN_SAMPLES`."""
    if dataset not in TRAIN_SAMPLES:
        raise ConfigError(
            f"no training-set size known for {dataset!r} ({', '.join(TRAIN_SAMPLES)}): "
            "give n_batches"
        )
    return -(-TRAIN_SAMPLES[dataset] // batch)


# -- scenario and result ------------------------------------------------------------------------
@dataclass(frozen=True)
class Conventions:
    """The counting conventions (module docstring); print :meth:`lines` with every number."""

    upload: str = "every-epoch"
    labels: str = "byte"
    # Pipelined: what the measured runs support (the engine keeps messages in flight, so the
    # one-way latency is paid once per pipeline); PAPER.md's per-message reading is a row of
    # the report's sensitivity table.
    latency: str = "pipelined"
    frame_overhead: bool = True

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("upload", self.upload, UPLOAD_CONVENTIONS),
            ("labels", self.labels, LABEL_CONVENTIONS),
            ("latency", self.latency, LATENCY_MODES),
        ):
            if value not in valid:
                raise ConfigError(f"unknown {name} convention {value!r}; valid: {valid}")

    def lines(self) -> list[str]:
        return [
            f"upload: {self.upload} ("
            + (
                "every batch uploaded each time it is used"
                if self.upload == "every-epoch"
                else "baseline's raw data uploaded once, activations every epoch"
            )
            + ")",
            "labels: " + ("1 byte/sample" if self.labels == "byte" else "ceil(log2 K) bits/sample"),
            "latency: "
            + (
                "paid by every message, also in the pipeline's period (PAPER.md)"
                if self.latency == "per-message"
                else "paid once per pipeline (messages in flight)"
            ),
            f"frame header: {'counted' if self.frame_overhead else 'not counted'}",
            "raw input: uint8 pixels",
        ]


@dataclass(frozen=True)
class Scenario:
    """Everything but the cut and codec: devices, link, workload and conventions.

    Args:
        edge: the edge device's profile.
        link: a :class:`LinkSpec` or a string for :func:`~hierbench.spec.links.parse_link`.
        n_batches: batches per epoch (default: from :data:`TRAIN_SAMPLES` and the batch size).
        epochs: epochs trained.
        cloud: the cloud device's profile; ``None``: the edge profile ÷ ``cloud_speedup``.
        cloud_speedup: the cloud factor ``f``; ``None``: ``DEFAULT_CLOUD_SPEEDUP`` without a
            cloud profile, 1 with one.
        edge_slowdown: ``k``, edge compute (and edge-side codec) × k.
        head: exit-head kind (``"conv"`` or ``"minimal"``).
        grad_codec: the codec of the gradient split learning sends down (default fp32).
    """

    edge: Profile
    link: LinkSpec | str
    n_batches: int | None = None
    epochs: int = 1
    cloud: Profile | None = None
    cloud_speedup: float | None = None
    edge_slowdown: float = 1.0
    head: str = "conv"
    conventions: Conventions = field(default_factory=Conventions)
    grad_codec: CodecSetting = field(default_factory=lambda: CodecSetting("fp32"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "link", parse_link(self.link))
        if self.n_batches is None:
            object.__setattr__(
                self, "n_batches", batches_per_epoch(self.edge.dataset, self.edge.batch)
            )
        if not (isinstance(self.n_batches, int) and self.n_batches >= 1):
            raise ValueError(f"n_batches must be an int >= 1, got {self.n_batches!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs!r}")
        if self.cloud_speedup is not None and not self.cloud_speedup > 0:
            raise ValueError(f"cloud_speedup must be > 0, got {self.cloud_speedup}")
        if not self.edge_slowdown > 0:
            raise ValueError(f"edge_slowdown must be > 0, got {self.edge_slowdown}")
        if self.head not in HEAD_KINDS:
            raise ConfigError(f"unknown exit head {self.head!r}; valid: {HEAD_KINDS}")
        if self.cloud is not None:
            for key in ("model", "num_classes", "input_size", "batch"):
                if self.cloud.meta[key] != self.edge.meta[key]:
                    raise ConfigError(
                        f"edge and cloud profiles differ in {key}: "
                        f"{self.edge.meta[key]!r} vs {self.cloud.meta[key]!r}"
                    )
            if self.cloud.cuts != self.edge.cuts:
                raise ConfigError("edge and cloud profiles have different cuts")

    @property
    def cloud_profile(self) -> Profile:
        """The profile cloud times are read from (the edge's when there is no cloud profile)."""
        return self.cloud if self.cloud is not None else self.edge

    @property
    def cloud_factor(self) -> float:
        """``f``: cloud times are the cloud profile's divided by this."""
        if self.cloud_speedup is not None:
            return float(self.cloud_speedup)
        return 1.0 if self.cloud is not None else DEFAULT_CLOUD_SPEEDUP

    @property
    def total_batches(self) -> int:
        return self.epochs * self.n_batches  # type: ignore[operator]

    def with_link(self, link: LinkSpec | str) -> Scenario:
        return replace(self, link=parse_link(link))

    def lines(self) -> list[str]:
        """The scenario's inputs and assumptions, one per line, for reports."""
        out = [f"edge: {self.edge.describe()}" + (f", slowdown k={self.edge_slowdown:g}")]
        if self.cloud is None:
            out.append(
                f"cloud: ASSUMED {self.cloud_factor:g}× faster than the edge profile "
                "(no cloud profile; cloud time = edge-profile time / factor)"
            )
        else:
            out.append(f"cloud: {self.cloud.describe()}, factor {self.cloud_factor:g}")
        out.append(f"link: {self.link.name} ({self.link.describe()})")  # type: ignore[union-attr]
        out.append(
            f"workload: {self.epochs} epoch(s) × {self.n_batches} batches of {self.edge.batch}; "
            f"exit head {self.head}; split-learning gradient codec {self.grad_codec.name}"
        )
        out.extend(self.conventions.lines())
        return out


@dataclass(frozen=True)
class Prediction:
    """One method's predicted training time and what it is made of.

    ``t_E, t_L, t_C`` are the per-batch edge, link and cloud stage times (codec time included;
    ``t_L`` counts every message of a batch, both directions, latency included unless the
    latency convention is ``"pipelined"``, where it is the period's link time). ``fill_s`` is the
    first batch's time through the pipeline, ``period_s`` the steady-state time per batch;
    ``parts`` has every term by name.
    """

    method: str
    cut: str | None
    codec: str | None
    total_s: float
    t_E: float
    t_L: float
    t_C: float
    fill_s: float
    period_s: float
    bottleneck: str
    bytes_up: int
    bytes_down: int
    n_batches: int
    parts: Mapping[str, float] = field(default_factory=dict)

    def reduction_vs(self, baseline: Prediction) -> float:
        """``1 − T / T_baseline`` (positive: this method is faster)."""
        return 1.0 - self.total_s / baseline.total_s

    def per_epoch_s(self, epochs: int) -> float:
        return self.total_s / epochs


def _bottleneck(t_E: float, t_L: float, t_C: float) -> str:
    return max((t_E, "edge"), (t_L, "link"), (t_C, "cloud"), key=lambda p: p[0])[1]


# -- bytes ----------------------------------------------------------------------------------------
def _labels(sc: Scenario) -> int:
    return label_bytes(sc.edge.batch, sc.edge.num_classes, sc.conventions.labels)


def raw_bytes(sc: Scenario) -> int:
    """D0: the raw uint8 batch + labels (+ frame header), bytes."""
    frame = frame_overhead_bytes(4) if sc.conventions.frame_overhead else 0
    return sc.edge.input_bytes + _labels(sc) + frame


def activation_bytes(sc: Scenario, cut: str, codec: CodecSetting | str) -> int:
    """D(s): the encoded activations at ``cut`` + labels, bytes per batch."""
    codec = parse_codec(codec)
    act = encoded_bytes(
        sc.edge.cut_numel(cut),
        codec,
        zstd_ratio=sc.edge.zstd_ratio(cut, codec.wire),
        frame=sc.conventions.frame_overhead,
    )
    return act + _labels(sc)


def gradient_bytes(sc: Scenario, cut: str) -> int:
    """G(s): the gradient at ``cut`` under ``sc.grad_codec``, bytes per batch."""
    return encoded_bytes(
        sc.edge.cut_numel(cut),
        sc.grad_codec,
        zstd_ratio=sc.edge.zstd_ratio(cut, sc.grad_codec.wire),
        frame=sc.conventions.frame_overhead,
    )


# -- per-method predictions ---------------------------------------------------------------------
def _edge_times(sc: Scenario, cut: str) -> dict[str, float]:
    """The edge's terms; scaled to the whole edge step where the profile timed one (``s`` below)."""
    k = sc.edge_slowdown
    e = sc.edge
    t = {
        "t_eF": e.edge_forward(cut),
        "t_eB": e.edge_backward(cut),
        "t_eU": e.edge_step(cut),
        "t_X": e.exit_cost(cut, sc.head),
    }
    whole = e.edge_whole_step(cut, sc.head)
    s = whole / sum(t.values()) if whole and sum(t.values()) > 0 else 1.0
    return {name: k * s * v for name, v in t.items()}


def _cloud_times(sc: Scenario, cut: str, *, input_grad: bool) -> dict[str, float]:
    f = sc.cloud_factor
    c = sc.cloud_profile
    return {
        "t_cF": c.cloud_forward(cut) / f,
        "t_cB": c.cloud_backward(cut, input_grad=input_grad) / f,
        "t_cU": c.cloud_step(cut) / f,
    }


def cloud_only(sc: Scenario) -> Prediction:
    """The baseline: raw batches up, the whole model trained in the cloud, upload pipelined."""
    link: LinkSpec = sc.link  # type: ignore[assignment]
    n = sc.n_batches
    d0 = raw_bytes(sc)
    t_full = sc.cloud_profile.t_full / sc.cloud_factor
    t_up = link.up_time(d0)
    t_up_period = t_up - (link.latency_s if sc.conventions.latency == "pipelined" else 0.0)
    fill = t_up + t_full
    period = max(t_up_period, t_full)
    if sc.conventions.upload == "once":
        total = pipeline_time(fill, period, n) + (sc.epochs - 1) * n * t_full  # type: ignore[operator]
    else:
        total = pipeline_time(fill, period, sc.total_batches)
    return Prediction(
        method="cloud-only",
        cut=None,
        codec="raw-uint8",
        total_s=total,
        t_E=0.0,
        t_L=t_up_period,
        t_C=t_full,
        fill_s=fill,
        period_s=period,
        bottleneck=_bottleneck(0.0, t_up_period, t_full),
        bytes_up=d0,
        bytes_down=0,
        n_batches=sc.total_batches,
        parts={"t_up": t_up, "t_full": t_full, "D0_bytes": d0},
    )


def split_learning(sc: Scenario, cut: str, codec: CodecSetting | str) -> Prediction:
    """Vanilla split learning: activations up, gradient down, strictly sequential."""
    codec = parse_codec(codec)
    link: LinkSpec = sc.link  # type: ignore[assignment]
    numel = sc.edge.cut_numel(cut)
    k, f = sc.edge_slowdown, sc.cloud_factor
    d, g = activation_bytes(sc, cut, codec), gradient_bytes(sc, cut)
    parts: dict[str, float] = {
        **_edge_times(sc, cut),
        **_cloud_times(sc, cut, input_grad=True),
        "t_enc": k * codec.encode_time(numel),
        "t_dec": codec.decode_time(numel) / f,
        "t_enc_grad": sc.grad_codec.encode_time(numel) / f,
        "t_dec_grad": k * sc.grad_codec.decode_time(numel),
        "t_up": link.up_time(d),
        "t_down": link.down_time(g),
    }
    del parts["t_X"]  # no early exit in split learning
    t_E = parts["t_eF"] + parts["t_eB"] + parts["t_eU"] + parts["t_enc"] + parts["t_dec_grad"]
    t_L = parts["t_up"] + parts["t_down"]
    t_C = parts["t_dec"] + parts["t_cF"] + parts["t_cB"] + parts["t_cU"] + parts["t_enc_grad"]
    per_batch = t_E + t_L + t_C
    return Prediction(
        method="split",
        cut=cut,
        codec=codec.name,
        total_s=split_time(per_batch, sc.total_batches),
        t_E=t_E,
        t_L=t_L,
        t_C=t_C,
        fill_s=per_batch,
        period_s=per_batch,
        bottleneck=_bottleneck(t_E, t_L, t_C),
        bytes_up=d,
        bytes_down=g,
        n_batches=sc.total_batches,
        parts={**parts, "D_bytes": d, "G_bytes": g},
    )


def hierarchical(sc: Scenario, cut: str, codec: CodecSetting | str) -> Prediction:
    """Hierarchical training: edge (with its exit), link and cloud as a three-stage pipeline."""
    codec = parse_codec(codec)
    link: LinkSpec = sc.link  # type: ignore[assignment]
    numel = sc.edge.cut_numel(cut)
    d = activation_bytes(sc, cut, codec)
    parts: dict[str, float] = {
        **_edge_times(sc, cut),
        **_cloud_times(sc, cut, input_grad=False),
        "t_enc": sc.edge_slowdown * codec.encode_time(numel),
        "t_dec": codec.decode_time(numel) / sc.cloud_factor,
        "t_up": link.up_time(d),
    }
    t_E = parts["t_eF"] + parts["t_X"] + parts["t_eB"] + parts["t_eU"] + parts["t_enc"]
    t_L = parts["t_up"] - (link.latency_s if sc.conventions.latency == "pipelined" else 0.0)
    t_C = parts["t_dec"] + parts["t_cF"] + parts["t_cB"] + parts["t_cU"]
    fill = parts["t_eF"] + parts["t_enc"] + parts["t_up"] + t_C
    period = max(t_E, t_L, t_C)
    return Prediction(
        method="hierarchical",
        cut=cut,
        codec=codec.name,
        # the cloud's last step, or the edge's last exit step if that ends later
        total_s=max(pipeline_time(fill, period, sc.total_batches), sc.total_batches * t_E),
        t_E=t_E,
        t_L=t_L,
        t_C=t_C,
        fill_s=fill,
        period_s=period,
        bottleneck=_bottleneck(t_E, t_L, t_C),
        bytes_up=d,
        bytes_down=0,
        n_batches=sc.total_batches,
        parts={**parts, "D_bytes": d},
    )


def predict(sc: Scenario, cut: str, codec: CodecSetting | str) -> dict[str, Prediction]:
    """All three methods for one cut and codec: ``{"cloud-only": ..., "split": ..., ...}``."""
    return {
        "cloud-only": cloud_only(sc),
        "split": split_learning(sc, cut, codec),
        "hierarchical": hierarchical(sc, cut, codec),
    }
