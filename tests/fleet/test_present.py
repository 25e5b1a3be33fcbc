"""Policy ``present``: an edge that dies leaves the cloud training on the others; it rejoins with
``--resume`` (no step lost or trained twice), or is given up after ``rejoin_timeout``. Real
processes (2 edges + a 2-worker gloo cloud, started by hand as across machines), real TCP, real
CIFAR-10; each run is held bit for bit to the oracle replaying the schedule the run recorded
(:func:`hierbench.fleet.oracle.train_fleet_schedule`: which edge steps each cloud step took).
Exactness: the batch is 4 per edge, so every step's sample count n is 4 or 8 and the loss
scalings W / n and 1 / n are powers of two (see tests/fleet/test_fleet.py's docstring)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hierbench.errors import ConfigError
from hierbench.fleet.config import POLICIES, FleetConfig
from hierbench.fleet.oracle import train_fleet_schedule
from hierbench.fleet.record import check_fleet_record
from tests.fleet.test_fleet import REPO, _assert_equal, _assert_moved, _load, _popen, run_cfg


def _schedule(record: dict) -> list[list[tuple[int, int]]]:
    """Every cloud step's consumed (edge, step) pairs, merged over the workers."""
    per_worker = [w["steps"] for w in record["workers"]]
    assert len({len(s) for s in per_worker}) == 1, "the workers ran different step counts"
    return [
        sorted((i, s) for steps in group for i, s in steps["consumed"])
        for group in zip(*per_worker, strict=True)
    ]


def _check_against_schedule(fcfg: FleetConfig, run_dir: Path, record: dict, lost=()) -> None:
    schedule = _schedule(record)
    oracle = train_fleet_schedule(fcfg, schedule)
    want = oracle["cloud"].state_dict()
    params = dict(oracle["cloud"].named_parameters())
    for name in params:
        _assert_moved(f"cloud {name}", want[name], oracle["cloud_init"][name])
    for w in range(fcfg.workers):
        got = _load(run_dir / f"cloud-{w}.pt")
        for name, t in want.items():
            if w == 0 or name in params:  # buffers: rank 0's (DDP broadcasts them)
                _assert_equal(f"cloud-{w} {name}", got[name], t)
    for i, (edge, head) in enumerate(oracle["edges"]):
        if i in lost:  # it died: its part and models are gone
            continue
        got = _load(run_dir / f"edge-{i}.pt")
        for part, module in (("edge", edge), ("head", head)):
            for name, t in module.state_dict().items():
                _assert_equal(f"edge-{i} {part}.{name}", got[part][name], t)
    cloud_losses = [r["loss"] for r in record["workers"][0]["steps"]]
    assert cloud_losses == pytest.approx(oracle["losses"], rel=1e-6)


def _start(tmp_path: Path, fcfg: FleetConfig):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg_file = tmp_path / "fleet.json"
    cfg_file.write_text(json.dumps(fcfg.to_dict()))
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        HIERBENCH_SECRET="present-test-secret-0123456789abcdef",
    )
    base = [sys.executable, "-m", "hierbench.cli", "fleet", "--config", str(cfg_file)]
    base += ["--run-dir", str(run_dir), "--save-state"]
    edge_cmd = [*base, "--role", "edge", "--connect-file", str(run_dir / "ready.json")]
    cloud = _popen([*base, "--role", "cloud", "--listen", "127.0.0.1:0"], env, tmp_path / "c.log")
    e0 = _popen([*edge_cmd, "--edge-id", "0"], env, tmp_path / "e0.log")
    e1 = _popen([*edge_cmd, "--edge-id", "1"], env, tmp_path / "e1.log")
    return run_dir, env, base, edge_cmd, [cloud, e0, e1]


def _kill_after_checkpoint(run_dir: Path, e1, log: Path) -> None:
    ckpt = run_dir / "checkpoints" / "edge-1.pt"
    deadline = time.monotonic() + 90
    while not ckpt.exists():
        assert e1.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "edge 1 wrote no checkpoint"
        time.sleep(0.02)
    e1.send_signal(signal.SIGKILL)
    assert e1.wait(timeout=30) == -signal.SIGKILL


def _merge(base, env) -> dict:
    merge = subprocess.run(
        [*base, "--role", "merge"], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert merge.returncode == 0, merge.stderr[-3000:]
    run_dir = Path(base[base.index("--run-dir") + 1])
    return check_fleet_record(json.loads((run_dir / "record.json").read_text()))


def _fcfg(cifar10_root, rejoin_timeout: float) -> FleetConfig:
    return FleetConfig(
        run=run_cfg(
            cifar10_root, batches_per_epoch=3, epochs=2, checkpoint_every=2, edge_slowdown=4.0
        ),
        edges=2,
        workers=2,
        policy="present",
        rejoin_timeout=rejoin_timeout,
    )


@pytest.mark.slow
def test_the_cloud_trains_on_the_others_while_an_edge_is_away_and_it_rejoins(
    cifar10_root, tmp_path
):
    """Edge 1 is SIGKILLed right after its first checkpoint and restarted with ``--resume`` only
    once edge 0 has finished: the cloud trained on edge 0 alone meanwhile (worker 1 running
    zero-weighted passes), then on edge 1 alone (worker 0 idle). Every edge step is consumed
    exactly once, in order; both edges and both replicas equal the oracle on the recorded
    schedule bit for bit."""
    fcfg = _fcfg(cifar10_root, rejoin_timeout=120.0)
    run_dir, env, base, edge_cmd, procs = _start(tmp_path, fcfg)
    cloud, e0, e1 = procs
    try:
        _kill_after_checkpoint(run_dir, e1, tmp_path / "e1.log")
        assert e0.wait(timeout=120) == 0, (tmp_path / "e0.log").read_text()[-3000:]
        assert cloud.poll() is None  # still waiting for edge 1's steps
        e1b = _popen([*edge_cmd, "--edge-id", "1", "--resume"], env, tmp_path / "e1b.log")
        procs.append(e1b)
        for p, log in ((e1b, "e1b"), (cloud, "c")):
            assert p.wait(timeout=120) == 0, (tmp_path / f"{log}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "trains on the other edges meanwhile" in (tmp_path / "c.log").read_text()
    record = _merge(base, env)
    assert record["policy"] == {"name": "present", "text": POLICIES["present"]}
    schedule = _schedule(record)
    total = 6
    for i in (0, 1):  # every step of every edge, once, in order
        assert [s for _, steps in enumerate(schedule) for j, s in steps if j == i] == list(
            range(total)
        )
    alone = [[i for i, _ in pairs] for pairs in schedule]
    assert [0] in alone and [1] in alone  # the cloud trained on one edge at a time
    assert len(schedule) > total  # ... so it took more steps than a lockstep run
    steps0 = record["workers"][0]["steps"]
    assert [r["samples"] for r in steps0] == [4 * len(p) for p in schedule]
    assert record["totals"]["samples"] == 2 * total * 4 and record["totals"]["edges_lost"] == []
    lrs = [r["lr"] for r in steps0]
    assert lrs[0] == fcfg.run.lr and all(a >= b for a, b in itertools.pairwise(lrs))
    w1 = record["workers"][1]
    assert len(w1["rejoins"]) == 1 and w1["rejoins"][0]["edge"] == 1 and w1["lost"] == []
    e1rec = record["edges"][1]
    assert [r["step"] for r in e1rec["steps"]] == list(range(total))
    assert e1rec["resumes"][0]["checkpoint_step"] == 2
    _check_against_schedule(fcfg, run_dir, record)


@pytest.mark.slow
def test_an_edge_that_does_not_rejoin_is_given_up_and_the_run_finishes(cifar10_root, tmp_path):
    """Edge 1 is killed and never comes back: after ``rejoin_timeout`` its worker gives it up,
    the cloud finishes edge 0's steps, and the merged record says which edge was lost and
    from which step; the cloud's math is the oracle's on the recorded schedule."""
    fcfg = _fcfg(cifar10_root, rejoin_timeout=1.0)
    run_dir, env, base, _, procs = _start(tmp_path, fcfg)
    cloud, e0, e1 = procs
    try:
        _kill_after_checkpoint(run_dir, e1, tmp_path / "e1.log")
        for p, log in ((e0, "e0"), (cloud, "c")):
            assert p.wait(timeout=120) == 0, (tmp_path / f"{log}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "given up" in (tmp_path / "c.log").read_text()
    record = _merge(base, env)
    lost = record["workers"][1]["lost"]
    assert [r["edge"] for r in lost] == [1] and record["totals"]["edges_lost"] == [1]
    schedule = _schedule(record)
    e1_steps = [s for pairs in schedule for i, s in pairs if i == 1]
    assert e1_steps == list(range(lost[0]["next_step"]))  # consumed up to where it was lost
    assert [s for pairs in schedule for i, s in pairs if i == 0] == list(range(6))
    assert record["edges"][1] == {"edge": 1, "worker": 1, "lost": True, "steps": []}
    assert record["totals"]["samples"] == 4 * (6 + len(e1_steps))
    _check_against_schedule(fcfg, run_dir, record, lost={1})


def test_present_refuses_what_needs_every_edge(cifar10_root):
    with pytest.raises(ConfigError, match=r"policy 'present'.*edge_sync none"):
        FleetConfig(run=run_cfg(cifar10_root), policy="present", edge_sync="fedavg:2")
    with pytest.raises(ConfigError, match=r"policy 'present'.*not method 'split'"):
        FleetConfig(run=run_cfg(cifar10_root, method="split"), policy="present")
    with pytest.raises(ConfigError, match="unknown policy 'arrivals'; valid: lockstep, present"):
        FleetConfig(run=run_cfg(cifar10_root), policy="arrivals")
