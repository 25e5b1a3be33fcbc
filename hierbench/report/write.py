"""``hierbench report``: tables (CSV + Markdown) and plots (PNG) from run records and profiles.

Reads only ``<folder>/manifest.json``, ``<folder>/runs/*.json`` (:mod:`hierbench.experiments`)
and the committed device profiles (``results/profiles``); imports no torch, so the tables
regenerate anywhere without retraining. Writes into the same folder::

    README.md              every table below, the conventions, the plots, the runs
    tables/reduction.csv   (a) predicted reduction per model × dataset × link, search's cut,
                           paper's cut, published number beside
    tables/sensitivity.csv which convention or assumption moves each headline number
    tables/accuracy.csv    (b) accuracy per method and cut, final classifier and edge exit
    tables/validation.csv  (c) predicted against measured wall clock, per run, per-stage times
    tables/validation_summary.csv  per timing point: repeats, median and min–max
    tables/measured.csv    measured reductions of the two-process runs (median, min–max)
    tables/profile_drift.csv  profiles measured with the runs against the committed ones
    tables/edge_fit.csv, edge_fit.json  the edge speed the published numbers imply
    tables/cloud_factor.csv  how much the assumed cloud speed moves each prediction
    tables/bytes.csv       (d) bytes per sample per cut and codec
    tables/CONVENTIONS.md  the conventions every table rests on (also in README.md)
    plots/runtime_vs_rate.png, reduction_vs_cut.png, timeline.png, accuracy.png
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from hierbench.report import fit, measured, tables
from hierbench.report.load import load_folder
from hierbench.report.markdown import results_readme
from hierbench.report.paper import (
    DEFAULT_REPORT,
    MEASURED_CONVENTIONS,
    PUBLISHED,
    convention_lines,
)

__all__ = ["write_report"]


def write_report(
    folder: str | Path,
    profile_dir: str | Path = "results/profiles",
    *,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the tables, plots and README.md of a results folder; return the README's path."""
    folder, profile_dir = Path(folder), Path(profile_dir)
    say = log or (lambda s: print(s, flush=True))
    manifest, records = load_folder(folder)
    settings = {**DEFAULT_REPORT, **((manifest.get("preset") or {}).get("report") or {})}
    configs, links = settings["configs"], settings["links"]
    timing = [r for r in records if r["_kind"] in ("timing", "kernel")]
    accuracy = [r for r in records if r["_kind"] == "accuracy"]
    (folder / "tables").mkdir(exist_ok=True)
    (folder / "plots").mkdir(exist_ok=True)

    # The profiles measured right before the runs (a calibrating preset), else the committed ones.
    calibrated = folder / "profiles"
    run_profiles = calibrated if any(calibrated.rglob("*.csv")) else profile_dir
    red = tables.reduction_table(profile_dir, configs, links)
    sens = tables.sensitivity_table(profile_dir, configs, settings["headline_link"])
    byt = tables.bytes_table(profile_dir, configs)
    val = measured.validation_table(timing, run_profiles, profile_dir)
    summ = measured.validation_summary(val)
    meas = measured.measured_table(timing, run_profiles, PUBLISHED)
    drift = measured.drift_table(calibrated, profile_dir) if run_profiles == calibrated else None
    curve, edge_fit = fit.edge_speed_fit(profile_dir, configs, settings["headline_link"])
    clouds = fit.cloud_factor_table(profile_dir, configs, links)
    acc = tables.accuracy_table(accuracy)
    for name, df, index in (
        ("reduction", red, False),
        ("sensitivity", sens, True),
        ("bytes", byt, False),
        ("validation", val, False),
        ("validation_summary", summ, False),
        ("measured", meas, False),
        ("profile_drift", drift, False),
        ("edge_fit", curve, True),
        ("cloud_factor", clouds, False),
        ("accuracy", acc, False),
    ):
        if df is not None:
            df.to_csv(folder / "tables" / f"{name}.csv", index=index, float_format="%.6g")
    (folder / "tables" / "edge_fit.json").write_text(json.dumps(edge_fit, indent=1) + "\n")
    (folder / "tables" / "CONVENTIONS.md").write_text(
        "# Conventions of the tables in this folder\n\n"
        "Predicted (reduction, sensitivity, bytes, and the predictions in validation):\n\n"
        + "".join(f"- {c}\n" for c in convention_lines())
        + "\nMeasured (validation, measured, accuracy):\n\n"
        + "".join(f"- {c}\n" for c in MEASURED_CONVENTIONS)
        + "\nFractions are fractions (0.61 = 61 %), times in seconds unless the column says ms.\n"
    )
    say(f"report: tables -> {folder / 'tables'} (conventions: tables/CONVENTIONS.md)")

    figs: dict[str, str] = {}
    if plots:
        from hierbench.report import plots as P

        main = _main_scenario(timing)
        figs["runtime_vs_rate"] = P.runtime_vs_rate(
            folder / "plots" / "runtime_vs_rate.png",
            main,
            profile_dir,
            configs,
            points=int(settings.get("sweep_points", 41)),
        ).name
        figs["reduction_vs_cut"] = P.reduction_vs_cut(
            folder / "plots" / "reduction_vs_cut.png",
            profile_dir,
            configs,
            settings["headline_link"],
        ).name
        tl = _timeline_runs(main, settings["headline_link"])
        if tl:
            figs["timeline"] = P.timeline(folder / "plots" / "timeline.png", tl).name
        if accuracy:
            figs["accuracy"] = P.accuracy_curves(folder / "plots" / "accuracy.png", accuracy).name
        say(f"report: plots -> {folder / 'plots'}")
    else:  # keep pointing at the plots an earlier report drew
        for name in ("runtime_vs_rate", "reduction_vs_cut", "timeline", "accuracy"):
            if (folder / "plots" / f"{name}.png").is_file():
                figs[name] = f"{name}.png"

    t = {
        "reduction": red,
        "sensitivity": sens,
        "bytes": byt,
        "validation": val,
        "validation_summary": summ,
        "measured": meas,
        "profile_drift": drift,
        "cloud_factor": clouds,
        "accuracy": acc,
    }
    text = results_readme(folder, manifest, records, settings, t, edge_fit, figs)
    path = folder / "README.md"
    path.write_text(text)
    say(f"report: {path}")
    return path


def _main_scenario(timing: Sequence[dict]) -> list[dict]:
    """The runs of the most common scenario (model, dataset, batch, edge slowdown) shaped by the
    engine, first repeats first: what the runtime-vs-rate plot and the timeline show."""

    def key(r: dict) -> tuple:
        c = r["config"]
        return (c["model"], c["dataset"], c.get("batch_size"), c.get("edge_slowdown", 1.0))

    engine = [r for r in timing if not r.get("shaper")]
    if not engine:
        return []
    keys = [key(r) for r in engine]
    top = max(set(keys), key=keys.count)
    runs = [r for r in engine if key(r) == top]
    return sorted(runs, key=lambda r: (r.get("experiment") or {}).get("repeat", 0))


def _timeline_runs(timing: Sequence[dict], link: str) -> list[dict]:
    """One run per method at ``link`` (8-bit where there is a choice), else at any link."""
    out = []
    for method in ("cloud_only", "split", "hierarchical"):
        cands = [r for r in timing if r["config"]["method"] == method]
        cands.sort(key=lambda r: (r["config"]["link"] != link, r["config"]["codec"] != "q8"))
        if cands:
            out.append(cands[0])
    return out
