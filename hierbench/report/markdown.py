"""``hierbench report``: tables (CSV + Markdown) and plots (PNG) from run records and profiles.

Reads only ``<folder>/manifest.json``, ``<folder>/runs/*.json`` (:mod:`hierbench.experiments`)
and the committed device profiles (``results/profiles``); imports no torch, so the tables
regenerate anywhere without retraining. Writes into the same folder::

    README.md              every table below, the conventions, the plots, the runs
    tables/reduction.csv   (a) predicted reduction per model × dataset × link, search's cut,
                           paper's cut, published number beside
    tables/sensitivity.csv which convention or assumption moves each headline number
    tables/accuracy.csv    (b) accuracy per method and cut, final classifier and edge exit
    tables/validation.csv  (c) predicted against measured wall clock, per-stage times
    tables/measured.csv    measured reductions of the two-process runs
    tables/bytes.csv       (d) bytes per sample per cut and codec
    tables/CONVENTIONS.md  the conventions every table rests on (also in README.md)
    plots/runtime_vs_rate.png, reduction_vs_cut.png, timeline.png, accuracy.png

:func:`headline_markdown` is the README's results table, generated from a results folder
(:func:`update_readme` puts it between the README's markers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from hierbench.errors import ConfigError
from hierbench.report import tables
from hierbench.report.paper import (
    CITATION,
    DEFAULT_REPORT,
    MEASURED_CONVENTIONS,
    convention_lines,
)
from hierbench.runtime.link import format_rate
from hierbench.runtime.table import format_duration

__all__ = [
    "BEGIN",
    "END",
    "README_FOLDERS",
    "headline_markdown",
    "load_folder",
    "markdown_table",
    "update_readme",
    "write_report",
]


# -- loading -----------------------------------------------------------------------------------
def load_folder(folder: str | Path) -> tuple[dict, list[dict]]:
    """The manifest (or ``{}``) and every run record of a results folder, each record with its
    file stem as ``_id`` and its kind (``timing``: two processes; ``accuracy``) as ``_kind``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no results folder {folder}: run `hierbench reproduce` first")
    mpath = folder / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else {}
    records = []
    for path in sorted((folder / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if "config" not in rec or "totals" not in rec:
            raise ConfigError(f"{path} is not a run record (no config/totals)")
        rec["_id"] = path.stem
        kind = (rec.get("experiment") or {}).get("kind")
        rec["_kind"] = kind or ("timing" if rec.get("processes") == 2 else "accuracy")
        records.append(rec)
    return manifest, records


# -- Markdown -----------------------------------------------------------------------------------
def pct(v, signed: bool = False, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{100 * v:+.{digits}f} %" if signed else f"{100 * v:.{digits}f} %"


def num(fmt: str) -> Callable:
    def f(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return format(v, fmt)

    return f


def markdown_table(df: pd.DataFrame, columns: Sequence[tuple[str, str, Callable | None]]) -> str:
    """``columns``: (column, header, formatter or None for ``str``)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for _, row in df.iterrows():
        cells = []
        for col, _, fmt in columns:
            v = row.get(col)
            if v is not None and isinstance(v, float) and math.isnan(v):
                v = None
            cells.append("" if v is None else (fmt(v) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rate(bps) -> str:
    """A crossover rate: blank when unknown, "always" when hierarchical always wins."""
    if bps is None or math.isnan(bps):
        return ""
    return "always" if math.isinf(bps) else format_rate(float(f"{bps:.3g}"))


# -- the report ------------------------------------------------------------------------------
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
    timing = [r for r in records if r["_kind"] == "timing"]
    accuracy = [r for r in records if r["_kind"] == "accuracy"]
    (folder / "tables").mkdir(exist_ok=True)
    (folder / "plots").mkdir(exist_ok=True)

    red = tables.reduction_table(profile_dir, configs, links)
    sens = tables.sensitivity_table(profile_dir, configs, settings["headline_link"])
    byt = tables.bytes_table(profile_dir, configs)
    val = tables.validation_table(timing, profile_dir)
    meas = tables.measured_table(timing, profile_dir)
    acc = tables.accuracy_table(accuracy)
    for name, df, index in (
        ("reduction", red, False),
        ("sensitivity", sens, True),
        ("bytes", byt, False),
        ("validation", val, False),
        ("measured", meas, False),
        ("accuracy", acc, False),
    ):
        df.to_csv(folder / "tables" / f"{name}.csv", index=index, float_format="%.6g")
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

        figs["runtime_vs_rate"] = P.runtime_vs_rate(
            folder / "plots" / "runtime_vs_rate.png",
            timing,
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
        tl = _timeline_runs(timing, settings["headline_link"])
        if tl:
            figs["timeline"] = P.timeline(folder / "plots" / "timeline.png", tl).name
        if accuracy:
            figs["accuracy"] = P.accuracy_curves(folder / "plots" / "accuracy.png", accuracy).name
        say(f"report: plots -> {folder / 'plots'}")
    else:  # keep pointing at the plots an earlier report drew
        for name in ("runtime_vs_rate", "reduction_vs_cut", "timeline", "accuracy"):
            if (folder / "plots" / f"{name}.png").is_file():
                figs[name] = f"{name}.png"

    text = _readme(folder, manifest, records, settings, red, sens, byt, val, meas, acc, figs)
    path = folder / "README.md"
    path.write_text(text)
    say(f"report: {path}")
    return path


def _timeline_runs(timing: Sequence[dict], link: str) -> list[dict]:
    """One run per method at ``link`` (8-bit where there is a choice), else at any link."""
    out = []
    for method in ("cloud_only", "split", "hierarchical"):
        cands = [r for r in timing if r["config"]["method"] == method]
        cands.sort(key=lambda r: (r["config"]["link"] != link, r["config"]["codec"] != "q8"))
        if cands:
            out.append(cands[0])
    return out


def _readme(folder, manifest, records, settings, red, sens, byt, val, meas, acc, figs) -> str:
    preset = (manifest.get("preset") or {}).get("name", folder.name)
    env = manifest.get("environment") or (records[0]["environment"] if records else {})
    lines = [f"# hierbench reproduce — `{preset}`", ""]
    if manifest.get("command"):
        lines.append(
            f"Made by `{manifest['command']}`; tables and plots by `hierbench report {folder}`."
        )
    desc = (manifest.get("preset") or {}).get("description")
    if desc:
        lines += ["", f"Preset `{preset}`: {desc}."]
    started, finished = manifest.get("started_utc"), manifest.get("finished_utc")
    runs_s = sum(v.get("elapsed_s", 0) for v in (manifest.get("runs") or {}).values())
    lines += [
        "",
        f"Machine: {env.get('cpu_count', '?')} CPUs, torch {env.get('torch', '?')}, "
        f"Python {env.get('python', '?')}, extension {_ext_desc(env.get('extension'))}; "
        f"runs {started or '?'} → {finished or 'unfinished'}, {len(records)} run records, "
        f"{format_duration(runs_s)} of runs.",
        "",
        f"Paper: {CITATION}. Its numbers are quoted beside ours; ours are measured on this machine "
        "or predicted from the profiles measured on it.",
        "",
        "## Conventions",
        "",
        "Runtime-model tables (predicted):",
        "",
        *[f"- {c}" for c in convention_lines()],
        "",
        "Measured runs:",
        "",
        *[f"- {c}" for c in MEASURED_CONVENTIONS],
        "",
    ]
    lines += _section_reduction(red, settings)
    if figs.get("reduction_vs_cut"):
        lines += [f"![reduction vs cut](plots/{figs['reduction_vs_cut']})", ""]
    lines += _section_sensitivity(sens, settings)
    lines += _section_measured(val, meas, figs)
    lines += _section_accuracy(acc, figs)
    lines += _section_bytes(byt)
    foundation = folder / "foundation.json"
    if foundation.is_file():
        lines += _section_foundation(json.loads(foundation.read_text()))
    lines += [
        "## Runs",
        "",
        "| run | kind | training wall s | batches | record |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['_id']} | {r['_kind']} | {r['totals']['train_wall_s']:.1f} | "
            f"{r['totals']['batches']} | [json](runs/{r['_id']}.json) |"
        )
    lines.append("")
    return "\n".join(lines)


def _ext_desc(ext) -> str:
    if not ext:
        return "not built"
    return f"{ext.get('compiler', '?')}" + (" + CUDA" if ext.get("with_cuda") else "")


def _section_reduction(red: pd.DataFrame, settings: dict) -> list[str]:
    return [
        "## (a) Runtime reduction of hierarchical training (predicted)",
        "",
        "Runtime model (`hierbench.runtime`) on the committed 1-thread profiles of this CPU "
        "(edge) and the assumed cloud factor; one epoch, every batch uploaded. *search*: the "
        "separation-point search's pick over all cuts with 8-bit activations only, and with 8- or "
        "4-bit (beyond the paper); *paper's cut*: the cut the paper used. Published: the "
        "paper's 3G numbers. Δ = ours at the paper's cut (8-bit) − published.",
        "",
        markdown_table(
            red,
            [
                ("config", "model / dataset", None),
                ("link", "link", None),
                ("t_cloud_only_s", "cloud-only, 1 epoch", format_duration),
                ("search_q8_cut", "search (8-bit): cut", None),
                ("search_q8_vs_cloud", "vs cloud-only", lambda v: pct(v, True)),
                ("search_q8_vs_split", "vs split", lambda v: pct(v, True)),
                ("search_q84_pick", "search (8/4-bit)", None),
                ("search_q84_vs_cloud", "vs cloud-only", lambda v: pct(v, True)),
                ("paper_cut", "paper's cut", None),
                ("paper_cut_q8_vs_cloud", "8-bit vs cloud-only", lambda v: pct(v, True)),
                ("paper_cut_q8_vs_split", "8-bit vs split", lambda v: pct(v, True)),
                ("paper_cut_q4_vs_cloud", "4-bit vs cloud-only", lambda v: pct(v, True)),
                ("published_3g", "published", lambda v: pct(v, digits=0)),
                ("delta_pp", "Δ pp", num("+.1f")),
                ("bottleneck", "bottleneck", None),
                ("crossover_up_bps", "wins below (8-bit, best cut)", _rate),
            ],
        ),
        "",
        "*wins below*: the uplink rate (same link shape) under which hierarchical training at the "
        "search's best 8-bit cut beats cloud-only (`runtime.partition.crossover_rate`).",
        "",
        "CSV: [tables/reduction.csv](tables/reduction.csv).",
        "",
    ]


def _section_sensitivity(sens: pd.DataFrame, settings: dict) -> list[str]:
    df = sens.reset_index().rename(columns={"index": "assumption"})
    cols = [("assumption", f"at {settings['headline_link']}, paper's cut", None)]
    cols += [(c, c, lambda v: pct(v, True)) for c in sens.columns]
    ours, pub = sens.loc[tables.OURS], sens.loc[tables.PUBLISHED_ROW]
    notes = []
    for c in sens.columns:
        closest = tables.closest_assumption(sens, c)
        moves = (tables.assumptions(sens, c) - ours[c]).abs()
        largest = moves.idxmax()
        within = abs(ours[c] - pub[c]) <= 0.03
        notes.append(
            f"- {c}: ours {pct(ours[c], True)} vs published {pct(pub[c], digits=0)} "
            f"({100 * (ours[c] - pub[c]):+.1f} pp: {'within' if within else 'outside'} ±3 pp). "
            f"Closest to the published number: *{closest}* → {pct(sens.loc[closest, c], True)} "
            f"({100 * (sens.loc[closest, c] - pub[c]):+.1f} pp). Largest move: *{largest}* "
            f"({100 * (sens.loc[largest, c] - ours[c]):+.1f} pp)."
        )
    return [
        "## Which convention or assumption moves each headline number",
        "",
        "Predicted reduction of hierarchical training against cloud-only at the paper's cut "
        "(8-bit), changing one thing at a time from the base conventions above. The first two "
        "rows count bytes only (PAPER.md's link-bound 33 / 67 / 33 / 83 %).",
        "",
        markdown_table(df, cols),
        "",
        *notes,
        "",
        "CSV: [tables/sensitivity.csv](tables/sensitivity.csv).",
        "",
    ]


def _section_measured(val: pd.DataFrame, meas: pd.DataFrame, figs: dict) -> list[str]:
    out = ["## (c) Measured two-process runs, and the runtime model against them", ""]
    if not len(val):
        return [*out, "No timing runs in this folder.", ""]
    out += [
        "Measured reductions (same model, cut, data, seed and number of batches for each "
        "method) beside the runtime model's prediction for the same runs:",
        "",
        markdown_table(
            meas,
            [
                ("config", "model / dataset", None),
                ("link", "link", None),
                ("batches", "batches", None),
                ("method", "method", None),
                ("cut", "cut", None),
                ("cloud_only_s", "cloud-only s", num(".1f")),
                ("split_s", "split s", num(".1f")),
                ("hier_s", "hierarchical s", num(".1f")),
                ("vs_cloud", "measured vs cloud-only", lambda v: pct(v, True)),
                ("predicted_vs_cloud", "predicted", lambda v: pct(v, True)),
                ("vs_split", "measured vs split", lambda v: pct(v, True)),
                ("predicted_vs_split", "predicted", lambda v: pct(v, True)),
            ],
        ),
        "",
        "Predicted against measured training wall clock, per run. Stage times: mean per batch "
        "measured in the run (edge compute, cloud step) beside the profile's value the model "
        "used — where the total is off, they show which input was. *error (run's compute "
        "times)*: the same formulas fed the run's own mean compute times instead of the "
        "profile's — the error of the formulas alone.",
        "",
        markdown_table(
            val,
            [
                ("link", "link", None),
                ("method", "method", None),
                ("codec", "codec", None),
                ("batches", "batches", None),
                ("measured_s", "measured s", num(".1f")),
                ("predicted_s", "predicted s", num(".1f")),
                ("error", "error", lambda v: pct(v, True)),
                ("error_per_message", "error (τ per message)", lambda v: pct(v, True)),
                ("error_run_compute", "error (run's compute times)", lambda v: pct(v, True)),
                ("edge_ms_measured", "edge ms/batch measured", num(".0f")),
                ("edge_ms_profile", "profile", num(".0f")),
                ("cloud_ms_measured", "cloud ms/batch measured", num(".0f")),
                ("cloud_ms_profile", "profile", num(".0f")),
                ("bytes_up_per_batch", "B up/batch", num(",.0f")),
                ("bytes_up_predicted", "predicted", num(",.0f")),
                ("bottleneck", "bottleneck", None),
            ],
        ),
        "",
        _largest_error(val) + "CSV: [tables/validation.csv](tables/validation.csv), "
        "[tables/measured.csv](tables/measured.csv).",
        "",
    ]
    if figs.get("runtime_vs_rate"):
        out += [f"![runtime vs link rate](plots/{figs['runtime_vs_rate']})", ""]
    if figs.get("timeline"):
        out += [
            "Timeline of one run per method (edge compute, uplink and downlink transmission, "
            "cloud step), from the run records' timestamps:",
            "",
            f"![timeline](plots/{figs['timeline']})",
            "",
        ]
    return out


def _largest_error(val: pd.DataFrame) -> str:
    if "error" not in val or val["error"].isna().all():
        return "No run matches a committed profile (batch size, model, threads): no prediction. "
    return (
        f"Largest |error|: {pct(val['error'].abs().max())} (pipelined latency), "
        f"{pct(val['error_per_message'].abs().max())} (latency paid per message), "
        f"{pct(val['error_run_compute'].abs().max())} (formulas with the run's compute times). "
    )


def _section_accuracy(acc: pd.DataFrame, figs: dict) -> list[str]:
    out = ["## (b) Accuracy per method and cut", ""]
    if not len(acc):
        return [*out, "No accuracy runs in this folder.", ""]
    out += [
        "Real CIFAR-10 (the JPEG copy), test accuracy after the last epoch; the budget column "
        "says what each figure was bought with: short budgets rank the methods, they are not "
        "the methods' converged accuracy. Drop = standard (cloud-only) − this run, same budget.",
        "",
        markdown_table(
            acc,
            [
                ("budget", "budget", None),
                ("method", "method", None),
                ("cut", "cut", None),
                ("codec", "codec", None),
                ("test_images", "test images", None),
                ("final_acc", "final classifier", lambda v: pct(v)),
                ("exit_acc", "edge exit", lambda v: pct(v)),
                ("best_final_acc", "best epoch", lambda v: pct(v)),
                ("drop_vs_standard_pp", "drop vs standard (pp; < 0: better)", num("+.1f")),
                ("cloud_train_loss", "train loss (cloud)", num(".3f")),
                ("edge_train_loss", "train loss (exit)", num(".3f")),
            ],
        ),
        "",
        "CSV: [tables/accuracy.csv](tables/accuracy.csv).",
        "",
    ]
    if figs.get("accuracy"):
        out += [f"![accuracy curves](plots/{figs['accuracy']})", ""]
    return out


def _section_bytes(byt: pd.DataFrame) -> list[str]:
    return [
        "## (d) Bytes per sample at each cut",
        "",
        "Computed from the profiles' activation shapes (not measured): codec frame per batch of "
        "128 amortised per sample, labels excluded; `q4+zstd` uses the profile's zstd ratio "
        "(1.0 where it was not measured). The measured bytes per batch of every timing run are "
        "in table (c).",
        "",
        markdown_table(
            byt,
            [
                ("config", "model / dataset", None),
                ("cut", "cut", None),
                ("shape", "C×H×W", None),
                ("raw_uint8", "raw uint8", num(",.0f")),
                ("fp32", "fp32", num(",.0f")),
                ("q8", "8-bit", num(",.0f")),
                ("q4", "4-bit", num(",.0f")),
                ("q2", "2-bit", num(",.0f")),
                ("q4+zstd", "4-bit+zstd", num(",.0f")),
                ("q8_over_raw", "8-bit / raw", num(".2f")),
            ],
        ),
        "",
        "CSV: [tables/bytes.csv](tables/bytes.csv).",
        "",
    ]


def _section_foundation(f: dict) -> list[str]:
    out = ["## Foundation checks", ""]
    if "data" in f:
        out += ["| dataset | split | images | classes | load s |", "|---|---|---|---|---|"]
        for r in f["data"]["rows"]:
            out.append(
                f"| {r['dataset']} | {r['split']} | {r['images']} | {r['classes']} "
                f"| {r['load_s']} |"
            )
        out.append("")
    lo = f.get("loader")
    if lo:
        out += [
            f"Data path against training (CIFAR-10, batch 128, {lo['threads']} threads): loader "
            f"(augment + normalise) {lo['loader_images_per_s']:,} images/s, ResNet-18 training "
            f"step {lo['resnet18_train_images_per_s']:,} images/s: the data path costs "
            f"{lo['loader_share_of_training_pct']} % of training time.",
            "",
        ]
    return out


# -- README headline ----------------------------------------------------------------------------
#: The folders the README's results block is generated from (those that exist), first the
#: runtime tables, then accuracy.
README_FOLDERS = ("results/quick", "results/accuracy", "results/paper")

BEGIN = "<!-- BEGIN generated by `hierbench report --readme`: do not edit by hand -->"
END = "<!-- END generated -->"


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV table of a report; empty when the file is missing or the table had no rows."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def headline_markdown(folders: Sequence[str | Path]) -> str:
    """The README's results block, from the CSV tables of one or more results folders (the
    first must hold the runtime tables, e.g. ``results/quick``; later ones add accuracy)."""
    first = Path(folders[0])
    red = pd.read_csv(first / "tables" / "reduction.csv")
    meas = _read_table(first / "tables" / "measured.csv")
    lines = [
        f"From [`{first.as_posix()}`]({first.as_posix()}/README.md) (conventions, every table "
        "and plot there). Hierarchical training's runtime reduction against cloud-only training "
        "over the 3g link (1 Mbit/s up, 4 down, 75 ms), 8-bit activations:",
        "",
        "| model / dataset | paper's cut | published | predicted (this CPU as edge, cloud 10×) "
        "| Δ pp | search's pick (8/4-bit) | measured here |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in red[red["link"] == "3g"].iterrows():
        m = (
            meas[
                (meas["config"] == r["config"])
                & (meas["link"] == "3g")
                & (meas["method"] == "hierarchical/q8")
            ]
            if len(meas.columns)
            else meas
        )
        measured = ""
        if len(m):
            mr = m.iloc[0]
            measured = f"{pct(mr['vs_cloud'], True)} ({int(mr['batches'])} batches; cloud = 1 core)"
        lines.append(
            f"| {r['config']} | {r['paper_cut']} | {pct(r['published_3g'], digits=0)} | "
            f"{pct(r['paper_cut_q8_vs_cloud'], True)} | {r['delta_pp']:+.1f} | "
            f"{r['search_q84_pick']}: {pct(r['search_q84_vs_cloud'], True)} | {measured} |"
        )
    lines.append("")
    sens_path = first / "tables" / "sensitivity.csv"
    if sens_path.is_file():
        sens = pd.read_csv(sens_path, index_col=0)
        ours, pub = sens.loc[tables.OURS], sens.loc[tables.PUBLISHED_ROW]
        for col in sens.columns:
            if abs(ours[col] - pub[col]) <= 0.03:
                continue
            closest = tables.closest_assumption(sens, col)
            lines.append(
                f"- {col}: {pct(ours[col], True)} here against the published "
                f"{pct(pub[col], digits=0)}; changing one assumption, *{closest}*, gives "
                f'{pct(sens.loc[closest, col], True)} (table "Which convention or assumption '
                'moves each headline number").'
            )
    for folder in folders:
        folder = Path(folder)
        acc = _read_table(folder / "tables" / "accuracy.csv")
        if not len(acc):
            continue
        for budget, grp in acc.groupby("budget", sort=False):
            cells = []
            for _, r in grp.iterrows():
                name = (
                    "standard"
                    if r["method"] == "cloud_only"
                    else (f"{r['method']} {r['cut']} {r['codec']}")
                )
                exit_s = "" if pd.isna(r["exit_acc"]) else f" (exit {pct(r['exit_acc'])})"
                cells.append(f"{name} {pct(r['final_acc'])}{exit_s}")
            lines.append(
                f"- Accuracy, {budget} ([`{folder.as_posix()}`]({folder.as_posix()}/README.md)): "
                + "; ".join(cells)
                + "."
            )
    lines.append("")
    return "\n".join(lines)


def update_readme(readme: str | Path, block: str) -> bool:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``readme``; return whether it
    changed. Raises :class:`ConfigError` if the markers are missing."""
    path = Path(readme)
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ConfigError(f"{path} has no generated-results markers ({BEGIN!r} ... {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{block.rstrip()}\n{END}{tail}"
    if new != text:
        path.write_text(new)
        return True
    return False
