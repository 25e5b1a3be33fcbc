"""One run's settings: a frozen, validated dataclass that round-trips through JSON.

Both roles build everything from the same :class:`RunConfig` (the edge sends it to the cloud as
JSON when they connect), so model, cut, optimizer, seed and data order are the same on both sides
and across methods.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hierbench.errors import ConfigError
from hierbench.spec.datasets import INPUT_SHAPES

METHODS = ("cloud_only", "split", "hierarchical")
EVAL_MODES = ("epoch", "end", "none")


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
            the pipelined methods (cloud_only, hierarchical), with ``eval`` "end" or "none".
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

    def __post_init__(self) -> None:
        from hierbench.models import EXIT_HEADS, MODELS, STEMS

        _choice("method", self.method, METHODS)
        _choice("model", self.model, MODELS)
        _choice("stem", self.stem, STEMS)
        _choice("dataset", self.dataset, tuple(INPUT_SHAPES))
        _choice("exit head", self.exit_head, EXIT_HEADS)
        _choice("eval mode", self.eval, EVAL_MODES)
        for name in ("batch_size", "epochs", "slots", "threads_edge", "threads_cloud"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.checkpoint_every and self.method == "split":
            raise ConfigError(
                "checkpoint/resume supports cloud_only and hierarchical: split learning is "
                "synchronous (the edge waits on every gradient); restart a split run instead"
            )
        if self.checkpoint_every and self.eval == "epoch":
            raise ConfigError(
                "with checkpoint_every, eval must be 'end' or 'none' (evaluation traffic in flight "
                "when the cloud restarts is not replayed)"
            )
        if self.edge_slowdown < 1.0:
            raise ValueError(f"edge_slowdown must be >= 1, got {self.edge_slowdown}")
        outages = tuple((float(a), float(b)) for a, b in self.outages)
        for a, b in outages:
            if not 0 <= a < b:
                raise ValueError(f"outage ({a}, {b}) must satisfy 0 <= start < end")
        object.__setattr__(self, "outages", outages)

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
