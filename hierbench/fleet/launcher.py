"""A local fleet run: E edge processes and the W-worker cloud job on this machine, one record.

:func:`run_fleet` writes the config to ``<run_dir>/fleet.json``, starts each edge as
``hierbench fleet --role edge`` in its own process (they wait for the workers' addresses in
``<run_dir>/ready.json``), runs the cloud job in this process's main thread (torch's elastic
agent: it spawns the W workers), waits for the edges, and merges the parts into the fleet
record. A run across machines uses the same roles by hand: ``hierbench fleet --role cloud
--listen HOST:PORT`` on the cloud machine, ``hierbench fleet --role edge --edge-id i --connect
HOST:PORT`` on each device (worker w listens on PORT + w; edge i talks to PORT + i % W), the
same settings and secret everywhere, then ``--role merge`` on the collected parts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

from hierbench.errors import ProcessError
from hierbench.fleet.cloud import SECRET_ENV, launch_cloud
from hierbench.fleet.config import FleetConfig
from hierbench.fleet.record import assemble, read_parts, write_json

__all__ = ["edge_command", "run_fleet"]


def edge_command(run_dir: Path, edge: int, *, save_state: bool) -> list[str]:
    cmd = [sys.executable, "-m", "hierbench.cli", "fleet", "--role", "edge"]
    cmd += ["--config", str(run_dir / "fleet.json"), "--edge-id", str(edge)]
    cmd += ["--connect-file", str(run_dir / "ready.json"), "--run-dir", str(run_dir)]
    return cmd + (["--save-state"] if save_state else [])


def run_fleet(
    fcfg: FleetConfig,
    run_dir: str | Path,
    *,
    save_state: bool = False,
    backend: str = "auto",
    timeout: float = 600.0,
    command: str | None = None,
) -> dict:
    """Run the fleet locally; return (and write to ``<run_dir>/record.json``) the fleet record.

    Must be called from a process's main thread (the elastic agent installs signal handlers).
    With ``run.eval == "end"`` the models are saved whatever ``save_state`` says and scored on
    the test split after the run (:func:`hierbench.fleet.evaluate.evaluate_fleet`, the record's
    ``eval``). An edge that fails stops the cloud job (this process signals itself, the agent
    stops the workers), also with ``rejoin_timeout`` > 0: this launcher does not restart edges
    (rejoining is for edges started by hand, ``--role edge ... --resume``); a failed worker
    stops the edges.

    Raises:
        ProcessError: an edge or a worker failed (its log's tail: ``<run_dir>/edge-<i>.log``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_state = save_state or fcfg.run.eval == "end"
    for stale in ("ready.json", "record.json", "ingress.bucket"):
        (run_dir / stale).unlink(missing_ok=True)
    write_json(run_dir / "fleet.json", fcfg.to_dict())
    secret = os.environ.get(SECRET_ENV) or secrets.token_hex(32)
    env = dict(os.environ, **{SECRET_ENV: secret})
    old_secret = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = secret  # the spawned workers inherit it
    edges, logs = [], []
    failed: list[str] = []
    try:
        for i in range(fcfg.edges):
            log = open(run_dir / f"edge-{i}.log", "w")  # noqa: SIM115 (closed below)
            logs.append(log)
            edges.append(
                subprocess.Popen(
                    edge_command(run_dir, i, save_state=save_state),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        stop = threading.Event()

        def watch():  # an edge that fails would leave the workers waiting: stop the job
            while not stop.wait(0.2):
                for i, p in enumerate(edges):
                    rc = p.poll()
                    if rc not in (None, 0):
                        failed.append(f"edge {i} exited with {rc}: {_tail(run_dir, i)}")
                        os.kill(os.getpid(), signal.SIGTERM)
                        return

        watcher = threading.Thread(target=watch, name="fleet-edges", daemon=True)
        watcher.start()
        try:
            launch_cloud(
                fcfg,
                ready_file=run_dir / "ready.json",
                out_dir=run_dir,
                save_state=save_state,
                backend=backend,
            )
        except BaseException as exc:
            stop.set()
            if failed:
                raise ProcessError(failed[0]) from None
            raise ProcessError(f"the cloud job failed: {exc}") from exc
        finally:
            stop.set()
            watcher.join()
        for i, p in enumerate(edges):
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ProcessError(f"edge {i} did not finish within {timeout:.0f} s") from None
            if rc != 0:
                raise ProcessError(f"edge {i} exited with {rc}: {_tail(run_dir, i)}")
    finally:
        for p in edges:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
        if old_secret is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = old_secret
    edge_parts, worker_parts = read_parts(run_dir, fcfg.edges, fcfg.workers)
    record = assemble(fcfg, edge_parts, worker_parts, command=command)
    if fcfg.run.eval == "end":
        from hierbench.fleet.evaluate import evaluate_fleet

        record["eval"] = evaluate_fleet(fcfg, run_dir, samples=fcfg.run.eval_samples)
    write_json(run_dir / "record.json", record)
    return record


def _tail(run_dir: Path, edge: int, n: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return (run_dir / f"edge-{edge}.log").read_text()[-n:]
    return "(no log)"
