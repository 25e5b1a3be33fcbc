"""The fleet run record: one strict-JSON file per fleet run, assembled from the roles' parts.

Every role writes its part into the run folder (``edge-<i>.json``, ``worker-<w>.json``); the
launcher (or ``hierbench fleet --role merge`` after copying the parts from several machines)
merges them into one record. It is a record *kind* of its own (``record_kind: "fleet"``), not a
``spec.records`` run record (those describe one edge and one cloud; ``spec.read_record`` refuses
a fleet record, for want of ``record_version``). Keys:

====================  ===============================================================
key                   what
====================  ===============================================================
record_kind           ``"fleet"``
fleet_record_version  :data:`FLEET_RECORD_VERSION` (1)
config                the :class:`FleetConfig` (``run``: the per-edge ``RunConfig``)
policy                ``{"name": "lockstep" | "present", "text": ...}``: how a cloud step
                      takes messages
partition             :func:`hierbench.fleet.partition.describe` (per-edge sizes, class counts)
environment           versions, threads, git SHA / dirty / diff hash, CPU, load (as run records)
conventions           clocks, samples, bytes (strings)
edges                 per edge: its worker, shard size, per-step ``t0``, ``t1``, ``compute_s``,
                      ``cpu_s``, ``bytes_up``, ``loss`` (exit), ``sync_wait_s``; totals
workers               per worker: served edges, backend, ``node`` (of ``nodes`` machines),
                      ``local_rank``, ``hostname``, ``listen`` ([host, port]), per-step
                      ``t_wait`` (waiting for the step's messages), ``t_in``, ``t_trained``,
                      ``t1``, ``wait_s``, ``bytes_in``, ``loss`` (mean over the step's
                      samples); policy ``present`` also ``samples``, ``lr`` and ``consumed``
                      ([edge, its step] pairs); ``rejoins``, ``lost`` (edges given up); totals
totals                steps, samples (steps x E x B), ``train_wall_s`` (first edge step's
                      start to the last step's end, a worker's or an edge's),
                      ``samples_per_s``, bytes up, stalls, ``nodes`` (the cloud's machines)
====================  ===============================================================

Times are ``time.perf_counter`` (CLOCK_MONOTONIC): comparable across processes on one machine
only; a multi-machine run's cross-role totals (edges on other machines, a cloud of several
nodes) are meaningless (per-role numbers still hold).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from hierbench.errors import ConfigError

__all__ = [
    "FLEET_RECORD_VERSION",
    "RECORD_KIND",
    "assemble",
    "check_fleet_record",
    "cpu_now",
    "now",
    "read_parts",
    "strict",
    "write_json",
]

RECORD_KIND = "fleet"
FLEET_RECORD_VERSION = 1
REQUIRED = (
    "record_kind",
    "fleet_record_version",
    "config",
    "partition",
    "edges",
    "workers",
    "totals",
    "environment",
    "policy",
)

now = time.perf_counter  # CLOCK_MONOTONIC on Linux: comparable across processes on one machine
cpu_now = time.process_time


def strict(obj):
    """``obj`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: dict) -> Path:
    """Write ``obj`` as strict JSON, atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(strict(obj), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_parts(run_dir: str | Path, edges: int, workers: int) -> tuple[list[dict], list[dict]]:
    """The roles' parts in ``run_dir``. An edge that a worker gave up (policy ``present``, its
    ``lost``) may have no part: it stands as ``{"edge": i, "worker": w, "lost": True, "steps":
    []}``. Any other missing part is an error."""
    run_dir = Path(run_dir)
    names = [f"worker-{w}.json" for w in range(workers)]
    missing = [n for n in names if not (run_dir / n).exists()]
    if missing:
        raise ConfigError(f"{run_dir}: missing role parts {', '.join(missing)}")
    worker_parts = [json.loads((run_dir / n).read_text()) for n in names]
    lost = {r["edge"] for w in worker_parts for r in w.get("lost", [])}
    edge_parts, missing = [], []
    for i in range(edges):
        path = run_dir / f"edge-{i}.json"
        if path.exists():
            edge_parts.append(json.loads(path.read_text()))
        elif i in lost:
            edge_parts.append({"edge": i, "worker": i % workers, "lost": True, "steps": []})
        else:
            missing.append(path.name)
    if missing:
        raise ConfigError(f"{run_dir}: missing role parts {', '.join(missing)}")
    return edge_parts, worker_parts


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def assemble(fcfg, edges: list[dict], workers: list[dict], *, command: str | None = None) -> dict:
    """Merge the roles' parts into one fleet record (see the module docstring)."""
    from hierbench.fleet.config import POLICIES
    from hierbench.methods.runner import environment

    live = [e for e in edges if not e.get("lost")]  # a lost edge left no part (read_parts)
    parts = {json.dumps(e["partition"], sort_keys=True) for e in live}
    if len(parts) != 1:
        raise ConfigError("the edges computed different partitions: they ran different configs")
    cfg = fcfg.run
    if fcfg.policy == "present":  # steps may have fewer edges (and be more): each says its own
        total = len(workers[0]["steps"])
        samples = sum(r["samples"] for r in workers[0]["steps"])
    else:
        total = workers[0]["total_steps"]
        samples = total * fcfg.edges * cfg.batch_size
    first = min(r["t0"] for e in live for r in e["steps"])
    # the run ends with the last step of anyone: a worker's, or an edge's where the edge finishes
    # after the cloud (it waits for the final FedAvg average, or split learning's last gradient)
    last = max(r["t1"] for role in (*workers, *live) for r in role["steps"])
    train_wall = last - first
    for e in live:
        st = e["steps"]
        span = e["t_done"] - e["t_start"]
        e["totals"] = {
            "steps": len(st),
            "busy_s": sum(r["compute_s"] for r in st),
            "sync_wait_s": sum(r.get("sync_wait_s", 0.0) for r in st),
            "bytes_up": sum(r["bytes_up"] for r in st),
            "mean_step_s": _mean([r["t1"] - r["t0"] for r in st]),
            "samples_per_s": len(st) * cfg.batch_size / span if span > 0 else None,
            "cpu_share": (
                sum(r["cpu_s"] for r in st) / sum(r["compute_s"] for r in st)
                if cfg.method != "cloud_only" and sum(r["compute_s"] for r in st) > 0
                else None
            ),
        }
    for w in workers:
        st = w["steps"]
        w["totals"] = {
            "steps": len(st),
            "wait_s": sum(r["wait_s"] for r in st),
            "train_s": sum(r["t_trained"] - r["t_in"] for r in st),
            "sync_s": sum(r["t1"] - r["t_sync"] for r in st if "t_sync" in r),
            "mean_step_s": _mean([r["t1"] - r["t_in"] for r in st]),
            "bytes_in": sum(r["bytes_in"] for r in st),
        }
    return {
        "record_kind": RECORD_KIND,
        "fleet_record_version": FLEET_RECORD_VERSION,
        "config": fcfg.to_dict(),
        "policy": {"name": fcfg.policy, "text": POLICIES[fcfg.policy]},
        "partition": live[0]["partition"],
        "environment": environment(),
        "command": command,
        "conventions": {
            "clock": "time.perf_counter (CLOCK_MONOTONIC): comparable across processes on one "
            "machine only",
            "train_wall_s": "the first edge step's start to the last step's end, a worker's or an "
            "edge's (an edge ends after the cloud when it waits for a final FedAvg average or "
            "split learning's last gradient)",
            "samples": "cloud steps x E edges x B per edge (policy present: the sum of each "
            "step's samples, over the edges present)",
            "bytes": "message bytes: 32-byte header + 1 byte per label (K <= 256) + payload",
        },
        "edges": edges,
        "workers": workers,
        "totals": {
            "edges": fcfg.edges,
            "workers": fcfg.workers,
            "nodes": len({w["node"] for w in workers}),
            "steps": total,
            "samples": samples,
            "train_wall_s": train_wall,
            "samples_per_s": samples / train_wall if train_wall > 0 else None,
            "bytes_up": sum(e["totals"]["bytes_up"] for e in live),
            "edge_uplink_stall_s": sum(e["uplink_stall_s"] for e in live),
            "worker_wait_s": [w["totals"]["wait_s"] for w in workers],
            "edges_lost": sorted(r["edge"] for w in workers for r in w.get("lost", [])),
        },
    }


def check_fleet_record(rec: object, where: str = "fleet record") -> dict:
    """``rec`` if it is a fleet record of this version with every key; else ConfigError."""
    if not isinstance(rec, dict) or rec.get("record_kind") != RECORD_KIND:
        raise ConfigError(f"{where} is not a fleet record (record_kind {RECORD_KIND!r})")
    if rec.get("fleet_record_version") != FLEET_RECORD_VERSION:
        raise ConfigError(
            f"{where} has fleet_record_version {rec.get('fleet_record_version')!r}; this "
            f"hierbench reads {FLEET_RECORD_VERSION}"
        )
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return rec
