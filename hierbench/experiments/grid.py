"""The experiment grid's types: :class:`Experiment` (one training run) and :class:`Preset` (a named
list of them).

An experiment is fully described by a :class:`~hierbench.methods.RunConfig` and where it runs:

- ``timing`` runs: edge and cloud as two processes pinned to one core each, over loopback TCP
  through the transfer engine's token bucket at the run's link. Their wall clock is what the
  runtime model is validated against and what the timeline plot shows.
- ``kernel`` runs: timing runs whose link rates are the kernel's (``tc tbf`` on a veth pair
  between two network namespaces; the engine adds only the latency): validation that does not
  rest on the engine's own token bucket. They need root; elsewhere they are skipped, and the
  manifest says why.
- ``accuracy`` runs: both roles in one process over an unshaped link, evaluated on the test split
  after every epoch: accuracy per method and cut, for the final classifier and the edge exit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hierbench.errors import ConfigError

KINDS = ("timing", "kernel", "accuracy")


@dataclass(frozen=True)
class Experiment:
    """One run of the grid: ``kind`` (``timing`` | ``accuracy``) and its run settings.

    ``config`` holds :class:`~hierbench.methods.RunConfig` fields (plain values, so that a preset
    can be listed without importing torch); :attr:`id` names the run record.
    """

    kind: str
    config: dict
    repeat: int = 0  # 1, 2, 3...: the same run again (timing points are measured >= 3 times)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown experiment kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not isinstance(self.repeat, int) or self.repeat < 0:
            raise ConfigError(f"repeat must be an int >= 0, got {self.repeat!r}")

    @property
    def id(self) -> str:
        c = self.config
        parts = [self.kind, c["method"].replace("_", "-"), c.get("model", "resnet18")]
        parts.append(c.get("dataset", "cifar10"))
        if c["method"] != "cloud_only":
            parts += [c.get("cut", "layer3"), c.get("codec", "q8")]
        if self.kind in ("timing", "kernel"):
            parts.append(str(c.get("link")))
            if c.get("batch_size", 128) != 128:
                parts.append(f"bs{c['batch_size']}")
            if c.get("edge_slowdown", 1.0) != 1.0:
                parts.append(f"k{c['edge_slowdown']:g}")
            parts.append(f"{c.get('batches_per_epoch')}b")
        else:
            parts.append(f"{c.get('epochs', 1)}ep")
        if self.repeat:
            parts.append(f"r{self.repeat}")
        return "-".join(p.replace("/", "_").replace("+", "_") for p in parts)

    def run_config(self):
        """The validated :class:`~hierbench.methods.RunConfig` (imports torch)."""
        from hierbench.methods import RunConfig

        return RunConfig.from_dict(self.config)


@dataclass(frozen=True)
class Preset:
    """A named grid: its experiments, a one-line budget, and the report's settings.

    ``report`` is passed to :func:`hierbench.report.write_report` through the manifest: which
    model/dataset configurations and links the runtime-model tables cover.
    """

    name: str
    description: str
    budget: str
    experiments: tuple[Experiment, ...]
    report: dict = field(default_factory=dict)
    foundation: bool = False  # also run the data / loader checks of reproduce.py
    calibrate: bool = False  # profile the timing runs' blocks right before the runs

    def __post_init__(self) -> None:
        ids = [e.id for e in self.experiments]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ConfigError(f"preset {self.name!r} has duplicate experiments: {dup}")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "budget": self.budget,
            "experiments": [
                {"id": e.id, "kind": e.kind, "repeat": e.repeat, "config": e.config}
                for e in self.experiments
            ],
            "report": self.report,
            "calibrate": self.calibrate,
        }
