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
from collections.abc import Callable, Sequence
from pathlib import Path

from hierbench.errors import ConfigError
from hierbench.experiments.grid import Experiment, Preset
from hierbench.experiments.presets import get_preset
from hierbench.spec.records import read_record

MANIFEST_VERSION = 1


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def _cpus() -> tuple[int | None, int | None]:
    """Two distinct CPUs for the edge and cloud processes, or no pinning on a 1-CPU machine."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def finished(out: Path, exp: Experiment) -> bool:
    """Whether ``out/runs/<id>.json`` holds a finished run of exactly this experiment."""
    path = out / "runs" / f"{exp.id}.json"
    if not path.is_file():
        return False
    try:
        rec = read_record(path)
    except ConfigError:  # unreadable, cut short, or another record version: run it again
        return False
    from hierbench.methods import RunConfig

    try:
        return RunConfig.from_dict(rec["config"]) == exp.run_config()
    except (ConfigError, TypeError, ValueError, KeyError):
        return False


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
    }
    _write_json(out / "manifest.json", manifest)
    todo = [e for e in preset.experiments if not only or e.kind in only]
    cpus = _cpus()
    for i, exp in enumerate(todo, 1):
        head = f"[run {i}/{len(todo)}] {exp.id}"
        if finished(out, exp):
            say(f"{head}: finished earlier, skipped")
            continue
        say(f"{head} ...")
        cfg = exp.run_config()
        t0 = time.perf_counter()
        if exp.kind == "timing":
            record = runner.run_two_processes(cfg, cpus=cpus, progress=progress)
        else:
            record = runner.run(cfg, progress=progress)
        elapsed = time.perf_counter() - t0
        record["experiment"] = {"id": exp.id, "kind": exp.kind, "preset": preset.name}
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
