"""The Markdown of a report: :func:`markdown_table` and the cell formatters, and
:func:`results_readme`, the text of ``results/<preset>/README.md`` (every table, the
conventions, the plots, the runs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from hierbench.report import tables
from hierbench.report.load import read_foundation
from hierbench.report.md import md_table
from hierbench.report.paper import CITATION, MEASURED_CONVENTIONS, convention_lines
from hierbench.runtime.table import format_duration
from hierbench.spec.links import format_rate
from hierbench.spec.records import CPU_SHARE_MIN, disturbed

__all__ = ["markdown_table", "num", "pct", "results_readme"]


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
    rows = []
    for _, row in df.iterrows():
        cells = []
        for col, _, fmt in columns:
            v = row.get(col)
            if v is not None and isinstance(v, float) and math.isnan(v):
                v = None
            cells.append("" if v is None else (fmt(v) if fmt else str(v)))
        rows.append(cells)
    return md_table([h for _, h, _ in columns], rows)


def _rate(bps) -> str:
    """A crossover rate: blank when unknown, "always" when hierarchical always wins."""
    if bps is None or math.isnan(bps):
        return ""
    return "always" if math.isinf(bps) else format_rate(float(f"{bps:.3g}"))


def results_readme(
    folder: Path,
    manifest: dict,
    records: Sequence[dict],
    settings: dict,
    t: dict[str, pd.DataFrame | None],
    edge_fit: dict,
    figs: dict,
) -> str:
    """``results/<preset>/README.md``: the folder's tables (``t``, as
    :func:`~hierbench.report.write.write_report` computed them, by name), the edge-speed fit,
    its plots (``figs``: name -> file under ``plots/``) and its runs."""
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
    lines += _section_reduction(t["reduction"], settings)
    if figs.get("reduction_vs_cut"):
        lines += [f"![reduction vs cut](plots/{figs['reduction_vs_cut']})", ""]
    lines += _section_sensitivity(t["sensitivity"], settings)
    lines += _section_fit(edge_fit, t["cloud_factor"])
    lines += _section_measured(t, figs)
    lines += _section_accuracy(t["accuracy"], figs)
    lines += _section_bytes(t["bytes"])
    foundation = read_foundation(folder)
    if foundation is not None:
        lines += _section_foundation(foundation)
    lines += [
        "## Runs",
        "",
        "| run | kind | training wall s | batches | clock | disturbed | record |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        clock = "end-to-end" if r.get("record_version", 1) >= 2 else "old (v1)"
        lines.append(
            f"| {r['_id']} | {r['_kind']} | {r['totals']['train_wall_s']:.1f} | "
            f"{r['totals']['batches']} | {clock} | {'; '.join(disturbed(r))} | "
            f"[json](runs/{r['_id']}.json) |"
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


def _range(df: pd.DataFrame, col: str, fmt: Callable) -> list:
    """``median (min … max)`` per row of ``<col>_median/_min/_max`` columns."""
    out = []
    for _, r in df.iterrows():
        med, lo, hi = r.get(f"{col}_median"), r.get(f"{col}_min"), r.get(f"{col}_max")
        if med is None or (isinstance(med, float) and math.isnan(med)):
            out.append("")
        elif lo == hi:
            out.append(fmt(med))
        else:
            out.append(f"{fmt(med)} ({fmt(lo)} … {fmt(hi)})")
    return out


def _section_measured(t: dict, figs: dict) -> list[str]:
    val, summ, meas, drift = t["validation"], t["validation_summary"], t["measured"], None
    drift = t.get("profile_drift")
    out = ["## (c) Measured two-process runs, and the runtime model against them", ""]
    if not len(val):
        return [*out, "No timing runs in this folder.", ""]
    flagged = val[val["disturbed"] != ""] if "disturbed" in val else val.iloc[0:0]
    out += [
        "Training time is the end-to-end clock: the edge's first step to the last training "
        "event on either side, nothing subtracted. Each point is run several times; tables show "
        "the median and (min … max) over the repeats whose processes got their CPU "
        f"(CPU share ≥ {CPU_SHARE_MIN}); disturbed repeats are left out and counted. "
        + (
            f"**{len(flagged)} of {len(val)} runs were disturbed by other load** "
            f"({', '.join(flagged['id'])})."
            if len(flagged)
            else f"None of the {len(val)} runs was disturbed."
        ),
        "",
    ]
    if len(meas):
        m = meas.copy()
        m["vs_cloud"] = _range(m, "vs_cloud", lambda v: pct(v, True))
        m["vs_split"] = _range(m, "vs_split", lambda v: pct(v, True))
        out += [
            "Measured reductions (same model, cut, data, seed, batch, edge slowdown and number "
            "of batches for each method; paired by repeat) beside the runtime model's prediction "
            "for the same runs and the published number:",
            "",
            markdown_table(
                m,
                [
                    ("config", "model / dataset", None),
                    ("link", "link", None),
                    ("shaper", "rate by", None),
                    ("cut", "cut", None),
                    ("method", "method", None),
                    ("batch", "batch", None),
                    ("slowdown", "edge slowdown", num("g")),
                    ("batches", "batches", None),
                    ("vs_cloud", "measured vs cloud-only", None),
                    ("vs_cloud_pairs", "pairs", None),
                    ("predicted_vs_cloud", "predicted", lambda v: pct(v, True)),
                    ("published", "published", lambda v: pct(v, digits=0)),
                    ("vs_split", "measured vs split", None),
                    ("predicted_vs_split", "predicted", lambda v: pct(v, True)),
                ],
            ),
            "",
        ]
    s = summ.copy()
    for col, f in (
        ("measured_s", num(".1f")),
        ("error", lambda v: pct(v, True)),
        ("error_per_message", lambda v: pct(v, True)),
        ("error_committed", lambda v: pct(v, True)),
    ):
        s[col] = _range(s, col, f)
    out += [
        "Predicted against measured training time per timing point: median (min … max) over "
        "the quiet repeats. *rate by*: the engine's token bucket, or tc tbf in network "
        "namespaces (the engine adding only the latency): the model checked against a shaper "
        "that is not its own formula. *error*: the prediction from the profiles measured right "
        "before "
        "the runs (pipelined latency, the headline's convention); *τ per message*: the same "
        "with PAPER.md's reading of latency; *committed profiles*: the prediction from the "
        "profiles committed in results/profiles (measured at another time).",
        "",
        markdown_table(
            s,
            [
                ("config", "model / dataset", None),
                ("link", "link", None),
                ("shaper", "rate by", None),
                ("method", "method", None),
                ("codec", "codec", None),
                ("batch", "batch", None),
                ("slowdown", "k", num("g")),
                ("batches", "batches", None),
                ("used", "repeats used", None),
                ("disturbed", "disturbed", None),
                ("measured_s", "measured s", None),
                ("error", "error", None),
                ("error_per_message", "error (τ per message)", None),
                ("error_committed", "error (committed profiles)", None),
                ("bottleneck", "bottleneck", None),
            ],
        ),
        "",
        _largest_error(summ),
        "",
        "Per run, with the stage times that explain a difference (mean per batch measured in the "
        "run beside the profile's value the model used) and each side's CPU share: "
        "[tables/validation.csv](tables/validation.csv); per point: "
        "[tables/validation_summary.csv](tables/validation_summary.csv); reductions: "
        "[tables/measured.csv](tables/measured.csv).",
        "",
    ]
    if drift is not None and len(drift):
        d = drift[drift["ratio"].notna()]
        out += [
            "Profiles measured right before the runs against the committed ones (whole-model "
            "step at the same batch; over 1: slower now): "
            + (
                ", ".join(f"{r['profile']} {r['ratio']:.2f}×" for _, r in d.iterrows())
                if len(d)
                else "no committed profile at the same batch"
            )
            + ". [tables/profile_drift.csv](tables/profile_drift.csv).",
            "",
        ]
        if "disturbed" in drift and drift["disturbed"].fillna(False).astype(bool).any():
            bad = drift[drift["disturbed"].fillna(False).astype(bool)]
            out += [
                "**Calibration disturbed**: "
                + ", ".join(
                    f"{r['profile']} got {r['cpu_share']:.0%} of a core" for _, r in bad.iterrows()
                )
                + " (other work ran while it was measured, after every retry): the predictions "
                "from it are not trustworthy.",
                "",
            ]
        if "edge_scale" in drift and drift["edge_scale"].notna().any():
            out += [
                "Whole edge step over the sum of its separately timed parts, per calibration "
                "profile and cut (the predictions scale the edge terms by it): "
                + ", ".join(
                    f"{r['profile']} {r['edge_scale']}"
                    for _, r in drift[drift["edge_scale"].notna()].iterrows()
                )
                + ".",
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


def _largest_error(summ: pd.DataFrame) -> str:
    if "error_median" not in summ or summ["error_median"].isna().all():
        return "No run matches a profile (batch size, model, threads): no prediction."
    return (
        f"Largest |median error|: {pct(summ['error_median'].abs().max())} (pipelined latency), "
        f"{pct(summ['error_per_message_median'].abs().max())} (latency paid per message)."
    )


def _section_fit(edge_fit: dict, clouds: pd.DataFrame) -> list[str]:
    out = ["## Which edge the published numbers imply, and whether the cloud's speed matters", ""]
    if edge_fit:
        res = ", ".join(f"{n} {v:+.1f} pp" for n, v in edge_fit["residuals_pp"].items())
        win = edge_fit["window_k"]
        window = (
            f"every configuration is within ±{edge_fit['tolerance_pp']:g} pp for k in "
            f"[{win[0]:.3g}, {win[1]:.3g}] (an edge {1 / win[1]:.2f}–{1 / win[0]:.2f}× as fast "
            "as one core of this CPU)"
            if win
            else f"no single k puts every configuration within ±{edge_fit['tolerance_pp']:g} pp"
        )
        out += [
            f"One edge speed for all four configurations at {edge_fit['link']} (cloud as in the "
            "headline): the least-squares fit is k = "
            f"{edge_fit['best_k']:.3g} (the edge takes {edge_fit['best_k']:.3g}× the profiled "
            f"core's time), RMS {edge_fit['rms_pp']:.1f} pp; residuals: {res}. {window}. "
            "Curve: [tables/edge_fit.csv](tables/edge_fit.csv).",
            "",
        ]
    if len(clouds):
        per_link = []
        for link, grp in clouds.groupby("link", sort=False):
            n = int(grp["matters"].sum())
            per_link.append(
                f"{link}: {n} of {len(grp)} configurations move by more than 1 pp "
                f"(largest {grp['spread_pp'].max():.1f} pp)"
            )
        out += [
            "Cloud 1× / 10× / 100× one core, predicted reduction at the paper's cut: "
            + "; ".join(per_link)
            + ". [tables/cloud_factor.csv](tables/cloud_factor.csv).",
            "",
        ]
    return out


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
