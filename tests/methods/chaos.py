"""A chaos run: edge and cloud as two real processes (``hierbench edge`` / ``hierbench cloud``)
that are SIGKILLed at random moments (before the edge's first checkpoint, while a checkpoint is
being written, mid-run) and restarted with ``--resume``, with hostile connections (connect and
close, garbage bytes) made to the cloud while the edge is away. The run must end as an
uninterrupted one: every step trained exactly once, in order, with the same losses on both sides.

Used by ``tests/methods/test_chaos.py`` (one short seed) and ``scripts/chaos_soak.py`` (20 seeds,
result in ``results/chaos/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from hierbench.methods import RunConfig

SECRET = "chaos-test-secret-of-sufficient-length-0123456789"
ACTIONS = ("kill_edge", "kill_cloud", "kill_edge_in_checkpoint", "kill_cloud_in_checkpoint")
HOSTILE = ("connect_close", "garbage")


def chaos_config(data_root: str | Path, *, epochs: int = 4) -> RunConfig:
    """Hierarchical q8, ResNet-18 cut at layer2, 5 batches of 16 per epoch, checkpoints every 3
    steps, an edge slowed 2x so that kills land mid-run."""
    return RunConfig(
        method="hierarchical",
        dataset="cifar10",
        data_root=str(data_root),
        limit_per_class=8,
        batch_size=16,
        epochs=epochs,
        batches_per_epoch=5,
        link="20mbit/1ms",
        eval="none",
        model="resnet18",
        stem="imagenet",
        cut="layer2",
        codec="q8",
        augment=True,
        checkpoint_every=3,
        edge_slowdown=2.0,
    )


def edge_args(cfg: RunConfig) -> list[str]:
    """``hierbench edge`` arguments that rebuild ``cfg``."""
    args = ["--method", cfg.method, "--model", cfg.model, "--stem", cfg.stem]
    args += ["--dataset", cfg.dataset, "--data-root", str(cfg.data_root)]
    args += ["--limit-per-class", str(cfg.limit_per_class), "--cut", cfg.cut]
    args += ["--exit-head", cfg.exit_head, "--codec", cfg.codec, "--grad-codec", cfg.grad_codec]
    args += ["--link", cfg.link or "none", "--batch-size", str(cfg.batch_size)]
    args += ["--epochs", str(cfg.epochs), "--batches-per-epoch", str(cfg.batches_per_epoch)]
    args += ["--lr", repr(cfg.lr), "--seed", str(cfg.seed)]
    args += ["--edge-slowdown", repr(cfg.edge_slowdown), "--threads", str(cfg.threads_edge)]
    args += ["--eval", cfg.eval, "--eval-samples", str(cfg.eval_samples or 0)]
    args += ["--slots", str(cfg.slots), "--checkpoint-every", str(cfg.checkpoint_every)]
    return args + ([] if cfg.augment else ["--no-augment"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Proc:
    """A child process whose stderr is collected on a thread (so it never blocks on a pipe)."""

    def __init__(self, cmd: list[str], env: dict) -> None:
        self.popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        self.lines: list[str] = []
        self._threads = [
            threading.Thread(target=self._drain, args=(s,), daemon=True)
            for s in (self.popen.stdout, self.popen.stderr)
        ]
        for t in self._threads:
            t.start()

    def _drain(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()  # SIGKILL
        self.popen.wait()
        for t in self._threads:
            t.join(timeout=5)

    def text(self) -> str:
        return "\n".join(self.lines)


def _hostile(port: int, kind: str) -> None:
    """One hostile connection to the cloud: connect and close, or garbage instead of a hello."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if kind == "garbage":
            s.sendall(os.urandom(200))
            s.settimeout(2)
            with contextlib.suppress(OSError):
                s.recv(100)  # the cloud refuses it (or just closes)


def run_chaos(
    cfg: RunConfig,
    workdir: Path,
    seed: int,
    *,
    events: int = 4,
    deadline_s: float = 240.0,
) -> dict:
    """Run ``cfg`` as two processes under ``events`` random faults; return what happened and the
    final run record (``record``), or raise AssertionError with the processes' output."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt, out = workdir / "ckpt", workdir / "edge.json"
    port = _free_port()
    env = dict(os.environ, HIERBENCH_SECRET=SECRET)
    py = [sys.executable, "-m", "hierbench.cli"]
    cloud_cmd = [*py, "cloud", "--listen", f"127.0.0.1:{port}", "--link", cfg.link or "none"]
    cloud_cmd += ["--checkpoint-dir", str(ckpt)]
    edge_cmd = [*py, "edge", "--connect", f"127.0.0.1:{port}", *edge_args(cfg)]
    edge_cmd += ["--checkpoint-dir", str(ckpt), "--out", str(out), "--quiet"]
    t_start = time.monotonic()
    log: list[dict] = []
    history: list[_Proc] = []

    def note(**kw) -> None:
        kw["t"] = round(time.monotonic() - t_start, 3)
        log.append(kw)

    def start_cloud(resume: bool) -> _Proc:
        p = _Proc([*cloud_cmd, *(["--resume"] if resume else [])], env)
        history.append(p)
        deadline = time.monotonic() + 60
        while not any("listening on" in line for line in p.lines):
            if not p.alive() or time.monotonic() > deadline:
                raise AssertionError(f"the cloud did not start:\n{p.text()}")
            time.sleep(0.02)
        return p

    def start_edge(resume: bool) -> _Proc:
        p = _Proc([*edge_cmd, *(["--resume"] if resume else [])], env)
        history.append(p)
        return p

    def kill_in_checkpoint(proc: _Proc, name: str, within: float) -> bool:
        """SIGKILL ``proc`` while ``name``'s temporary file exists (a checkpoint being
        written), or at the end of ``within`` seconds; True if it landed mid-write."""
        tmp = ckpt / f"{name}.tmp"
        end = time.monotonic() + within
        while time.monotonic() < end and proc.alive():
            if tmp.exists():
                proc.kill()
                return True
            time.sleep(0.001)
        proc.kill()
        return False

    try:
        cloud = start_cloud(resume=False)
        edge = start_edge(resume=False)
        # The first fault: the edge dies before its first checkpoint, once it has started (it
        # makes its checkpoint folder just before it says hello to the cloud).
        deadline = time.monotonic() + 90
        while not ckpt.is_dir() and edge.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.3, 1.5))
        if edge.alive() and not (ckpt / "edge.pt").exists():
            edge.kill()
            note(action="kill_edge", before_first_checkpoint=True)
            hostile = rng.choice(HOSTILE)
            _hostile(port, hostile)
            note(action=hostile)
            time.sleep(0.3)
            edge = start_edge(resume=True)
        # A fault that comes when the run is already done (the edge has written its record, or
        # the cloud exited by itself after the edge's "done") ends the chaos: restarting a role
        # then would wait for a peer that has legitimately gone.
        edge_done = False  # the edge was killed after it had written its record
        for _ in range(events - 1):
            time.sleep(rng.uniform(0.5, 3.0))
            if not edge.alive() or out.exists() or not cloud.alive():
                break  # finished (or failed: checked below)
            action = rng.choice(ACTIONS)
            if action.startswith("kill_edge"):
                mid = kill_in_checkpoint(edge, "edge.pt", 4.0) if "checkpoint" in action else None
                if mid is None:
                    edge.kill()
                if out.exists() or edge.popen.returncode == 0:
                    edge_done = edge.popen.returncode != 0
                    note(action=action, after_the_run=True)
                    break
                note(action=action, mid_write=mid, first=not (ckpt / "edge.pt").exists())
                time.sleep(rng.uniform(0.2, 1.0))
                if cloud.alive():
                    hostile = rng.choice(HOSTILE)
                    _hostile(port, hostile)
                    note(action=hostile)
                    time.sleep(0.3)
                edge = start_edge(resume=True)
            else:
                mid = kill_in_checkpoint(cloud, "cloud.pt", 4.0) if "checkpoint" in action else None
                if mid is None:
                    cloud.kill()
                if cloud.popen.returncode == 0:  # it had finished the run by itself
                    note(action=action, after_the_run=True)
                    break
                note(action=action, mid_write=mid)
                time.sleep(rng.uniform(0.2, 2.0))  # the edge trains on meanwhile
                cloud = start_cloud(resume=True)
        end = t_start + deadline_s
        while edge.alive() and time.monotonic() < end:
            time.sleep(0.1)
        if edge.alive():
            raise AssertionError("the run did not finish in time")
        if edge.popen.returncode != 0 and not edge_done:
            raise AssertionError(f"the edge failed ({edge.popen.returncode})")
        while cloud.alive() and time.monotonic() < end:
            time.sleep(0.1)
        if cloud.popen.returncode != 0:
            raise AssertionError(f"the cloud failed ({cloud.popen.returncode})")
    except AssertionError as exc:
        for p in history:
            p.kill()
        outputs = "\n---\n".join(
            f"{' '.join(p.popen.args[3:5])}:\n{p.text()[-3000:]}" for p in history
        )
        raise AssertionError(f"seed {seed}: {exc}; events {log}\n{outputs}") from None
    finally:
        for p in history:
            p.kill()
    record = json.loads(out.read_text())
    return {"seed": seed, "events": log, "wall_s": time.monotonic() - t_start, "record": record}


def check_against(record: dict, reference: dict) -> list[str]:
    """What differs between a chaos run's record and the uninterrupted run's (empty: none)."""
    problems = []
    total = reference["totals"]["batches"]
    for side in ("edge_steps", "cloud_steps"):
        steps = [s["step"] for s in record[side]]
        if steps != list(range(total)):
            problems.append(f"{side}: steps {steps}, not 0..{total - 1} once each in order")
        got = [s["loss"] for s in record[side]]
        want = [s["loss"] for s in reference[side]]
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
            problems.append(f"{side}: losses differ from the uninterrupted run (first at {first})")
    return problems
