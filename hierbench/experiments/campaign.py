"""Running a campaign (:mod:`hierbench.experiments.converge`): resumable across interruptions
and sessions.

``run_campaign(campaign, out)`` walks the campaign's runs in order:

- a run whose record ``out/runs/<id>.json`` exists with exactly the run's config is skipped;
  a record with the same id but another config stops the campaign with a ConfigError (records
  of different configs are never mixed: move the folder away, or fix the campaign);
- a final run's learning rate is the one its group's sweep picked (``tuning.json``); it cannot
  start before every sweep run of its variant has finished;
- each run checkpoints (``out/checkpoints/<id>/``, git-ignored) every ``checkpoint_every``
  steps and at every epoch boundary once that epoch's evaluation is in (both roles, one process);
  a run interrupted in any way resumes from its checkpoints when the same command is run again,
  and ends exactly as an uninterrupted run would (``tests/methods/test_converge_methods.py``);
- every finished record is written atomically, slimmed (per-step lists dropped: per-epoch values
  and totals kept), then ``on_record`` is called (the CLI regenerates the report and may commit);
- ``campaign.json`` holds the campaign, the tuning picks, and every attempt at every run with its
  start, its last heartbeat (every ``heartbeat_s``) and its elapsed time: machine time spent,
  interrupted attempts included.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hierbench.errors import ConfigError
from hierbench.experiments.converge import Campaign, Run, pick_lr
from hierbench.spec import records
from hierbench.spec.records import read_record, write_record

CAMPAIGN_VERSION = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(records.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def final_accuracy(rec: dict, key: str = "final_acc") -> float | None:
    """The last epoch's ``key`` accuracy of a record (None if missing)."""
    epochs = rec.get("epochs") or []
    return epochs[-1].get(key) if epochs else None


class CampaignRunner:
    def __init__(
        self,
        campaign: Campaign,
        out: str | Path,
        *,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
        on_record: Callable[[Path], None] | None = None,
        heartbeat_s: float = 60.0,
        command: str | None = None,
    ) -> None:
        self.campaign = campaign
        self.out = Path(out)
        self.progress = progress
        self.say = log or (lambda s: print(s, flush=True))
        self.on_record = on_record
        self.heartbeat_s = heartbeat_s
        self.command = command
        self.runs = campaign.runs()
        self.state_path = self.out / "campaign.json"

    # -- state ---------------------------------------------------------------------------------

    def _load_state(self) -> dict:
        if self.state_path.is_file():
            state = json.loads(self.state_path.read_text())
            if state.get("campaign", {}).get("name") != self.campaign.name:
                raise ConfigError(
                    f"{self.out} holds campaign {state.get('campaign', {}).get('name')!r}, not "
                    f"{self.campaign.name!r}: use another --out"
                )
            return state
        if self.out.exists() and any(
            p.name not in ("campaign.log", ".lock") for p in self.out.iterdir()
        ):
            raise ConfigError(
                f"{self.out} is not empty and has no campaign.json: use another --out"
            )
        return {"campaign_version": CAMPAIGN_VERSION, "attempts": {}, "sessions": []}

    def _save_state(self) -> None:
        with self._lock:
            self.state["campaign"] = self.campaign.to_dict()
            self.state["runs"] = [
                {
                    "id": r.id,
                    "stage": r.stage,
                    "group": r.group,
                    "variant": r.variant,
                    "seed": r.seed,
                    "epochs": r.config.get("epochs"),
                    "lr": r.config.get("lr"),
                }
                for r in self.runs
            ]
            self.state["updated_utc"] = _now()
            _write_json(self.state_path, self.state)

    # -- records -------------------------------------------------------------------------------

    def record_path(self, run: Run) -> Path:
        return self.out / "runs" / f"{run.id}.json"

    def resolved_config(self, run: Run) -> dict | None:
        """The run's config with its learning rate filled in (None: the sweep has not picked
        one yet)."""
        if not run.needs_lr:
            return dict(run.config)
        lr = self.picks().get(run.group, {}).get(run.variant)
        return None if lr is None else {**run.config, "lr": lr}

    def picks(self) -> dict[str, dict[str, float | None]]:
        """Per group and variant, the learning rate its sweep picked (None while incomplete)."""
        out: dict[str, dict[str, float | None]] = {}
        for g in self.campaign.groups:
            sweeps = g.sweep_runs()
            for v in g.variants:
                accs: dict[float, float | None] = {}
                for r in sweeps:
                    if r.variant != v:
                        continue
                    rec = self._finished(r, dict(r.config))
                    accs[float(r.config["lr"])] = None if rec is None else final_accuracy(rec)
                out.setdefault(g.name, {})[v] = pick_lr(accs)
        return out

    def _finished(self, run: Run, config: dict) -> dict | None:
        """The run's finished record, or None. A record of another config is an error."""
        path = self.record_path(run)
        if not path.is_file():
            return None
        rec = read_record(path)
        from hierbench.methods import RunConfig

        mine = RunConfig.from_dict(config)
        theirs = RunConfig.from_dict(rec["config"])
        if mine != theirs:
            a, b = mine.to_dict(), theirs.to_dict()
            diff = ", ".join(f"{k}: {b[k]!r} there, {a[k]!r} here" for k in a if a[k] != b[k])
            raise ConfigError(
                f"{path} holds a run of another config ({diff}); records of different configs are "
                "never mixed: move it away (or restore the campaign's settings) and rerun"
            )
        return rec

    # -- running -------------------------------------------------------------------------------

    def status(self) -> list[tuple[Run, str]]:
        """Each run and its state: ``done``, ``partial`` (a checkpoint exists), ``waiting``
        (its learning rate is not picked yet) or ``todo``."""
        out = []
        for r in self.runs:
            cfg = self.resolved_config(r)
            if cfg is None:
                out.append((r, "waiting"))
            elif self._finished(r, cfg) is not None:
                out.append((r, "done"))
            elif (self.out / "checkpoints" / r.id / "edge.pt").exists():
                out.append((r, "partial"))
            else:
                out.append((r, "todo"))
        return out

    def run(
        self, *, only_stages: tuple[str, ...] | None = None, max_runs: int | None = None
    ) -> int:
        """Run every unfinished run in order; return how many ran to the end in this call."""
        self._lock = threading.RLock()
        self.out.mkdir(parents=True, exist_ok=True)
        self._hold_folder()
        self.state = self._load_state()
        self.state["sessions"].append({"start_utc": _now(), "command": self.command})
        self._save_state()
        done = 0
        for i, run in enumerate(self.runs, 1):
            head = f"[{i}/{len(self.runs)}] {run.id}"
            if only_stages and run.stage not in only_stages:
                continue
            cfg = self.resolved_config(run)
            if cfg is None:
                raise ConfigError(
                    f"{head}: its sweep has not picked a learning rate yet (unfinished sweep runs "
                    f"of {run.group}/{run.variant})"
                )
            if self._finished(run, cfg) is not None:
                continue
            if max_runs is not None and done >= max_runs:
                break
            self._run_one(run, cfg, head)
            done += 1
        self.state["picks"] = self.picks()
        self._save_state()
        _write_json(self.out / "tuning.json", self.tuning())
        left = [r.id for r, s in self.status() if s != "done"]
        self.say(
            f"campaign {self.campaign.name}: {len(self.runs) - len(left)}/{len(self.runs)} "
            "runs done"
        )
        return done

    def _hold_folder(self) -> None:
        """Take ``out/.lock`` for this process's lifetime: a second driver on the same folder
        (the same command run twice) stops with a ConfigError instead of racing the first."""
        import fcntl

        self._lock_file = open(self.out / ".lock", "w")  # noqa: SIM115 (held until exit)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise ConfigError(
                f"another campaign driver is running on {self.out} (it holds {self.out}/.lock): "
                "let it finish, or stop that process first"
            ) from None

    def tuning(self) -> dict:
        """The sweep's results and picks (``tuning.json``)."""
        out = {
            "campaign": self.campaign.name,
            "rule": "max final-epoch validation accuracy of the final classifier; ties: smaller lr",
            "groups": {},
        }
        picks = self.picks()
        for g in self.campaign.groups:
            rows = []
            for r in g.sweep_runs():
                path = self.record_path(r)
                rec = read_record(path) if path.is_file() else None
                rows.append(
                    {
                        "id": r.id,
                        "variant": r.variant,
                        "lr": r.config["lr"],
                        "val_final_acc": None if rec is None else final_accuracy(rec),
                        "val_exit_acc": None if rec is None else final_accuracy(rec, "exit_acc"),
                    }
                )
            out["groups"][g.name] = {"sweep": rows, "picked": picks.get(g.name, {})}
        return out

    def _run_one(self, run: Run, config: dict, head: str) -> None:
        from hierbench.methods import RunConfig, runner

        cfg = RunConfig.from_dict({**config, "checkpoint_every": self.campaign.checkpoint_every})
        ckpt = self.out / "checkpoints" / run.id
        resume = (ckpt / "edge.pt").exists()
        self.say(
            f"{head}: {'resuming' if resume else 'starting'} (lr {cfg.lr:g}, "
            f"{cfg.epochs} epochs) {_now()}"
        )
        attempt = {"start_utc": _now(), "resumed": resume, "elapsed_s": 0.0, "finished": False}
        with self._lock:
            self.state["attempts"].setdefault(run.id, []).append(attempt)
        self._save_state()
        stop = threading.Event()
        clock = {"last": time.perf_counter(), "busy": 0.0}

        def tick() -> None:
            """Add the time since the last tick, capped: a gap much longer than the heartbeat
            means this process was stopped (SIGSTOP: another job had the machine), which is
            not this campaign's machine time."""
            t = time.perf_counter()
            clock["busy"] += min(t - clock["last"], 1.5 * self.heartbeat_s)
            clock["last"] = t
            attempt["elapsed_s"] = round(clock["busy"], 1)

        def beat():
            while not stop.wait(self.heartbeat_s):
                with self._lock:
                    tick()
                    attempt["heartbeat_utc"] = _now()
                self._save_state()

        hb = threading.Thread(target=beat, name="heartbeat", daemon=True)
        hb.start()
        try:
            record = runner.run(cfg, progress=self.progress, checkpoint_dir=ckpt, resume=resume)
        finally:
            stop.set()
            hb.join()
            with self._lock:
                tick()
                attempt["end_utc"] = _now()
            self._save_state()
        # The record of the run as its config defines it (checkpointing is bookkeeping).
        record["config"] = RunConfig.from_dict(config).to_dict()
        record["experiment"] = {
            "id": run.id,
            "kind": "accuracy",
            "campaign": self.campaign.name,
            "stage": run.stage,
            "group": run.group,
            "variant": run.variant,
            "checkpoint_every": cfg.checkpoint_every,
            "attempts": len(self.state["attempts"][run.id]),
            "elapsed_s_all_attempts": round(
                sum(a["elapsed_s"] for a in self.state["attempts"][run.id]), 1
            ),
        }
        record["command"] = self.command
        slim(record)
        path = write_record(record, self.record_path(run))
        with self._lock:
            attempt["finished"] = True
        self._save_state()
        shutil.rmtree(ckpt, ignore_errors=True)
        last = record["epochs"][-1]
        self.say(
            f"{head}: done {_now()} final {last.get('final_acc')} exit {last.get('exit_acc')} "
            f"({attempt['elapsed_s']:.0f} s this attempt)"
        )
        if run.stage == "sweep":
            _write_json(self.out / "tuning.json", self.tuning())
        if self.on_record is not None:
            self.on_record(path)


def slim(record: dict) -> dict:
    """Drop the per-step lists and the link timeline (megabytes per long run), keeping
    per-epoch values and totals; say so in the record's conventions."""
    n_edge, n_cloud = len(record.get("edge_steps", [])), len(record.get("cloud_steps", []))
    record["edge_steps"], record["cloud_steps"], record["link"] = [], [], None
    record.setdefault("conventions", {})["steps"] = (
        f"per-step lists dropped to keep the record small ({n_edge} edge and {n_cloud} cloud "
        "steps ran); per-epoch losses and accuracies and the totals are kept"
    )
    return record


def run_campaign(campaign: Campaign, out: str | Path, **kw) -> int:
    run_kw = {k: kw.pop(k) for k in ("only_stages", "max_runs") if k in kw}
    return CampaignRunner(campaign, out, **kw).run(**run_kw)


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state T: SIGSTOP / job control)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def supervise(
    argv: list[str],
    out: str | Path,
    *,
    stale_s: float = 1800.0,
    poll_s: float = 20.0,
    max_failures: int = 3,
    log: Callable[[str], None] | None = None,
    cmd: list[str] | None = None,
) -> int:
    """Run ``python -m hierbench.cli *argv`` (a campaign driver) as a child process and keep it
    going: a child that made no progress for ``stale_s`` seconds (no checkpoint written under
    ``out/checkpoints/`` and no record finished: hung, deadlocked or stalled) is killed, and a
    child that dies before the campaign is done is restarted; every restart resumes exactly
    (per-run checkpoints, written at least once per epoch). Gives up after
    ``max_failures`` consecutive children that finished no run. Returns the last exit code.
    ``cmd``: the child's command instead (tests).
    """
    import os
    import subprocess
    import sys

    say = log or (lambda s: print(s, flush=True))
    runs_dir = Path(out) / "runs"

    ckpt_dir = Path(out) / "checkpoints"

    def progress() -> tuple:
        """What changes when the driver makes progress: records, checkpoint files."""
        newest = 0.0
        if ckpt_dir.is_dir():
            for f in ckpt_dir.rglob("*"):
                try:
                    newest = max(newest, f.stat().st_mtime)
                except OSError:
                    continue
        return (n_records(), newest)

    def n_records() -> int:
        return len(list(runs_dir.glob("*.json"))) if runs_dir.is_dir() else 0

    failures = 0
    while True:
        before = n_records()
        child = subprocess.Popen(
            cmd or [sys.executable, "-m", "hierbench.cli", *argv], env=os.environ
        )
        say(f"supervisor: started driver pid {child.pid} ({_now()})")
        last, stale, t_poll = progress(), 0.0, time.monotonic()
        while child.poll() is None:
            time.sleep(poll_s)
            now_ = time.monotonic()
            # Staleness counts only time the child could run: not while it is stopped (another
            # job SIGSTOPs it to have the machine), and at most 2 polls per gap (this
            # supervisor may have been stopped too).
            gap, t_poll = min(now_ - t_poll, 2 * poll_s), now_
            m = progress()
            if m != last:
                last, stale = m, 0.0
            elif not _stopped(child.pid):
                stale += gap
            if stale > stale_s:
                say(
                    f"supervisor: no progress from pid {child.pid} for {stale_s:.0f} s: "
                    f"killing it ({_now()})"
                )
                child.kill()
                child.wait()
        rc = child.returncode
        if rc == 0:
            say(f"supervisor: the driver finished ({_now()})")
            return 0
        failures = 0 if n_records() > before else failures + 1
        if failures >= max_failures:
            say(f"supervisor: {failures} drivers in a row finished no run (last exit {rc}): stop")
            return rc
        say(f"supervisor: driver exited with {rc}; restarting in 10 s")
        time.sleep(10)
