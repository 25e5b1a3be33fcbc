"""The ``scale`` preset (issue 17): fleet throughput measured on this machine, against the model.

Each point is a local fleet run (:func:`hierbench.fleet.launcher.run_fleet`: E edge processes, a
W-worker gloo cloud job, real TCP on loopback) of the same per-edge run (:data:`SCALE_RUN`), at
``(E, W)`` in :data:`POINTS`, :data:`REPEATS` times, repeats interleaved (all points once, then
again) so that a slow phase of the machine touches every point alike. Before the runs the
blocks are profiled at the run's batch (one thread, into ``<out>/profiles/batch-<B>/``, as
``reproduce`` does), and right before each run the edge's whole training step is timed
(:func:`hierbench.experiments.run.edge_calibration`, stored as the record's ``calibration``):
the prediction beside each run (:func:`hierbench.runtime.validate.predict_fleet_record`) uses
those, nothing measured after the fact.

Why this run. Two cores must host up to 4 edges and 2 workers, so the per-edge uplink is slow
(:data:`SCALE_LINK`: 250 kbit/s, 3G's 75 ms one-way latency): one q8 message of ResNet-18's
layer3 at batch 16 (17.5 KB) takes ~0.56 s on it, while the CPU work of a step at E = 4, W = 2
(four edge steps, two cloud steps and an all-reduce) is well under a core-second, so the
machine stays under its two cores and each edge spends most of its time waiting for its link,
as a real device on 3G does. The points therefore test the fleet model where its uplinks bind
(``period = max(t_E, L, I, C + A)``), its pipeline fill, and the shared ingress (the
``ingress`` points: one 500 kbit/s bucket all edges' uplinks draw from, so E = 4 is
ingress-bound at twice the period).

The ``cloud-bound`` set (:data:`CLOUD_POINTS`, :data:`CLOUD_RUN`; ``hierbench scale --set
cloud-bound``) measures the contested case instead of leaving it out: the cut moves to layer1
(a small edge part, ~25 ms per step, and most of the network in the cloud) and the link is
unshaped, so the model puts every point's bottleneck in the cloud stage ``C(E) + A(W)``. Its
report gives each point's *CPU demand* as the model sees it, ``(E · t_E + W · C) / period``
cores: where that exceeds the machine's cores the processes share cores and the measurement is
this machine's contention, not the cloud's cost; where it does not, a miss is the model's.

The ``fedavg`` set (:data:`FEDAVG_POINTS`, :data:`FEDAVG_RUN`, ``edge_sync`` :data:`FEDAVG_SYNC`)
tests the model's FedAvg cycle (:mod:`hierbench.runtime.scale`): every 8 steps each edge sends
its edge layers and exit head (~0.78 MB at the layer1 cut) and waits for the average, over a
2 Mbit/s link on which one step's activations take ~0.28 s and a sync ~3 s each way, so the
syncs, not the steps, dominate. E = 4 runs on two workers only (on one, its cloud stage would
reach the link's period: the contended case the cloud-bound set shows).

Run ids: ``e<E>-w<W>[-ingress]-r<repeat>``; records (fleet records plus ``calibration``) in
``<out>/runs/<id>.json``; a record already there is kept (resume).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hierbench.errors import ConfigError

#: The per-edge uplink of the measured points (see the module docstring).
SCALE_LINK = "250kbit/75ms"
#: The shared cloud ingress of the ``ingress`` points: two edges' uplinks.
SCALE_INGRESS = "500kbit"
#: What every edge runs (RunConfig fields).
SCALE_RUN: dict = {
    "method": "hierarchical",
    "model": "resnet18",
    "stem": "imagenet",
    "dataset": "cifar10",
    "cut": "layer3",
    "codec": "q8",
    "link": SCALE_LINK,
    "batch_size": 16,
    "epochs": 1,
    "batches_per_epoch": 24,
    "eval": "none",
    "threads_edge": 1,
    "threads_cloud": 1,
}
#: ``(E, W, shared ingress?)``: E in {1, 2, 4} x W in {1, 2} (W <= E), then E in {1, 2, 4} with
#: the shared ingress on one worker.
POINTS: tuple[tuple[int, int, bool], ...] = (
    (1, 1, False),
    (2, 1, False),
    (4, 1, False),
    (2, 2, False),
    (4, 2, False),
    (1, 1, True),
    (2, 1, True),
    (4, 1, True),
)
#: The cloud-bound set: the same E x W grid, cut after layer1, link unshaped, 48 steps.
CLOUD_POINTS: tuple[tuple[int, int, bool], ...] = (
    (1, 1, False),
    (2, 1, False),
    (4, 1, False),
    (2, 2, False),
    (4, 2, False),
)
CLOUD_RUN: dict = {"cut": "layer1", "link": "unshaped", "batches_per_epoch": 48}
#: The FedAvg set: edge models averaged every 8 steps over a 2 Mbit/s link, cut layer1.
FEDAVG_POINTS: tuple[tuple[int, int, bool], ...] = (
    (1, 1, False),
    (2, 1, False),
    (2, 2, False),
    (4, 2, False),
)
FEDAVG_RUN: dict = {"cut": "layer1", "link": "2mbit/20ms", "batches_per_epoch": 48}
FEDAVG_SYNC = "fedavg:8"
#: ``hierbench scale --set NAME``: (points, per-edge run overrides, fleet settings, default
#: output folder).
SETS: dict[str, tuple[tuple[tuple[int, int, bool], ...], dict, dict, str]] = {
    "link-bound": (POINTS, {}, {}, "results/scale/measured"),
    "cloud-bound": (CLOUD_POINTS, CLOUD_RUN, {}, "results/scale/cloud-bound"),
    "fedavg": (FEDAVG_POINTS, FEDAVG_RUN, {"edge_sync": FEDAVG_SYNC}, "results/scale/fedavg"),
}
REPEATS = 3


def point_id(edges: int, workers: int, ingress: bool, repeat: int) -> str:
    return f"e{edges}-w{workers}{'-ingress' if ingress else ''}-r{repeat}"


def fleet_config(
    edges: int, workers: int, ingress: bool, run: dict | None = None, fleet: dict | None = None
):
    """The :class:`~hierbench.fleet.FleetConfig` of one point (``fleet``: more fleet settings,
    e.g. ``edge_sync``)."""
    from hierbench.fleet import FleetConfig
    from hierbench.methods import RunConfig

    extra = {"ingress": SCALE_INGRESS} if ingress else {}
    extra.update(fleet or {})
    return FleetConfig(
        run=RunConfig.from_dict({**SCALE_RUN, **(run or {})}), edges=edges, workers=workers, **extra
    )


def run_scale(
    out: str | Path,
    *,
    repeats: int = REPEATS,
    points: tuple[tuple[int, int, bool], ...] = POINTS,
    run: dict | None = None,
    fleet: dict | None = None,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Measure every point ``repeats`` times into ``<out>/runs``; return the records' paths."""
    from hierbench.experiments.grid import Experiment
    from hierbench.experiments.run import calibrate, edge_calibration
    from hierbench.fleet.launcher import run_fleet
    from hierbench.fleet.record import write_json

    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an int >= 1, got {repeats!r}")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    per_edge = {**SCALE_RUN, **(run or {})}
    calibrate(out, [Experiment("timing", per_edge, 1)], say, cpu=None)
    paths = []
    todo = [(p, r) for r in range(1, repeats + 1) for p in points]
    for i, ((e, w, ing), r) in enumerate(todo, 1):
        rid = point_id(e, w, ing, r)
        path = out / "runs" / f"{rid}.json"
        paths.append(path)
        if path.is_file():
            say(f"[{i}/{len(todo)}] {rid}: measured earlier, kept")
            continue
        fcfg = fleet_config(e, w, ing, run, fleet)
        cal = edge_calibration(Experiment("timing", per_edge, r), cpu=None)
        say(f"[{i}/{len(todo)}] {rid}: edge step {_edge_ms(cal)} ms (calibration) ...")
        t0 = time.perf_counter()
        run_dir = Path(tempfile.mkdtemp(prefix=f"hierbench-scale-{rid}-"))
        try:
            rec = run_fleet(fcfg, run_dir, command=f"hierbench scale --out {out} ({rid})")
        except BaseException:
            say(f"[{i}/{len(todo)}] {rid} failed: its logs and parts are in {run_dir}")
            raise
        shutil.rmtree(run_dir, ignore_errors=True)
        rec["id"] = rid
        rec["repeat"] = r
        rec["calibration"] = cal
        rec["load_after"] = list(os.getloadavg())
        write_json(path, rec)
        t = rec["totals"]
        took = time.perf_counter() - t0
        say(
            f"[{i}/{len(todo)}] {rid}: {t['samples_per_s']:.1f} samples/s "
            f"({t['steps']} steps in {t['train_wall_s']:.2f} s; run {took:.0f} s)"
        )
    return paths


def _edge_ms(cal: dict) -> str:
    steps = cal.get("edge_step_s") or {}
    for heads in steps.values():
        for v in heads.values():
            return f"{1e3 * v:.0f}"
    return "?"
