"""The run record: one JSON file per training run, its version, its keys, one writer, one reader.

``hierbench.methods`` writes a record for every run (:func:`write_record`); validation
(:mod:`hierbench.runtime.validate`), the report and the experiment grid read them back through
:func:`read_record` only, which checks the version and the keys every consumer relies on, and
names the file in every error. A record is a plain JSON object:

==================  =================================================================
key                 what
==================  =================================================================
record_version      :data:`RECORD_VERSION`; a reader refuses any other
config              the ``RunConfig`` as a dict (``hierbench.methods.config``)
environment         versions, threads, CPU model, extension build
conventions         how clock and bytes were counted (strings)
steps_per_epoch     int
edge_steps          per batch: ``t0``, ``t1`` (perf_counter s), ``compute_s``, ``bytes_up`` …
cloud_steps         per batch: ``t0``, ``t1``, losses …
epochs              per epoch: losses, accuracies (edge exit and final), evaluation time
link                the engine's per-message timeline (``messages``) or null
totals              :data:`TOTALS_KEYS`, numbers
experiment          (grid runs) the experiment's id and kind: ``timing`` | ``accuracy``
processes, cpus     (grid runs) 1 or 2 processes, the CPUs they were pinned to
command             (grid runs) the command line that made it
==================  =================================================================
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any, TypedDict

from hierbench.errors import ConfigError

__all__ = [
    "RECORD_VERSION",
    "REQUIRED_KEYS",
    "TOTALS_KEYS",
    "RunRecord",
    "Totals",
    "read_record",
    "write_record",
]

#: The version a record written by this code carries; the only one :func:`read_record` accepts.
RECORD_VERSION = 1

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
    """``rec`` if it is a run record of :data:`RECORD_VERSION` with every required key and
    numeric totals; else ConfigError naming ``where``."""
    if not isinstance(rec, dict):
        raise ConfigError(f"{where} is not a run record: a JSON object expected")
    version = rec.get("record_version")
    if version != RECORD_VERSION:
        raise ConfigError(
            f"{where} has record_version {version!r}; this hierbench reads version "
            f"{RECORD_VERSION} only (re-run it, or read it with the hierbench that wrote it)"
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
    if bad:
        raise ConfigError(f"{where}: totals {', '.join(bad)} missing or not numbers")
    return rec  # type: ignore[return-value]


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


def write_record(record: dict, path: str | Path) -> Path:
    """Write ``record`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path
