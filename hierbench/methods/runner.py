"""Run a method: both roles in one process (threads), or one role per process over TCP.

``run(cfg)`` is the one-process form: the cloud role runs in a thread, the edge in the caller's,
joined by in-process channels (the data one through the link emulator). ``run_edge`` and
``run_cloud`` are the two halves for ``hierbench edge --connect`` / ``hierbench cloud --listen``;
the roles are the same code either way. Each run returns (and can write) a run record: JSON with
the config, the environment, per-batch timestamps and bytes, per-epoch losses and accuracy.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from hierbench.errors import ConfigError, ProcessError, TransferError
from hierbench.methods.cloud import CloudRole
from hierbench.methods.config import RunConfig
from hierbench.methods.edge import EdgeRole
from hierbench.spec.provenance import provenance
from hierbench.spec.records import (  # noqa: F401 (write_record: methods API)
    CPU_SHARE,
    RECORD_VERSION,
    TRAIN_CLOCK,
    write_record,
)


def environment() -> dict:
    from hierbench import __version__, _ext

    return {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "hierbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "extension": _ext.build_info() if _ext.available() else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **provenance(),
    }


def cpu_share(steps: list[dict], span: str | None = None) -> float | None:
    """CPU time got ÷ wall time of the steps' compute spans (``span`` key, else ``t1 - t0``),
    or None when no step recorded its CPU time."""
    got = [r for r in steps if r.get("cpu_s") is not None]
    wall = sum(r[span] if span else r["t1"] - r["t0"] for r in got)
    return sum(r["cpu_s"] for r in got) / wall if got and wall > 0 else None


class Progress:
    """Console progress on stderr: one line showing every role (``edge 12/20 [###...] loss 1.23
    | cloud 9/20 [##....] loss 2.10 | 4.2s``), redrawn a few times a second.

    ``lines=True`` writes machine-readable lines instead, to stdout by default (``progress ROLE
    DONE TOTAL LOSS`` and ``note TEXT``), for a parent process to show in its own line
    (:func:`run_two_processes`). Call :meth:`close` at the end to finish the line.
    """

    def __init__(self, enabled: bool = True, stream=None, *, lines: bool = False) -> None:
        self.enabled = enabled
        self.stream = (sys.stdout if lines else sys.stderr) if stream is None else stream
        self.lines = lines
        self._state: dict[str, tuple[int, int, float | None]] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._width = 0  # characters of the line on screen (0: none)

    def __call__(self, role: str, done: int, total: int, rec: dict) -> None:
        if not self.enabled:
            return
        t = time.perf_counter()
        with self._lock:
            self._state[role] = (done, total, rec.get("loss"))
            key = role if self.lines else ""
            if done < total and t - self._last.get(key, 0.0) < (0.5 if self.lines else 0.25):
                return
            self._last[key] = t
            if self.lines:
                loss = rec.get("loss")
                loss_s = "nan" if loss is None else repr(float(loss))
                self.stream.write(f"progress {role} {done} {total} {loss_s}\n")
                self.stream.flush()
            else:
                self._draw(t)

    def note(self, text: str) -> None:
        """A message on a line of its own (the progress line is redrawn below it)."""
        if not self.enabled:
            return
        with self._lock:
            if self.lines:
                self.stream.write(f"note {text}\n")
            else:
                self.stream.write("\r" + " " * self._width + "\r" + text + "\n")
                self._width = 0
                if self._state:
                    self._draw(time.perf_counter())
            self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled or self.lines:
            return
        with self._lock:
            if self._state:
                self._draw(time.perf_counter())
                self.stream.write("\n")
                self.stream.flush()
            self._state.clear()
            self._width = 0

    def _draw(self, t: float) -> None:
        parts = []
        for role, (done, total, loss) in self._state.items():
            fill = int(10 * done / max(total, 1))
            loss_s = f" loss {loss:.3f}" if loss is not None and loss == loss else ""
            parts.append(f"{role} {done}/{total} [{'#' * fill}{'.' * (10 - fill)}]{loss_s}")
        line = " | ".join(parts) + f" | {t - self._t0:.1f}s"
        pad = max(self._width - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)


def assemble_record(cfg: RunConfig, edge: dict, link_records: list | None = None) -> dict:
    """Merge the two roles' records into one run record with totals."""
    cloud = edge.pop("cloud")
    steps_e, steps_c = edge["steps"], cloud["steps"]
    t_end = max(r["t1"] for r in steps_e + steps_c) if steps_e else edge["t_edge_done"]
    # The end-to-end clock (spec.records): the edge's first step to the last training event on
    # either side, nothing subtracted. Evaluation belongs outside it: timing runs evaluate at
    # the end, and whatever evaluation did fall inside is reported, never subtracted.
    first = min(r["t0"] for r in steps_e) if steps_e else edge["t_start"]
    eval_s = sum(e.get("edge_eval_s", 0.0) for e in edge["epochs"])
    totals = {
        "batches": len(steps_e),
        "wall_s": t_end - edge["t_start"],
        "train_wall_s": t_end - first,
        "edge_busy_s": sum(r.get("compute_s", r["t1"] - r["t0"]) for r in steps_e),
        "cloud_busy_s": sum(r["t1"] - r["t0"] for r in steps_c),
        "edge_eval_s": eval_s,
        "bytes_up": sum(r["bytes_up"] for r in steps_e),
        "bytes_down": sum(r.get("bytes_down", 0) for r in steps_e),
        "uplink_stall_s": edge["uplink_stall_s"],
        "cloud_away_s": edge.get("cloud_away_s", 0.0),
        "reconnects": edge.get("reconnects", 0),
        "eval_in_window_s": sum(
            max(
                0.0,
                min(e["eval_start_s"] + e["edge_eval_s"], t_end) - max(e["eval_start_s"], first),
            )
            for e in edge["epochs"]
            if "eval_start_s" in e
        ),
        "edge_cpu_share": cpu_share(steps_e, "compute_s"),
        "cloud_cpu_share": cpu_share(steps_c),
    }
    epochs = edge["epochs"]
    return {
        "record_version": RECORD_VERSION,
        "config": cfg.to_dict(),
        "environment": environment(),
        "conventions": {
            "clock": "time.perf_counter (CLOCK_MONOTONIC): comparable across processes on one "
            "machine",
            "train_wall_s": TRAIN_CLOCK,
            "cpu_share": CPU_SHARE,
            "bytes": "message bytes: 32-byte header + 1 byte per label (K <= 256) + payload",
            "upload": "every batch is uploaded each time it is used (online setting)",
        },
        "steps_per_epoch": edge["steps_per_epoch"],
        "edge_steps": steps_e,
        "cloud_steps": steps_c,
        "epochs": epochs,
        "link": link_records,
        "totals": totals,
    }


def check_resumable(cfg: RunConfig) -> None:
    """One edge and one cloud checkpoint only cloud-only and hierarchical runs (a fleet's split
    learning does: :mod:`hierbench.fleet`). Raises ConfigError for split with checkpoints."""
    if cfg.checkpoint_every and cfg.method == "split":
        raise ConfigError(
            "checkpoint/resume of a one-edge run supports cloud_only and hierarchical: split "
            "learning is synchronous (the edge waits on every gradient); restart a split run "
            "instead"
        )


def run(
    cfg: RunConfig,
    *,
    progress: bool = True,
    channels=None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """Both roles in this process: the cloud in a thread, the edge here. Returns the run record.

    ``channels``: optional ``((edge_data, cloud_data), (edge_control, cloud_control))``; by default
    the transfer engine's in-process pairs, the data pair shaped by ``cfg.link``.
    ``checkpoint_dir`` (with ``cfg.checkpoint_every``): both roles checkpoint there (``edge.pt``,
    ``cloud.pt``); ``resume``: both start from their checkpoints.
    """
    check_resumable(cfg)
    from hierbench.methods import channels as ch

    torch.set_num_threads(max(cfg.threads_edge, cfg.threads_cloud))
    own = channels is None
    if own:
        channels = ch.inprocess_channels(cfg)
    (edge_data, cloud_data), (edge_ctrl, cloud_ctrl) = channels
    prog = Progress(progress)
    cloud = CloudRole(
        cloud_data, cloud_ctrl, progress=prog, checkpoint_dir=checkpoint_dir, resume=resume
    )
    error: list[BaseException] = []

    def cloud_main():
        try:
            cloud.run()
        except BaseException as exc:
            error.append(exc)
            for c in (cloud_data, cloud_ctrl):
                c.close()

    thread = threading.Thread(target=cloud_main, name="cloud", daemon=True)
    thread.start()
    try:
        edge_rec = EdgeRole(
            cfg,
            edge_data,
            edge_ctrl,
            progress=prog,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
        ).run()
    except BaseException:
        if own:  # let the cloud thread fail too, rather than wait for an edge that is gone
            for c in (edge_data, cloud_data, edge_ctrl, cloud_ctrl):
                c.close(timeout=0)
            thread.join(timeout=10)
        if error and not isinstance(error[0], TransferError):
            raise error[0] from None
        raise
    finally:
        prog.close()
    thread.join()
    if error:
        raise error[0]
    link = ch.link_records(edge_data)
    if own:
        for c in (edge_data, cloud_data, edge_ctrl, cloud_ctrl):
            c.close()
    return assemble_record(cfg, edge_rec, link)


@contextlib.contextmanager
def _pinned(cpu: int | None):
    """Run this process on one CPU (restored afterwards), or leave it alone."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def run_cloud(
    host: str,
    port: int,
    secret: bytes,
    *,
    link: str | None = None,
    outages: tuple = (),
    cpu: int | None = None,
    threads: int = 1,
    progress: bool | Progress = True,
    accept_timeout: float | None = 300.0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """The cloud process: listen, accept the data then the control connection, train, report.

    ``link`` (and ``outages``) shape what the cloud sends on the data channel (split learning's
    gradients, at the downlink rate); it must equal the edge's ``cfg.link``. With
    ``cfg.checkpoint_every``, an edge that goes away is waited for (``accept_timeout`` seconds
    per connection): the cloud accepts it again when it comes back, restarted or not.
    """
    from hierbench import transfer
    from hierbench.methods.channels import EngineChannel, make_link

    torch.set_num_threads(threads)
    shaped = make_link(RunConfig(link=link, outages=outages))
    prog = progress if isinstance(progress, Progress) else Progress(progress)
    log = prog.note if prog.lines else lambda text: print(text, file=sys.stderr, flush=True)
    # Connections that fail the handshake (strangers, garbage, wrong secrets, silence) are
    # dropped by the listener and only logged here: they never reach accept() or stop the cloud.
    on_reject = lambda why: log(f"cloud: {why}")  # noqa: E731
    with _pinned(cpu), transfer.listen(host, port, secret, link=shaped, on_reject=on_reject) as lst:
        print(f"hierbench cloud listening on {lst.host}:{lst.port}", flush=True)
        watching = threading.Event()  # report drops while training too, not only in accept()

        def watch():
            while not watching.wait(0.5):
                lst.report_rejections()

        threading.Thread(target=watch, name="cloud-rejections", daemon=True).start()

        def accept_both():
            data = lst.accept(timeout=accept_timeout)
            try:
                control = lst.accept(timeout=accept_timeout, link=transfer.Link())
            except BaseException:
                data.close(timeout=0)
                raise
            return EngineChannel(data), EngineChannel(control)

        data, control = accept_both()
        cloud = CloudRole(
            data,
            control,
            progress=prog,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            reaccept=accept_both,
            log=log,
        )
        cloud.expected_link = link
        try:
            result = cloud.run()
        finally:
            watching.set()
            prog.close()
            for c in {id(x): x for x in (data, control, cloud.data, cloud.control)}.values():
                c.close()
    return result


def run_edge(
    cfg: RunConfig,
    host: str,
    port: int,
    secret: bytes,
    *,
    cpu: int | None = None,
    progress: bool | Progress = True,
    connect_timeout: float = 60.0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """The edge process: connect the data then the control channel, drive the run, return the
    merged run record.

    ``checkpoint_dir`` (with ``cfg.checkpoint_every``): the edge checkpoints to
    ``<checkpoint_dir>/edge.pt``; ``resume``: it starts from there, and the cloud (still running,
    or restarted with ``--resume``) tells it from which step to upload.
    """
    check_resumable(cfg)
    from hierbench import transfer
    from hierbench.methods.channels import EngineChannel, link_records, make_link

    torch.set_num_threads(cfg.threads_edge)
    prog = progress if isinstance(progress, Progress) else Progress(progress)

    def connect_both(timeout: float = connect_timeout):
        data = transfer.connect(
            host, port, secret, link=make_link(cfg), slots=cfg.slots, timeout=timeout
        )
        try:
            control = transfer.connect(host, port, secret, timeout=timeout)
        except BaseException:
            data.close(timeout=0)
            raise
        return EngineChannel(data), EngineChannel(control)

    def first_connection():
        """A resumable edge (``cfg.checkpoint_every``) retries for up to ``connect_timeout``
        seconds while the cloud is not listening (restarting after a crash, or not started
        yet); a wrong secret fails at once."""
        deadline = time.monotonic() + connect_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return connect_both(max(left, 0.1) if cfg.checkpoint_every else connect_timeout)
            except TransferError as exc:
                if not cfg.checkpoint_every or "authentication failed" in str(exc):
                    raise
                if time.monotonic() + 0.5 >= deadline:
                    raise
            time.sleep(0.5)

    with _pinned(cpu):
        data, control = first_connection()
        edge = EdgeRole(
            cfg,
            data,
            control,
            progress=prog,
            reconnect=lambda: connect_both(5.0),
            checkpoint_dir=checkpoint_dir,
            resume=resume,
        )
        try:
            rec = edge.run()
            links = link_records(edge.data)  # the last connection's timeline
        finally:
            if not isinstance(progress, Progress):
                prog.close()
            for c in (edge.data, edge.control):
                c.close()
    record = assemble_record(cfg, rec, links)
    record["processes"] = 2
    return record


def start_cloud_process(
    secret: str,
    *,
    link: str | None,
    listen: str = "127.0.0.1:0",
    outages: tuple = (),
    threads: int = 1,
    cpu: int | None = None,
    extra: tuple[str, ...] = (),
    progress_lines: bool = False,
    prefix: tuple[str, ...] | list[str] = (),
) -> tuple[subprocess.Popen, str, int]:
    """Start ``hierbench cloud`` in a child process; return it and the address it listens on.

    ``extra``: more ``hierbench cloud`` arguments (``--checkpoint-dir``, ``--resume``).
    ``progress_lines``: the child reports its progress on stdout as lines for
    :func:`follow_progress` (else it runs ``--quiet``). ``prefix``: a command to run it under
    (``ip netns exec NS``).
    """
    cmd = [*prefix, sys.executable, "-m", "hierbench.cli", "cloud", "--listen", listen]
    cmd += ["--progress-lines" if progress_lines else "--quiet"]
    cmd += ["--threads", str(threads), "--link", link or "none", *extra]
    for a, b in outages:
        cmd += ["--outage", f"{a}:{b}"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    env = dict(os.environ, HIERBENCH_SECRET=secret)
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    line = child.stdout.readline()
    if "listening on" not in line:
        child.kill()
        child.wait()
        raise ProcessError(f"cloud process failed to start: {line}{child.stderr.read()}")
    host, _, port = line.strip().rpartition(" ")[2].rpartition(":")
    return child, host, int(port)


def follow_progress(stream, progress: Progress) -> threading.Thread:
    """Show a child's ``--progress-lines`` output (read from ``stream`` on a thread until EOF)
    in ``progress``: its role's state joins this process's progress line."""

    def follow():
        for line in stream:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "progress":
                with contextlib.suppress(ValueError):
                    role, done, total, loss = rest.split(" ")
                    value = float(loss)
                    rec = {"loss": None if value != value else value}
                    progress(role, int(done), int(total), rec)
            elif kind == "note":
                progress.note(rest)

    thread = threading.Thread(target=follow, name="child-progress", daemon=True)
    thread.start()
    return thread


def run_two_processes(
    cfg: RunConfig,
    *,
    cpus: tuple[int | None, int | None] = (None, None),
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """The edge here and the cloud in a child process (``hierbench cloud``), over loopback TCP.

    ``cpus``: (edge CPU, cloud CPU) to pin each process to one core, or ``None``.
    ``checkpoint_dir`` (with ``cfg.checkpoint_every``): both roles checkpoint there (``edge.pt``,
    ``cloud.pt``); ``resume``: both start from their checkpoints. With ``progress`` the console
    line shows both roles (the child's progress is forwarded from its stdout).
    """
    check_resumable(cfg)
    secret = secrets.token_hex(32)
    extra: tuple[str, ...] = ()
    if checkpoint_dir is not None:
        extra = ("--checkpoint-dir", str(checkpoint_dir), *(("--resume",) if resume else ()))
    child, host, port = start_cloud_process(
        secret,
        link=cfg.link,
        outages=cfg.outages,
        threads=cfg.threads_cloud,
        cpu=cpus[1],
        extra=extra,
        progress_lines=progress,
    )
    prog = Progress(progress)
    follower = follow_progress(child.stdout, prog)
    try:
        record = run_edge(
            cfg,
            host,
            port,
            secret.encode(),
            cpu=cpus[0],
            progress=prog,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
        )
        rc = child.wait(timeout=120)
        follower.join(timeout=5)
        if rc != 0:
            raise ProcessError(f"cloud process exited with {rc}: {child.stderr.read()[-2000:]}")
    finally:
        prog.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    record["cpus"] = list(cpus)
    return record
