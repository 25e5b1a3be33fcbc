"""One run's settings: a frozen, validated dataclass that round-trips through JSON.

Both roles build everything from the same :class:`RunConfig` (the edge sends it to the cloud as
JSON when they connect), so model, cut, optimizer, seed and data order are the same on both sides
and across methods.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from hierbench.errors import ConfigError
from hierbench.spec.datasets import INPUT_SHAPES
from hierbench.spec.records import METHODS

EVAL_MODES = ("epoch", "end", "none")
#: Numeric settings of training and evaluation (both roles and the oracle apply the same one):
#: ``fp32``; ``bf16`` = ``torch.autocast("cpu", torch.bfloat16)`` around forward passes and
#: losses (fp32 master weights, optimizer and codec input); ``-cl`` = channels_last memory format
#: for the model and its inputs.
PRECISIONS = ("fp32", "fp32-cl", "bf16", "bf16-cl")


def _number(name: str, value, lo: float, *, above: bool = False, integer: bool = False) -> None:
    """A finite number >= ``lo`` (> ``lo`` with ``above``), or a ConfigError naming the setting:
    NaN and infinities are refused here, before they reach training."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, numbers.Integral)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > lo if above else v >= lo)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{name} must be {kind} {'>' if above else '>='} {lo:g}, got {value!r}")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(
            f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}"
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Defaults follow ``../shared/PAPER.md``'s conventions.

    Attributes:
        method: ``cloud_only`` | ``split`` | ``hierarchical``.
        model, stem, cut, exit_head: see :mod:`hierbench.models` (``cut`` is ignored by cloud_only).
        dataset, data_root, limit_per_class: see :func:`hierbench.data.load_dataset`.
        codec: activation codec spec (``fp32``, ``q8``, ``q4+zstd1``...; :mod:`hierbench.codec`).
        grad_codec: codec of the gradient split learning sends down.
        link: link preset or rate spec (``3g``, ``20mbit/5ms``), or ``None`` for unshaped.
        batches_per_epoch: cap per epoch (``None``: the whole training set, drop_last).
        edge_slowdown: the edge idles so that its compute takes ``k`` times as long (k >= 1),
            emulating an edge weaker than this CPU.
        eval: ``epoch`` (test accuracy after every epoch), ``end``, or ``none``; evaluation
            traffic uses an unshaped control channel and its time is recorded separately.
        eval_samples: test images used per evaluation (``None``: the whole test split).
        outages: link-down intervals ``(start_s, end_s)`` from the start of the run.
        slots: transfer-engine ring slots (2 = double buffering).
        backlog_bytes: how many encoded bytes the hierarchical edge may queue while the link is
            slow or down before it waits (the edge keeps training meanwhile).
        checkpoint_every: each role with a checkpoint folder checkpoints every this many steps
            (0: never); the cloud acknowledges its checkpoints, the edge keeps what is not
            acknowledged (in memory and in its own checkpoint). A killed cloud or edge restarted
            with ``--resume`` continues the run (protocol: :mod:`hierbench.methods.checkpoint`). For
            the pipelined methods (cloud_only, hierarchical). With ``eval`` "epoch" both roles
            also checkpoint at every epoch boundary, the edge once it holds that epoch's
            evaluation results (it waits for them there): a resumed run then repeats no
            evaluation and equals an uninterrupted one.
        precision: see :data:`PRECISIONS`.
        val_holdout: carve this many images (a fixed draw, the same for every seed and method:
            :func:`hierbench.data.holdout_split`) out of the training set; training uses the rest,
            and evaluation uses them instead of the test split (for tuning). 0: train on the
            whole training set, evaluate on the test split.
        aux_exit_weight: cloud_only only. 0: standard training. w > 0: the deep-supervision
            control: the same exit head as hierarchical training at ``cut``, trained end to end
            with the whole model on ``final loss + w * exit loss`` (gradients of both flow
            through the layers before the cut); the exit's accuracy is reported too.
    """

    method: str = "hierarchical"
    model: str = "resnet18"
    stem: str = "imagenet"
    dataset: str = "cifar10"
    data_root: str | None = None
    limit_per_class: int | None = None
    cut: str = "layer3"
    exit_head: str = "conv"
    codec: str = "q8"
    grad_codec: str = "fp32"
    link: str | None = "3g"
    batch_size: int = 128
    epochs: int = 1
    batches_per_epoch: int | None = None
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    seed: int = 0
    edge_slowdown: float = 1.0
    threads_edge: int = 1
    threads_cloud: int = 1
    eval: str = "epoch"
    eval_samples: int | None = 1000
    outages: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    slots: int = 2
    backlog_bytes: int = 256 << 20
    checkpoint_every: int = 0
    precision: str = "fp32"
    val_holdout: int = 0
    aux_exit_weight: float = 0.0

    def __post_init__(self) -> None:
        from hierbench.models import EXIT_HEADS, MODELS, STEMS

        _choice("method", self.method, METHODS)
        _choice("model", self.model, MODELS)
        _choice("stem", self.stem, STEMS)
        _choice("dataset", self.dataset, tuple(INPUT_SHAPES))
        _choice("exit head", self.exit_head, EXIT_HEADS)
        _choice("eval mode", self.eval, EVAL_MODES)
        _number("lr", self.lr, 0.0, above=True)
        _number("momentum", self.momentum, 0.0)
        _number("weight_decay", self.weight_decay, 0.0)
        _number("edge_slowdown", self.edge_slowdown, 1.0)
        _number("backlog_bytes", self.backlog_bytes, 1, integer=True)
        _number("seed", self.seed, 0, integer=True)
        for name in ("batch_size", "epochs", "slots", "threads_edge", "threads_cloud"):
            _number(name, getattr(self, name), 1, integer=True)
        if self.batches_per_epoch is not None:
            _number("batches_per_epoch", self.batches_per_epoch, 1, integer=True)
        if self.eval_samples is not None:
            _number("eval_samples", self.eval_samples, 1, integer=True)
        if self.limit_per_class is not None:
            _number("limit_per_class", self.limit_per_class, 1, integer=True)
        _number("checkpoint_every", self.checkpoint_every, 0, integer=True)
        for name in ("batch_size", "epochs", "slots", "threads_edge", "threads_cloud"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        _choice("precision", self.precision, PRECISIONS)
        if isinstance(self.val_holdout, bool) or int(self.val_holdout) != self.val_holdout:
            raise ConfigError(f"val_holdout must be an integer, got {self.val_holdout!r}")
        if self.val_holdout < 0:
            raise ConfigError(f"val_holdout must be >= 0, got {self.val_holdout}")
        if not 0.0 <= float(self.aux_exit_weight) < float("inf"):
            raise ConfigError(
                f"aux_exit_weight must be a finite number >= 0, got {self.aux_exit_weight!r}"
            )
        if self.aux_exit_weight and self.method != "cloud_only":
            raise ConfigError(
                "aux_exit_weight (the deep-supervision control) applies to method cloud_only "
                f"only, not {self.method!r} (hierarchical always trains its exit)"
            )
        if self.edge_slowdown < 1.0:
            raise ValueError(f"edge_slowdown must be >= 1, got {self.edge_slowdown}")
        outages = tuple((float(a), float(b)) for a, b in self.outages)
        for a, b in outages:
            if not (math.isfinite(a) and math.isfinite(b) and 0 <= a < b):
                raise ValueError(f"outage ({a}, {b}) must satisfy 0 <= start < end")
        object.__setattr__(self, "outages", outages)

    @property
    def bf16(self) -> bool:
        """Whether forward passes run under bf16 autocast."""
        return self.precision.startswith("bf16")

    @property
    def channels_last(self) -> bool:
        """Whether models and inputs use the channels_last memory format."""
        return self.precision.endswith("-cl")

    @property
    def has_exit(self) -> bool:
        """Whether the run trains an exit head (hierarchical, or the deep-supervision control)."""
        return self.method == "hierarchical" or self.aux_exit_weight > 0

    @property
    def num_classes(self) -> int:
        return INPUT_SHAPES[self.dataset][0]

    @property
    def input_size(self) -> int:
        return INPUT_SHAPES[self.dataset][1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["outages"] = [list(o) for o in self.outages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown run settings {unknown}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        if "outages" in d:
            d["outages"] = tuple(tuple(o) for o in d["outages"])
        return cls(**d)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)
