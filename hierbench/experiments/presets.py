"""The experiment grid: presets of runs, run one after another into ``results/<preset>/runs/``.

A preset (:data:`PRESETS`) is a list of :class:`Experiment` — one training run each, fully
described by a :class:`~hierbench.methods.RunConfig` and where it runs:

- ``timing`` runs: edge and cloud as two processes pinned to one core each, over loopback TCP
  through the transfer engine's token bucket at the run's link. Their wall clock is what the
  runtime model is validated against and what the timeline plot shows.
- ``accuracy`` runs: both roles in one process over an unshaped link, evaluated on the test split
  after every epoch: accuracy per method and cut, for the final classifier and the edge exit.

:func:`run_preset` runs a preset's experiments in order and writes one run record per experiment
(``runs/<id>.json``, written atomically when the run finishes) and ``manifest.json`` (the preset,
the command, the machine, each run's status and time). It is resumable: an experiment whose
record exists with the same config is skipped. An existing folder is never replaced without
``overwrite=True`` and never extended without ``resume=True``.

Tables and plots are :mod:`hierbench.report`'s job: it reads the records and the device profiles
only (no torch), so they regenerate anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hierbench.errors import ConfigError
from hierbench.runtime.table import PAPER_SETTINGS

__all__ = [
    "PRESETS",
    "Experiment",
    "Preset",
    "get_preset",
    "run_preset",
]

KINDS = ("timing", "accuracy")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Experiment:
    """One run of the grid: ``kind`` (``timing`` | ``accuracy``) and its run settings.

    ``config`` holds :class:`~hierbench.methods.RunConfig` fields (plain values, so that a preset
    can be listed without importing torch); :attr:`id` names the run record.
    """

    kind: str
    config: dict

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown experiment kind {self.kind!r}; valid: {', '.join(KINDS)}")

    @property
    def id(self) -> str:
        c = self.config
        parts = [self.kind, c["method"].replace("_", "-"), c.get("model", "resnet18")]
        parts.append(c.get("dataset", "cifar10"))
        if c["method"] != "cloud_only":
            parts += [c.get("cut", "layer3"), c.get("codec", "q8")]
        if self.kind == "timing":
            parts.append(str(c.get("link")))
            parts.append(f"{c.get('batches_per_epoch')}b")
        else:
            parts.append(f"{c.get('epochs', 1)}ep")
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
                {"id": e.id, "kind": e.kind, "config": e.config} for e in self.experiments
            ],
            "report": self.report,
        }


# -- the presets ----------------------------------------------------------------------------------
_BASE = {"model": "resnet18", "stem": "imagenet", "dataset": "cifar10", "cut": "layer3"}


def _timing(method: str, link: str, batches: int, codec: str = "q8", **extra) -> Experiment:
    cfg = {
        **_BASE,
        "method": method,
        "codec": codec if method != "cloud_only" else "fp32",
        "grad_codec": "q8",
        "link": link,
        "epochs": 1,
        "batches_per_epoch": batches,
        "eval": "end",
        "eval_samples": 500,
        "threads_edge": 1,
        "threads_cloud": 1,
        **extra,
    }
    return Experiment("timing", cfg)


def _accuracy(method: str, epochs: int, codec: str = "q8", **extra) -> Experiment:
    cfg = {
        **_BASE,
        "method": method,
        "codec": codec if method != "cloud_only" else "fp32",
        "grad_codec": "q8",
        "link": None,
        "epochs": epochs,
        "eval": "epoch",
        "threads_edge": 1,
        "threads_cloud": 1,
        **extra,
    }
    return Experiment("accuracy", cfg)


def _validation_grid(batches: dict[str, int], **extra) -> list[Experiment]:
    out = []
    for link, n in batches.items():
        for method in ("cloud_only", "split", "hierarchical"):
            out.append(_timing(method, link, n, **extra))
    return out


_SMOKE_DATA = {"limit_per_class": 8, "eval_samples": 64, "batch_size": 16}

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description=(
            "the whole pipeline on a tiny real CIFAR-10 subset (80 training images): three "
            "two-process timing runs over a 20 Mbit/s link, two 2-epoch accuracy runs, the "
            "report; checks that everything runs, measures nothing worth quoting"
        ),
        budget="under 2 minutes on the 2-core reference machine",
        experiments=tuple(
            [
                _timing(m, "20mbit/5ms", 3, **_SMOKE_DATA)
                for m in ("cloud_only", "split", "hierarchical")
            ]
            + [
                _accuracy("cloud_only", 2, **_SMOKE_DATA),
                _accuracy("hierarchical", 2, **_SMOKE_DATA),
            ]
        ),
        report={**PAPER_SETTINGS, "links": ["3g"], "sweep_points": 9},
    ),
    "quick": Preset(
        name="quick",
        description=(
            "every runtime-model table from the committed profiles (the paper's four "
            "configurations at 3g, 4g, wifi); measured two-process validation of ResNet-18 cut "
            "at layer3 for the three methods at 3g, 4g and wifi (plus 4-bit hierarchical at 3g); "
            "a 2-epoch accuracy comparison on 10,000 real CIFAR-10 training images"
        ),
        budget="about 10 minutes on the 2-core reference machine (9 min 15 s measured)",
        experiments=tuple(
            [
                *_validation_grid({"3g": 24, "4g": 40, "wifi": 40}),
                _timing("hierarchical", "3g", 24, codec="q4"),
                *(
                    _accuracy(m, 2, codec=c, cut=cut, limit_per_class=1000, eval_samples=2000)
                    for m, c, cut in (
                        ("cloud_only", "fp32", "layer3"),
                        ("split", "q8", "layer3"),
                        ("hierarchical", "q8", "layer3"),
                        ("hierarchical", "q4", "layer3"),
                        ("hierarchical", "q8", "layer2"),
                    )
                ),
            ]
        ),
        report=PAPER_SETTINGS,
        foundation=True,
    ),
    "accuracy": Preset(
        name="accuracy",
        description=(
            "CIFAR-10 accuracy, standard (cloud-only) against hierarchical training at the "
            "paper's cut (ResNet-18 layer3) with 8-bit and 4-bit activations: 5 epochs of the "
            "full 50,000-image training set, the full test set after every epoch"
        ),
        budget="about 35 minutes on the 2-core reference machine (34 min measured)",
        experiments=(
            _accuracy("cloud_only", 5, codec="fp32", grad_codec="fp32", eval_samples=None),
            _accuracy("hierarchical", 5, codec="q8", grad_codec="fp32", eval_samples=None),
            _accuracy("hierarchical", 5, codec="q4", grad_codec="fp32", eval_samples=None),
        ),
        report=PAPER_SETTINGS,
    ),
    "paper": Preset(
        name="paper",
        description=(
            "full training schedules: the paper's four configurations (VGG-16 and ResNet-18 on "
            "CIFAR-10 and Tiny ImageNet, imagenet stem) x standard / split / hierarchical (8-bit) "
            "/ hierarchical (4-bit), 30 epochs each, plus 200-batch two-process timing runs of "
            "each configuration at 3g, 4g and wifi"
        ),
        budget="days on the 2-core reference machine; a GPU cloud recommended",
        experiments=tuple(
            [
                _accuracy(
                    m,
                    30,
                    codec=codec,
                    model=model,
                    dataset=dataset,
                    cut=cut,
                    eval_samples=None,
                    threads_cloud=2,
                )
                for model, _stem, dataset, cut, _pct in PAPER_SETTINGS["configs"]
                for m, codec in (
                    ("cloud_only", "fp32"),
                    ("split", "q8"),
                    ("hierarchical", "q8"),
                    ("hierarchical", "q4"),
                )
            ]
            + [
                _timing(m, link, 200, model=model, dataset=dataset, cut=cut)
                for model, _stem, dataset, cut, _pct in PAPER_SETTINGS["configs"]
                for link in ("3g", "4g", "wifi")
                for m in ("cloud_only", "split", "hierarchical")
            ]
        ),
        report=PAPER_SETTINGS,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid choices: {', '.join(PRESETS)}")
    return PRESETS[name]


# -- running ---------------------------------------------------------------------------------------
def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def _cpus() -> tuple[int | None, int | None]:
    """Two distinct CPUs for the edge and cloud processes, or no pinning on a 1-CPU machine."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def finished(out: Path, exp: Experiment) -> bool:
    """Whether ``out/runs/<id>.json`` holds a finished run of exactly this experiment."""
    path = out / "runs" / f"{exp.id}.json"
    if not path.is_file():
        return False
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if "totals" not in rec:
        return False
    from hierbench.methods import RunConfig

    try:
        return RunConfig.from_dict(rec["config"]) == exp.run_config()
    except (ConfigError, TypeError, ValueError, KeyError):
        return False


def prepare_folder(out: Path, preset: Preset, *, overwrite: bool, resume: bool) -> dict | None:
    """Check the output folder against the flags; return the previous manifest when resuming.

    Raises:
        ConfigError: the folder holds results and neither flag says what to do with them, or
            ``resume`` was asked for a folder of another preset.
    """
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume contradict each other: pick one")
    if out.exists() and any(out.iterdir()):
        manifest_path = out / "manifest.json"
        if overwrite:
            shutil.rmtree(out)
            return None
        if not resume:
            raise ConfigError(
                f"{out} exists and is not empty: pass --resume to keep its finished runs and "
                "run the rest, or --overwrite to start again (its contents are deleted)"
            )
        if not manifest_path.is_file():
            raise ConfigError(f"cannot resume in {out}: it has no manifest.json")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("preset", {}).get("name") != preset.name:
            raise ConfigError(
                f"cannot resume in {out}: it holds preset "
                f"{manifest.get('preset', {}).get('name')!r}, not {preset.name!r}"
            )
        return manifest
    return None


def run_preset(
    preset: Preset | str,
    out: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    only: Sequence[str] | None = None,
) -> dict:
    """Run every experiment of ``preset`` not yet finished in ``out``; return the manifest.

    Args:
        preset: a :class:`Preset` or its name.
        out: the results folder (``results/<preset>``).
        overwrite: delete an existing, non-empty ``out`` first.
        resume: keep the finished runs of an existing ``out`` (same preset) and run the rest.
        progress: per-run progress bars on stderr.
        command: the command line to record in the manifest.
        log: where one-line status messages go (default: print to stdout).
        only: run only experiments of these kinds (``timing``, ``accuracy``).
    """
    from hierbench.methods import runner, write_record

    preset = get_preset(preset) if isinstance(preset, str) else preset
    out = Path(out)
    say = log or (lambda s: print(s, flush=True))
    previous = prepare_folder(out, preset, overwrite=overwrite, resume=resume)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "preset": preset.to_dict(),
        "command": command,
        "environment": runner.environment(),
        "started_utc": (previous or {}).get("started_utc")
        or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sessions": [
            *(previous or {}).get("sessions", []),
            {"start_utc": _now(), "command": command},
        ],
        "runs": dict((previous or {}).get("runs", {})),
    }
    _write_json(out / "manifest.json", manifest)
    todo = [e for e in preset.experiments if not only or e.kind in only]
    cpus = _cpus()
    for i, exp in enumerate(todo, 1):
        head = f"[run {i}/{len(todo)}] {exp.id}"
        if finished(out, exp):
            say(f"{head}: finished earlier, skipped")
            continue
        say(f"{head} ...")
        cfg = exp.run_config()
        t0 = time.perf_counter()
        if exp.kind == "timing":
            record = runner.run_two_processes(cfg, cpus=cpus, progress=progress)
        else:
            record = runner.run(cfg, progress=progress)
        elapsed = time.perf_counter() - t0
        record["experiment"] = {"id": exp.id, "kind": exp.kind, "preset": preset.name}
        record["command"] = command
        write_record(record, out / "runs" / f"{exp.id}.json")
        manifest["runs"][exp.id] = {
            "kind": exp.kind,
            "elapsed_s": round(elapsed, 1),
            "finished_utc": _now(),
            "train_wall_s": round(record["totals"]["train_wall_s"], 3),
        }
        _write_json(out / "manifest.json", manifest)
        say(f"{head}: done in {elapsed:.0f} s (training {record['totals']['train_wall_s']:.1f} s)")
    manifest["finished_utc"] = _now()
    _write_json(out / "manifest.json", manifest)
    return manifest


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def describe(preset: Preset) -> str:
    """A listing of a preset's runs (``hierbench reproduce --list``)."""
    lines = [f"{preset.name}: {preset.description}", f"budget: {preset.budget}"]
    for e in preset.experiments:
        lines.append(f"  {e.kind:8s} {e.id}")
    return "\n".join(lines)
