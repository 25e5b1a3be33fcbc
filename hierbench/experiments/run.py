"""Running a preset: :func:`run_preset` runs its experiments in order into ``results/<preset>/``.

It writes one run record per experiment (``runs/<id>.json``, written atomically when the run
finishes) and ``manifest.json`` (the preset, the command, the machine, each run's status and
time). It is resumable: an experiment whose record exists with the same config is skipped
(:func:`finished`). An existing folder is never replaced without ``overwrite=True`` and never
extended without ``resume=True`` (:func:`prepare_folder`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from hierbench.errors import ConfigError
from hierbench.experiments.grid import Experiment, Preset
from hierbench.experiments.presets import get_preset
from hierbench.spec import records
from hierbench.spec.profiles import profile_filename
from hierbench.spec.provenance import git_state
from hierbench.spec.records import CPU_SHARE_MIN, read_record

MANIFEST_VERSION = 1


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(records.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def _cpus() -> tuple[int | None, int | None]:
    """Two distinct CPUs for the edge and cloud processes, or no pinning on a 1-CPU machine."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def finished(out: Path, exp: Experiment, *, accept_other_commits: bool = False) -> bool:
    """Whether ``out/runs/<id>.json`` holds a finished run of exactly this experiment, made by
    this code: the same commit, and the same uncommitted diff if the tree was dirty.

    Raises:
        ConfigError: the record was made by other code (another commit, another diff, or no
            commit recorded) and ``accept_other_commits`` is false: results of different code
            are never mixed silently.
    """
    path = out / "runs" / f"{exp.id}.json"
    if not path.is_file():
        return False
    try:
        rec = read_record(path)
    except ConfigError:  # unreadable, cut short, or another record version: run it again
        return False
    from hierbench.methods import RunConfig

    try:
        same = RunConfig.from_dict(rec["config"]) == exp.run_config()
    except (ConfigError, TypeError, ValueError, KeyError):
        return False
    if same and not accept_other_commits:
        ours, theirs = git_state(), rec.get("environment", {})
        keys = ("git_sha", "git_dirty", "git_diff_sha256")
        if ours["git_sha"] == "unknown" or tuple(theirs.get(k) for k in keys) != tuple(
            ours[k] for k in keys
        ):

            def code(env: dict) -> str:
                sha = str(env.get("git_sha") or "unknown")[:12]
                return sha + (" + uncommitted changes" if env.get("git_dirty") else "")

            raise ConfigError(
                f"{path} was made by {code(theirs)}, this is {code(ours)}: a resumed folder must "
                "come from one version of the code; pass --accept-other-commits to keep it "
                "anyway (the manifest records that), or start again with --overwrite"
            )
    return same


#: Untimed and timed runs per measured region of a calibration profile.
CALIBRATION_WARMUP, CALIBRATION_REPEATS = 3, 7
#: Measurements of one calibration profile at most, while it gets under CPU_SHARE_MIN of a core.
CALIBRATION_ATTEMPTS = 3


#: The busy wait between the steps of an edge calibration lasts (k - 1)·t as in the runs, but at
#: most this long: it is there so that each timed step starts, as in the run, on a core that was
#: kept busy (not asleep: cold caches, a lower clock), which a second does as well as ten.
CALIBRATION_GAP_MAX_S = 1.0


def calibrate(
    out: Path, experiments: Sequence[Experiment], say: Callable[[str], None], cpu: int | None
) -> dict:
    """Profile, right before the runs, the blocks the timing runs use (one thread, pinned like
    their edge), into ``out/profiles/batch-<B>/``: the predictions beside the measured runs use
    these, not profiles measured at another time. Profiles already there are kept (resume)."""
    from hierbench import profiling

    wanted: dict[Path, dict] = {}
    for exp in experiments:
        if exp.kind != "timing":
            continue
        c = exp.config
        key = {
            "model": c.get("model", "resnet18"),
            "stem": c.get("stem", "imagenet"),
            "dataset": c.get("dataset", "cifar10"),
            "batch": c.get("batch_size", 128),
        }
        threads = c.get("threads_edge", 1)
        name = profile_filename(key["model"], key["stem"], key["dataset"], "cpu", threads)
        wanted.setdefault(out / "profiles" / f"batch-{key['batch']}" / name, key)
    done = {}
    for path, key in wanted.items():
        if path.is_file():
            say(f"[calibrate] {path.parent.name}/{path.name}: measured earlier, kept")
            continue
        say(f"[calibrate] {path.parent.name}/{path.name} (1 thread) ...")
        t0 = time.perf_counter()
        old = os.sched_getaffinity(0) if cpu is not None else None
        attempts = []
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            # A profile that did not get the CPU (other work ran) is measured again, up to
            # CALIBRATION_ATTEMPTS times; the least disturbed one is kept and its share recorded.
            while len(attempts) < CALIBRATION_ATTEMPTS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # share checked below
                    prof = profiling.measure_profile(
                        key["model"],
                        stem=key["stem"],
                        dataset=key["dataset"],
                        batch=key["batch"],
                        threads=1,
                        # no whole edge step: each run with an edge part has its own, timed
                        # right before it (edge_calibration)
                        # more than the profiler's default (1 + 3): the medians of a few-second
                        # profile are what every prediction beside a measured run rests on
                        warmup=CALIBRATION_WARMUP,
                        repeats=CALIBRATION_REPEATS,
                        command="hierbench reproduce (calibration before the timing runs)",
                    )
                attempts.append(prof)
                share = prof.meta.get("cpu_share")
                if share is None or share >= CPU_SHARE_MIN:
                    break
                say(
                    f"[calibrate] {path.parent.name}/{path.name}: got {share:.0%} of a core "
                    f"(< {CPU_SHARE_MIN:.0%}: other work ran), measuring again"
                )
        finally:
            if old is not None:
                os.sched_setaffinity(0, old)
        prof = max(attempts, key=lambda p: p.meta.get("cpu_share") or 0.0)
        profiling.write_profile(prof, path)
        name = f"{path.parent.name}/{path.name}"
        done[name] = {
            "batch": key["batch"],
            "elapsed_s": round(time.perf_counter() - t0, 1),
            "attempts": len(attempts),
            "cpu_share": prof.meta.get("cpu_share"),
        }
        say(f"[calibrate] {name}: {done[name]['elapsed_s']} s")
    return done


def edge_timed_per_run(exp: Experiment) -> bool:
    """Whether ``exp`` is a timing run (engine- or kernel-shaped) with an edge part (hierarchical
    or split): such a run gets its whole edge step timed right before it
    (:func:`edge_calibration`)."""
    c = exp.config
    return exp.kind in ("timing", "kernel") and c.get("method", "hierarchical") != "cloud_only"


def edge_calibration(exp: Experiment, cpu: int | None) -> dict:
    """The whole edge training step of ``exp`` (its edge blocks and exit head; the model scales
    the edge terms of every method to it) timed right before the run: alone, one thread, pinned
    like the run's edge, 1 warm-up + 2 timed steps; with a slowed edge, a busy wait between steps
    as in the run (at most :data:`CALIBRATION_GAP_MAX_S`). Measured again, up to
    :data:`CALIBRATION_ATTEMPTS` times, while it got under :data:`CPU_SHARE_MIN` of its core.

    Why per run: the CPUs here drift by several per cent within minutes (results/quick at commit
    98d8a0d, three of the four slowed-edge points, ``runs/*-k10-*.json``: in-run edge compute
    2.5 % above the profile in the first repeat, right after calibration, and 5.5-6.7 % above it
    in the later ones), and the edge's compute is most of a prediction wherever the edge is the
    bottleneck; profiles taken once before all runs cannot follow that.
    """
    from hierbench import profiling
    from hierbench.methods.parts import idle

    c = exp.config
    k = float(c.get("edge_slowdown", 1.0))
    gap = None
    if k > 1.0:
        cap = CALIBRATION_GAP_MAX_S / (k - 1.0)
        gap = (
            f"busy min((k - 1)·t, {CALIBRATION_GAP_MAX_S:g} s) after each step, k = {k:g}",
            lambda t: idle(min(t, cap), k),
        )
    old = os.sched_getaffinity(0) if cpu is not None else None
    attempts = []
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        while len(attempts) < CALIBRATION_ATTEMPTS:
            cal = profiling.measure_edge_step(
                c.get("model", "resnet18"),
                c.get("cut", "layer3"),
                stem=c.get("stem", "imagenet"),
                dataset=c.get("dataset", "cifar10"),
                head=c.get("exit_head", "conv"),
                batch=c.get("batch_size", 128),
                threads=c.get("threads_edge", 1),
                precision=c.get("precision", "fp32"),
                gap=gap,
            )
            attempts.append(cal)
            if cal["cpu_share"] >= CPU_SHARE_MIN:
                break
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)
    cal = max(attempts, key=lambda a: a["cpu_share"])
    cal["attempts"] = len(attempts)
    cal["when"] = "right before the run, alone, pinned like its edge"
    return cal


def _check_results_folder(out: Path) -> None:
    """ConfigError unless ``out`` is a results folder that this code made (``--overwrite``
    deletes it): a ``manifest.json`` with a manifest version and a preset, and nothing in it
    but what :func:`run_preset` and the report write. Any other folder (a home directory, a
    source tree) is never deleted."""
    manifest_path = out / "manifest.json"
    why = None
    if out.is_symlink() or not out.is_dir():
        why = "it is not a folder"
    elif not manifest_path.is_file():
        why = "it has no manifest.json"
    else:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            manifest, why = None, f"its manifest.json is unreadable ({exc})"
        if manifest is not None and (
            not isinstance(manifest, dict)
            or "manifest_version" not in manifest
            or not isinstance(manifest.get("preset"), dict)
        ):
            why = "its manifest.json is not a hierbench manifest"
    if why is None:
        extra = sorted(p.name for p in out.iterdir() if p.name not in RESULTS_ENTRIES)
        if extra:
            why = f"it holds files a results folder does not ({', '.join(extra[:5])})"
    if why is not None:
        raise ConfigError(
            f"--overwrite refuses to delete {out}: {why}, so it is not a hierbench results "
            "folder; delete it yourself if that is what you want, or choose another --out"
        )


#: What a results folder holds (:func:`run_preset`, ``hierbench reproduce``, the report).
RESULTS_ENTRIES = frozenset(
    {
        "manifest.json",
        "manifest.json.tmp",
        "foundation.json",
        "runs",
        "profiles",
        "tables",
        "plots",
        "README.md",
        "checkpoints",
    }
)


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
            _check_results_folder(out)
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
    accept_other_commits: bool = False,
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
        accept_other_commits: with ``resume``, keep finished runs made by another commit
            (otherwise :func:`finished` refuses them).
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
        "calibration": dict((previous or {}).get("calibration", {})),
    }
    if accept_other_commits:
        manifest["sessions"][-1]["accepted_other_commits"] = True
    _write_json(out / "manifest.json", manifest)
    todo = [e for e in preset.experiments if not only or e.kind in only]
    cpus = _cpus()
    if preset.calibrate:
        manifest["calibration"].update(calibrate(out, todo, say, cpus[0]))
        _write_json(out / "manifest.json", manifest)
    for i, exp in enumerate(todo, 1):
        head = f"[run {i}/{len(todo)}] {exp.id}"
        if finished(out, exp, accept_other_commits=accept_other_commits):
            say(f"{head}: finished earlier, skipped")
            continue
        say(f"{head} ...")
        cfg = exp.run_config()
        t0 = time.perf_counter()
        timed = preset.calibrate and edge_timed_per_run(exp)
        cal = edge_calibration(exp, cpus[0]) if timed else None
        if cal is not None:
            say(
                f"{head}: edge step {1e3 * cal['edge_step_s'][cfg.cut][cfg.exit_head]:.1f} ms"
                f" (timed just now, CPU share {cal['cpu_share']:.2f})"
            )
        if exp.kind == "kernel":
            from hierbench.methods.kernel_shaped import run_kernel_shaped, unavailable_reason

            why = unavailable_reason()
            if why:
                manifest["runs"][exp.id] = {"kind": exp.kind, "skipped": why}
                _write_json(out / "manifest.json", manifest)
                say(f"{head}: skipped ({why})")
                continue
            record = run_kernel_shaped(cfg, cpus=cpus)
        elif exp.kind == "timing":
            record = runner.run_two_processes(cfg, cpus=cpus, progress=progress)
        else:
            record = runner.run(cfg, progress=progress)
        if cal is not None:
            record["calibration"] = cal
        elapsed = time.perf_counter() - t0
        record["experiment"] = {
            "id": exp.id,
            "kind": exp.kind,
            "repeat": exp.repeat,
            "preset": preset.name,
        }
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
