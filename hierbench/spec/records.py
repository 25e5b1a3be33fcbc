"""The run record: one JSON file per training run, its version, its keys, one writer, one reader.

``hierbench.methods`` writes a record for every run (:func:`write_record`); validation
(:mod:`hierbench.runtime.validate`), the report and the experiment grid read them back through
:func:`read_record` only, which checks the version and the keys every consumer relies on, and
names the file in every error. A record is a plain JSON object:

==================  =================================================================
key                 what
==================  =================================================================
record_version      :data:`RECORD_VERSION` (2); version 1 is read too (:data:`READABLE`)
config              the ``RunConfig`` as a dict (``hierbench.methods.config``)
environment         versions, threads, extension build, and (version 2) git_sha, git_dirty,
                    cpu_model, load_average (:mod:`hierbench.spec.provenance`)
conventions         how clock and bytes were counted (strings)
steps_per_epoch     int
edge_steps          per batch: ``t0``, ``t1`` (perf_counter s), ``compute_s``, ``bytes_up`` …
cloud_steps         per batch: ``t0``, ``t1``, losses …
epochs              per epoch: losses, accuracies (edge exit and final), evaluation time
link                the engine's per-message timeline (``messages``) or null
totals              :data:`TOTALS_KEYS`, numbers (version 2 adds :data:`TOTALS_V2`)
experiment          (grid runs) the experiment's id and kind: ``timing`` | ``accuracy``
processes, cpus     (grid runs) 1 or 2 processes, the CPUs they were pinned to
command             (grid runs) the command line that made it
==================  =================================================================

The training clock (version 2, :data:`TRAIN_CLOCK`): ``totals.train_wall_s`` runs from the edge's
first training step to the last training event on either side (the cloud's last step, or for
split learning the edge's last backward), nothing subtracted. Version 1 records ran from the
cloud's welcome to the cloud's last step minus the edge's evaluation time; they still serve
accuracy tables, but validation against the runtime model refuses them (:func:`require_clock`).

CPU share (version 2, :data:`CPU_SHARE`): per side, the CPU time the process got during its
compute spans ÷ their wall time. A side of a two-process run below :data:`CPU_SHARE_MIN` was
disturbed by other load: tables flag it (:func:`disturbed`) and never average it in silently.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, TypedDict

from hierbench.errors import ConfigError

__all__ = [
    "CPU_SHARE",
    "CPU_SHARE_MIN",
    "READABLE",
    "RECORD_VERSION",
    "REQUIRED_KEYS",
    "TOTALS_KEYS",
    "TOTALS_V2",
    "TRAIN_CLOCK",
    "RunRecord",
    "Totals",
    "check_record",
    "disturbed",
    "read_record",
    "require_clock",
    "write_record",
]

#: The training methods a record can hold (``hierbench.methods.config`` uses this tuple).
METHODS = ("cloud_only", "split", "hierarchical")

#: The version a record written by this code carries.
RECORD_VERSION = 2
#: The versions :func:`read_record` accepts.
READABLE = (1, 2)

TRAIN_CLOCK = (
    "end to end: the edge's first training step to the last training event on either side "
    "(cloud step, or the edge's last backward in split learning); nothing subtracted"
)
CPU_SHARE = (
    "CPU time the process got during each side's compute spans / their wall time "
    "(1.0 = never preempted at one thread)"
)
#: Below this CPU share a two-process timing run's side counts as disturbed by other load.
CPU_SHARE_MIN = 0.9

#: Keys every record has.
REQUIRED_KEYS = (
    "record_version",
    "config",
    "environment",
    "steps_per_epoch",
    "edge_steps",
    "cloud_steps",
    "epochs",
    "totals",
)

#: ``totals``: the run's sums, in seconds, bytes and counts.
TOTALS_KEYS = (
    "batches",
    "wall_s",
    "train_wall_s",
    "edge_busy_s",
    "cloud_busy_s",
    "edge_eval_s",
    "bytes_up",
    "bytes_down",
    "uplink_stall_s",
    "reconnects",
)

#: Version 2 totals: evaluation time that fell inside the timed window (reported, never
#: subtracted), and each side's CPU share (None where no step recorded CPU time).
TOTALS_V2 = ("eval_in_window_s", "edge_cpu_share", "cloud_cpu_share")


class Totals(TypedDict):
    batches: int
    wall_s: float
    train_wall_s: float
    edge_busy_s: float
    cloud_busy_s: float
    edge_eval_s: float
    bytes_up: int
    bytes_down: int
    uplink_stall_s: float
    reconnects: int
    eval_in_window_s: float
    edge_cpu_share: float | None
    cloud_cpu_share: float | None


class RunRecord(TypedDict, total=False):
    """A run record as :func:`read_record` returns it (the JSON object itself)."""

    record_version: int
    config: dict[str, Any]
    environment: dict[str, Any]
    conventions: dict[str, str]
    steps_per_epoch: int
    edge_steps: list[dict[str, Any]]
    cloud_steps: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    link: dict[str, Any] | None
    totals: Totals
    experiment: dict[str, Any]
    processes: int
    cpus: list[int | None]
    command: str


def check_record(rec: object, where: str = "run record") -> RunRecord:
    """``rec`` if it is a run record of a :data:`READABLE` version with every required key and
    numeric totals; else ConfigError naming ``where``."""
    if not isinstance(rec, dict):
        raise ConfigError(f"{where} is not a run record: a JSON object expected")
    version = rec.get("record_version")
    if isinstance(version, bool) or version not in READABLE:
        raise ConfigError(
            f"{where} has record_version {version!r}; this hierbench reads versions "
            f"{', '.join(map(str, READABLE))} (re-run it, or read it with the hierbench that "
            "wrote it)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise ConfigError(f"{where} is not a run record: missing {', '.join(missing)}")
    if not isinstance(rec["config"], dict) or not isinstance(rec["totals"], dict):
        raise ConfigError(f"{where} is not a run record: config and totals must be objects")
    totals = rec["totals"]
    bad = [
        k
        for k in TOTALS_KEYS
        if not isinstance(totals.get(k), numbers.Real) or isinstance(totals.get(k), bool)
    ]
    if version >= 2:
        bad += [k for k in TOTALS_V2 if k not in totals or not _number_or_none(totals[k])]
    if bad:
        raise ConfigError(f"{where}: totals {', '.join(bad)} missing or not numbers")
    problem = _shape_problem(rec)
    if problem:
        raise ConfigError(f"{where} is not a valid run record: {problem}")
    return rec  # type: ignore[return-value]


def _shape_problem(rec: dict) -> str | None:
    """What in ``rec`` has the wrong shape for the readers (report, validation), or None."""
    cfg = rec["config"]
    if not isinstance(cfg.get("method"), str):
        return "config.method missing or not a string"
    for key in ("model", "dataset", "cut", "codec", "link"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            return f"config.{key} is not a string"
    if cfg["method"] not in METHODS:
        return f"config.method {cfg['method']!r} is none of {', '.join(METHODS)}"
    if not _number_or_none(rec["steps_per_epoch"]) or rec["steps_per_epoch"] is None:
        return "steps_per_epoch is not a number"
    for key in ("edge_steps", "cloud_steps", "epochs"):
        if not isinstance(rec[key], list) or not all(isinstance(x, dict) for x in rec[key]):
            return f"{key} is not a list of objects"
    for key in ("edge_steps", "cloud_steps"):
        for r in rec[key]:
            bad = [k for k in ("step", "t0", "t1") if not _number_or_none(r.get(k))]
            if bad or any(r.get(k) is None for k in ("t0", "t1")):
                return f"a {key} entry has no numeric {', '.join(bad) or 't0/t1'}"
    for e in rec["epochs"]:
        if isinstance(e.get("epoch"), bool) or not isinstance(e.get("epoch"), int):
            return "an epoch entry has no integer 'epoch'"
    link = rec.get("link")
    if link is not None and (
        not isinstance(link, dict)
        or not isinstance(link.get("messages", []), list)
        or not all(isinstance(m, dict) for m in link.get("messages", []))
    ):
        return "link is not null or an object with a list of messages"
    if not isinstance(rec["environment"], dict):
        return "environment is not an object"
    return None


def _number_or_none(v: object) -> bool:
    return v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def require_clock(rec: RunRecord, where: str = "run record") -> None:
    """ConfigError unless ``rec`` measured its training time with the end-to-end clock
    (version 2): what comparing a measured time with a prediction needs."""
    if rec.get("record_version", 0) < 2:
        raise ConfigError(
            f"{where} is a version-{rec.get('record_version')} record, timed with the old clock "
            "(welcome to the cloud's last step, minus evaluation): re-run it to validate it"
        )


def disturbed(rec: RunRecord) -> list[str]:
    """Why a record's timing cannot be trusted as a quiet-machine measurement: each side of a
    two-process run whose CPU share is below :data:`CPU_SHARE_MIN`, and an edge step timed for
    the run (``calibration``) that got less (empty: not disturbed)."""
    if rec.get("record_version", 0) < 2 or rec.get("processes") != 2:
        return []
    out = []
    for side in ("edge", "cloud"):
        share = rec["totals"].get(f"{side}_cpu_share")
        if share is not None and share < CPU_SHARE_MIN:
            out.append(f"{side} CPU share {share:.3f} < {CPU_SHARE_MIN}")
    cal = (rec.get("calibration") or {}).get("cpu_share")  # the edge step timed before the run
    if isinstance(cal, numbers.Real) and cal < CPU_SHARE_MIN:
        out.append(f"its edge calibration's CPU share {cal:.3f} < {CPU_SHARE_MIN}")
    return out


def read_record(path: str | Path) -> RunRecord:
    """The run record in ``path``, checked (:func:`check_record`).

    Raises:
        ConfigError: unreadable, not JSON, not a record, or another record version; the message
            names the file.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read run record {path}: {exc.strerror or exc}") from exc
    try:
        rec = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    return check_record(rec, str(path))


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``: JSON has no NaN, and
    a record must stay readable by any JSON parser."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON text of ``obj`` (``allow_nan=False``, after :func:`json_safe`)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def write_record(record: dict, path: str | Path) -> Path:
    """Write ``record`` to ``path`` atomically (a temporary file, then a rename), as strict JSON:
    a non-finite number is written as ``null`` (:func:`json_safe`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path
