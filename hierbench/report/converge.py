"""The ``converge`` campaign's report (issue 14), from whatever records are committed; torch-free.

:func:`write_converge_report` reads ``<out>/campaign.json`` (the campaign, its run list, the
attempts and their machine time) and ``<out>/runs/*.json`` (through :func:`spec.read_record`),
and writes ``<out>/README.md``, ``<out>/tables/*.csv`` and ``<out>/plots/*.png``:

- **status**: which runs are finished, which are missing;
- **tuning**: the learning-rate sweep's validation accuracies and each variant's pick;
- **finals**: test accuracy per variant, mean ± sample std over seeds, final classifier and
  edge exit, and the drop against standard paired by seed with a 95 % t-interval
  (:func:`paired_drop`);
- **plateau**: standard (and any other plateau variant) at a chain of longer budgets (each
  ~1.5x the one before) against the same seed at the budget, where standard plateaus (the
  first budget from which every longer run stays within 1 pp), and the drop at each budget;
- **accuracy per epoch**: a plot of each variant's finals (mean, the seeds' range) and its
  plateau runs;
- **time to accuracy**: per-epoch test accuracy (mean over seeds) joined with the runtime
  model's predicted time per epoch for each method and link (:func:`time_to_accuracy`), the time
  to reach standard's mean final accuracy − 1 pp, and a plot.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

from hierbench.errors import ConfigError
from hierbench.report.md import md_table
from hierbench.spec.records import read_record
from hierbench.spec.stats import mean_std, paired_drop

LINKS = ("3g", "4g", "wifi")
#: Which runtime-model method times each variant (the deep-supervision control is trained as
#: standard is: the whole model in the cloud, raw data uploaded).
VARIANT_METHOD = {
    "standard": ("cloud-only", None),
    "deepsup": ("cloud-only", None),
    "hier-q8": ("hierarchical", "q8"),
    "hier-q4": ("hierarchical", "q4"),
    "hier-fp32": ("hierarchical", "fp32"),
}


def _fmt_pct(x: float | None, nd: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{nd}f}"


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "not reached"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.0f} s"


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# -- loading ----------------------------------------------------------------------------------


def load_campaign(out: str | Path) -> tuple[dict, dict[str, dict]]:
    """``(campaign.json, {run id: record})`` of a campaign folder (finished runs only)."""
    out = Path(out)
    path = out / "campaign.json"
    if not path.is_file():
        raise ConfigError(f"{out} has no campaign.json: not a campaign folder")
    state = json.loads(path.read_text())
    recs = {}
    for p in sorted((out / "runs").glob("*.json")):
        rec = read_record(p)
        recs[rec.get("experiment", {}).get("id", p.stem)] = rec
    return state, recs


def run_list(state: dict) -> list[dict]:
    """Every run the campaign defines: id, stage, group, variant, seed (from campaign.json)."""
    return list(state.get("runs", []))


def accuracy(rec: dict, key: str = "final_acc", epoch: int = -1) -> float | None:
    eps = rec.get("epochs") or []
    return eps[epoch].get(key) if eps else None


# -- tables -----------------------------------------------------------------------------------


def stale_records(
    gname: str, runs: list[dict], recs: dict[str, dict], picks: dict[str, float | None]
) -> list[tuple[str, float, float]]:
    """``(id, its lr, the pick)`` of each finished final or plateau run of group ``gname``
    whose learning rate is not its variant's current pick (the driver refuses to mix such
    records; a report must not either)."""
    out = []
    for r in runs:
        if r["group"] != gname or r["stage"] == "sweep" or r["id"] not in recs:
            continue
        pick = picks.get(r["variant"])
        lr = recs[r["id"]].get("config", {}).get("lr")
        if pick is not None and lr is not None and float(lr) != float(pick):
            out.append((r["id"], float(lr), float(pick)))
    return out


def finals_table(group: dict, runs: list[dict], recs: dict[str, dict]) -> dict:
    """Per variant of ``group``: test accuracies by seed (final and exit), mean ± std, and the
    paired drop against standard."""
    by_variant: dict[str, dict[str, dict[int, float]]] = {}
    for r in runs:
        if r["group"] != group["name"] or r["stage"] != "final" or r["id"] not in recs:
            continue
        rec = recs[r["id"]]
        v = by_variant.setdefault(r["variant"], {"final": {}, "exit": {}})
        if (a := accuracy(rec)) is not None:
            v["final"][r["seed"]] = a
        if (a := accuracy(rec, "exit_acc")) is not None:
            v["exit"][r["seed"]] = a
    std_final = by_variant.get("standard", {}).get("final", {})
    out = {}
    for variant in group["variants"]:
        v = by_variant.get(variant, {"final": {}, "exit": {}})
        out[variant] = {
            "seeds": sorted(v["final"]),
            "final": mean_std(list(v["final"].values())),
            "exit": mean_std(list(v["exit"].values())),
            "final_by_seed": v["final"],
            "exit_by_seed": v["exit"],
            "drop_final": None if variant == "standard" else paired_drop(std_final, v["final"]),
            "drop_exit": None if variant == "standard" else paired_drop(std_final, v["exit"]),
        }
    return out


def curves(group: dict, runs: list[dict], recs: dict[str, dict]) -> dict[str, list[float | None]]:
    """Per variant, test accuracy of the final classifier per epoch (index i = epoch i + 1),
    mean over the finished seeds; None at an epoch where any of them has no value (the gap is
    kept, so that positions stay epochs)."""
    out = {}
    for variant in group["variants"]:
        series = [
            [e.get("final_acc") for e in recs[r["id"]]["epochs"]]
            for r in runs
            if r["group"] == group["name"]
            and r["stage"] == "final"
            and r["variant"] == variant
            and r["id"] in recs
        ]
        if not series:
            continue
        n = min(len(s) for s in series)
        out[variant] = [
            statistics.fmean(s[i] for s in series)
            if all(s[i] is not None for s in series)
            else None
            for i in range(n)
        ]
    return out


def epoch_times(group: dict, profiles: Path, n_batches: int) -> dict[tuple[str, str], float]:
    """The runtime model's predicted time of one epoch per (variant, link): the group's
    model, cut and codec, the committed 2-thread CPU profile as the edge, the model's default
    cloud factor, per-message latency (PAPER.md's convention)."""
    from hierbench.runtime.codec_bytes import parse_codec
    from hierbench.runtime.model import Scenario, predict
    from hierbench.runtime.validate import profile_for

    base = group["base"]
    prof = profile_for(base, Path(profiles), 2)
    out = {}
    for link in LINKS:
        sc = Scenario(edge=prof, link=link, n_batches=n_batches, head=base.get("exit_head", "conv"))
        for variant in group["variants"]:
            method, codec = VARIANT_METHOD[variant]
            pred = predict(sc, base["cut"], parse_codec(codec or "q8"))[method]
            out[(variant, link)] = pred.total_s
    return out, sc


def time_to_accuracy(
    curve: list[float], epoch_s: float, target: float
) -> tuple[int | None, float | None]:
    """(epochs, seconds) until the curve (index i = epoch i + 1; None: not evaluated) first
    reaches ``target`` (None, None if never)."""
    for i, acc in enumerate(curve):
        if acc is not None and acc >= target:
            return i + 1, (i + 1) * epoch_s
    return None, None


# -- the report -------------------------------------------------------------------------------


def grid_edge_note(variants: list[str], picks: dict[str, float], lrs: list[float]) -> str | None:
    """A warning naming the variants whose picked rate lies at an edge of the sweep's grid (a rate
    beyond it was not tried, so the variant may be under-tuned), or None."""
    lo, hi = min(lrs), max(lrs)
    edge = [v for v in variants if picks.get(v) in (lo, hi)]
    if not edge:
        return None
    effect = [
        "the others' drops against it may be understated"
        if v == "standard"
        else f"{v}'s drop against standard may be overstated"
        for v in edge
    ]
    return (
        f"Picked at an edge of the grid: {', '.join(edge)}. A rate beyond the grid was not tried "
        "(every variant gets the same grid and the same number of tuning runs), so such a "
        "variant may be under-tuned: " + "; ".join(effect) + "."
    )


def _cpu(rec: dict) -> str:
    return str((rec.get("environment") or {}).get("cpu_model") or "unknown")


def _cpu_note(done: list[dict], recs: dict) -> list[str]:
    """Which CPUs made the finished records: runs paired by seed may come from different
    machines (the same seed gives the same initial weights and data order on each, not the
    same floating-point results)."""
    by_cpu: dict[str, list[str]] = {}
    for r in done:
        by_cpu.setdefault(_cpu(recs[r["id"]]), []).append(r["id"])
    if len(by_cpu) < 2:
        return [f"CPU of every finished run: {next(iter(by_cpu))}.", ""] if by_cpu else []
    ranked = sorted(by_cpu.items(), key=lambda kv: -len(kv[1]))
    parts = [f"{cpu}: {len(ids)} run{'' if len(ids) == 1 else 's'}" for cpu, ids in ranked]
    others = [f"`{i}`" for _, ids in ranked[1:] for i in ids]
    return [
        "CPUs of the finished runs (as each record names it; these machines differ from one "
        f"session to the next): {'; '.join(parts)}; not on the first: {', '.join(others)}. "
        "Runs paired by seed are paired across machines where they ran on different ones: "
        "the same seed gives the same initial weights and data order, not the same "
        "floating-point results.",
        "",
    ]


def write_converge_report(out: str | Path, profiles: str | Path = "results/profiles") -> list[Path]:
    """Write README.md, tables and plots of a campaign folder; return the files written."""
    out, profiles = Path(out), Path(profiles)
    state, recs = load_campaign(out)
    tuning_path = out / "tuning.json"
    tuned = json.loads(tuning_path.read_text()).get("groups", {}) if tuning_path.is_file() else {}
    campaign = state.get("campaign", {})
    runs = run_list(state)
    written: list[Path] = []
    md = [f"# Campaign `{campaign.get('name')}`", "", campaign.get("description", ""), ""]
    md += [f"Budget: {campaign.get('budget', '')}", ""]
    # status and machine time
    done = [r for r in runs if r["id"] in recs]
    missing = [r for r in runs if r["id"] not in recs]
    attempts = state.get("attempts", {})
    machine_s = sum(a.get("elapsed_s", 0.0) for lst in attempts.values() for a in lst)
    md += [
        "## Status",
        "",
        f"{len(done)} of {len(runs)} runs finished; machine time so far "
        f"{machine_s / 3600:.2f} h (every attempt, interrupted ones included, from "
        "`campaign.json`).",
        "",
    ]
    if missing:
        md.append("Still missing: " + ", ".join(f"`{r['id']}`" for r in missing) + ".")
        md.append("")
    md += _cpu_note(done, recs)
    status_rows = [
        [
            r["id"],
            r["stage"],
            r["variant"],
            r["seed"],
            "done" if r["id"] in recs else "missing",
            _cpu(recs[r["id"]]) if r["id"] in recs else "",
        ]
        for r in runs
    ]
    written.append(
        _write_csv(
            out / "tables" / "status.csv",
            ["id", "stage", "variant", "seed", "state", "cpu"],
            status_rows,
        )
    )

    for group in campaign.get("groups", []):
        gname = group["name"]
        md += [f"## {group['label']}", ""]
        md += [
            f"Sweep: learning rates {', '.join(f'{x:g}' for x in group['lrs'])}, "
            f"{group['sweep_epochs']} epochs (shorter than the finals: a short run may favour "
            f"another rate than a long one), seed 0 (also a finals seed), training set minus "
            f"{group['val_holdout']} held-out images (validation). Finals: {group['epochs']} "
            "epochs, seeds "
            f"{', '.join(map(str, group['seeds']))}, whole training set, whole test split. "
            "SGD momentum 0.9, weight decay 5e-4, batch "
            f"{group['base'].get('batch_size')}, cosine decay over each run, precision "
            f"{group['base'].get('precision', 'fp32')}.",
            "",
        ]
        # tuning
        # tuning.json is rewritten after every sweep run; campaign.json's copy only when a driver
        # finishes the whole campaign
        picks = tuned.get(gname, {}).get("picked") or state.get("picks", {}).get(gname, {})
        sweep_rows = []
        for r in runs:
            if r["group"] == gname and r["stage"] == "sweep":
                rec = recs.get(r["id"])
                sweep_rows.append(
                    [
                        r["variant"],
                        r.get("lr"),
                        None if rec is None else accuracy(rec),
                        None if rec is None else accuracy(rec, "exit_acc"),
                    ]
                )
        if sweep_rows:
            written.append(
                _write_csv(
                    out / "tables" / f"{gname}-sweep.csv",
                    ["variant", "lr", "val_final_acc", "val_exit_acc"],
                    sweep_rows,
                )
            )
            lrs = group["lrs"]
            rows = []
            for v in group["variants"]:
                accs = {row[1]: row[2] for row in sweep_rows if row[0] == v}
                cells = [
                    (_fmt_pct(accs.get(lr)) + (" **←**" if picks.get(v) == lr else ""))
                    for lr in lrs
                ]
                rows.append([v, *cells])
            md += [
                "### Learning-rate sweep (validation accuracy %, final classifier; ← picked)",
                "",
            ]
            md += [md_table(["variant", *(f"lr {x:g}" for x in lrs)], rows), ""]
            note = grid_edge_note(group["variants"], picks, lrs)
            md += [note, ""] if note else []
        # finals
        stale = stale_records(gname, runs, recs, picks)
        if stale:
            md += [
                "Left out: records at another rate than the variant's current pick (the sweep "
                "changed after they ran; rerun them): "
                + ", ".join(f"`{rid}` (lr {lr:g}, pick {pick:g})" for rid, lr, pick in stale)
                + ".",
                "",
            ]
        left_out = {rid for rid, _, _ in stale}
        grecs = {k: v for k, v in recs.items() if k not in left_out}
        fin = finals_table(group, runs, grecs)
        rows, csv_rows = [], []
        for v, s in fin.items():
            (fm, fs), (em, es) = s["final"], s["exit"]
            df, de = s["drop_final"], s["drop_exit"]

            def drop(d):
                if d is None:
                    return "—"
                if d["lo"] is None:
                    return f"{100 * d['mean']:+.2f} (n=1)"
                return (
                    f"{100 * d['mean']:+.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}] "
                    f"(n={d['n']})"
                )

            rows.append(
                [
                    v,
                    len(s["seeds"]),
                    "—" if fm is None else f"{100 * fm:.2f} ± {_fmt_pct(fs, 2)}",
                    "—" if em is None else f"{100 * em:.2f} ± {_fmt_pct(es, 2)}",
                    drop(df),
                    drop(de),
                ]
            )
            csv_rows.append(
                [
                    v,
                    len(s["seeds"]),
                    fm,
                    fs,
                    em,
                    es,
                    *_triple(df),
                    *_triple(de),
                ]
            )
        written.append(
            _write_csv(
                out / "tables" / f"{gname}-finals.csv",
                [
                    "variant",
                    "seeds",
                    "final_mean",
                    "final_std",
                    "exit_mean",
                    "exit_std",
                    "drop_final_mean",
                    "drop_final_lo",
                    "drop_final_hi",
                    "drop_exit_mean",
                    "drop_exit_lo",
                    "drop_exit_hi",
                ],
                csv_rows,
            )
        )
        md += [
            "### Test accuracy at the budget (%, mean ± sample std over seeds)",
            "",
            "Drop = standard − variant, paired by seed, in percentage points, with a 95 % "
            "Student-t interval (positive: the variant is worse). *exit* is the early exit on the "
            "edge side of the cut (hierarchical, deep supervision); its drop is against "
            "standard's final classifier. Split learning is not run: with the fp32 codec it "
            "computes standard's gradients exactly (`tests/methods/test_methods.py::"
            "test_split_fp32_gives_the_unsplit_models_gradients`), so standard's row is its row.",
            "",
            md_table(["variant", "seeds", "final", "exit", "drop (final)", "drop (exit)"], rows),
            "",
        ]
        plateau = plateau_rows(group, runs, grecs)
        verdict = _verdict(fin, group, plateau)
        if verdict:
            md += [verdict, ""]
        if plateau:
            md += _plateau_section(group, plateau)
        md += _epoch_plot(out, group, runs, grecs, written)
        # time to accuracy
        md += _tta_section(out, group, runs, grecs, fin, profiles, written)
    md += [
        "## Regenerate",
        "",
        "```",
        f"hierbench campaign {campaign.get('name')} --out {out}          # runs what is missing "
        "(resumes an interrupted run), then this report",
        f"hierbench campaign {campaign.get('name')} --out {out} --report-only",
        "```",
        "",
    ]
    readme = out / "README.md"
    readme.write_text("\n".join(md) + "\n")
    written.append(readme)
    return written


def _triple(d: dict | None) -> tuple:
    return (None, None, None) if d is None else (d["mean"], d["lo"], d["hi"])


def plateau_budgets(group: dict) -> list[int]:
    """The group's budgets in order: the finals' ``epochs``, then each plateau budget."""
    chain = group.get("plateau_epochs") or []
    return [group["epochs"], *([chain] if isinstance(chain, int) else chain)]


#: A budget is a plateau for standard when every longer run stays within this many pp of it
#: (the issue's evidence: a run at 1.5x the epochs changes test accuracy by < 1 pp).
PLATEAU_PP = 1.0


def plateau_rows(group: dict, runs: list[dict], recs: dict) -> list[dict]:
    """Per plateau variant and seed with a finished plateau run: ``acc`` maps each budget
    (epochs) with a finished run of that variant and seed (its final, its plateau runs) to its
    final test accuracy. A run's budget is its record's ``config.epochs`` (else the campaign's
    run list); a record that names none is left out."""
    budgets = plateau_budgets(group)
    rows: dict[tuple[str, int], dict] = {}
    for r in runs:
        if r["group"] == group["name"] and r["stage"] == "plateau" and r["id"] in recs:
            rec = recs[r["id"]]
            e = (rec.get("config") or {}).get("epochs") or r.get("epochs")
            if not e:
                continue
            key = (r["variant"], r["seed"])
            if key not in rows:
                ref = recs.get(f"{group['name']}-final-{r['variant']}-s{r['seed']}")
                rows[key] = {"variant": r["variant"], "seed": r["seed"], "acc": {}}
                if ref is not None and accuracy(ref) is not None:
                    rows[key]["acc"][budgets[0]] = accuracy(ref)
            if accuracy(rec) is not None:
                rows[key]["acc"][int(e)] = accuracy(rec)
    return list(rows.values())


def _change_pp(row: dict, a: int, b: int) -> float | None:
    """The change from budget ``a`` to ``b`` in pp, rounded as printed (2 decimals)."""
    acc = row["acc"]
    return None if a not in acc or b not in acc else round(100 * (acc[b] - acc[a]), 2)


def _standard(plateau: list[dict]) -> dict | None:
    """Standard's plateau row (the first seed that has one)."""
    return next((p for p in plateau if p["variant"] == "standard"), None)


def plateau_steps(group: dict, plateau: list[dict]) -> tuple[dict | None, list[tuple]]:
    """Standard's plateau row and its steps ``(budget, next measured budget, change in pp)``
    between consecutive budgets it has a result for."""
    std = _standard(plateau)
    if std is None:
        return None, []
    b = [x for x in plateau_budgets(group) if x in std["acc"]]
    return std, [(x, y, _change_pp(std, x, y)) for x, y in itertools.pairwise(b)]


def plateau_at(group: dict, plateau: list[dict]) -> int | None:
    """The first budget from which every longer run of standard stays within 1 pp of it (a
    plateau for this schedule: small steps that add up, or a large later step, do not count),
    or None. The last measured budget has nothing to compare with, so it is never one."""
    std = _standard(plateau)
    if std is None:
        return None
    b = [x for x in plateau_budgets(group) if x in std["acc"]]
    for i, x in enumerate(b[:-1]):
        if all(abs(_change_pp(std, x, y)) < PLATEAU_PP for y in b[i + 1 :]):
            return x
    return None


def finals_plateau(group: dict, plateau: list[dict]) -> str | None:
    """Whether the finals' budget is a plateau for standard: ``"plateau"``, ``"not"`` (some
    longer run moved it by >= 1 pp), or None (no longer run of standard to compare with)."""
    std = _standard(plateau)
    e = group["epochs"]
    if std is None or e not in std["acc"] or not any(x > e for x in std["acc"]):
        return None
    return "plateau" if plateau_at(group, plateau) == e else "not"


def _plateau_section(group: dict, plateau: list[dict]) -> list[str]:
    e = group["epochs"]
    budgets = [b for b in plateau_budgets(group) if any(b in p["acc"] for p in plateau)]
    seeds = sorted({p["seed"] for p in plateau})
    pairs = list(itertools.pairwise(budgets))

    def cell(c: float | None) -> str:
        return "—" if c is None else f"{c:+.2f}"

    rows = [
        [
            p["variant"],
            *(_fmt_pct(p["acc"].get(b), 2) for b in budgets),
            *(cell(_change_pp(p, x, y)) for x, y in pairs),
        ]
        for p in plateau
    ]
    head = [
        "variant",
        *(f"{b} epochs" for b in budgets),
        *(f"change {x}→{y} (pp)" for x, y in pairs),
    ]
    md = [
        f"### Plateau evidence: budgets of {', '.join(map(str, budgets))} epochs (each ~1.5x "
        f"the one before; test accuracy %, final classifier, seed "
        f"{', '.join(map(str, seeds))}; each run with its own cosine schedule)",
        "",
        md_table(head, rows),
        "",
    ]
    std_by_seed = {p["seed"]: p for p in plateau if p["variant"] == "standard"}
    lines = []
    for p in plateau:
        s = std_by_seed.get(p["seed"])
        if p["variant"] == "standard" or s is None:
            continue
        both = [b for b in budgets if b in p["acc"] and b in s["acc"]]
        if len(both) < 2:
            continue
        drops = [f"{100 * (s['acc'][b] - p['acc'][b]):+.2f} pp at {b} epochs" for b in both]
        lines.append(
            f"{p['variant']}: drop {', '.join(drops)} (seed {p['seed']}, one run each: no interval)"
        )
    drops = (" Drop against standard at each budget: " + "; ".join(lines) + ".") if lines else ""
    std, steps = plateau_steps(group, plateau)
    if not steps:
        return md
    rule = f"a plateau needs every longer run within {PLATEAU_PP:g} pp"
    said = []
    if finals_plateau(group, plateau) == "not":
        moved = ", ".join(
            f"{_change_pp(std, e, y):+.2f} pp at {y} epochs" for y in std["acc"] if y > e
        )
        said.append(
            f"**Standard has not plateaued at {e} epochs**: longer runs changed its test "
            f"accuracy by {moved} (seed {std['seed']}; {rule}). The finals above compare the "
            "methods at an equal, fixed budget, not at convergence."
        )
    at = plateau_at(group, plateau)
    steps_txt = "; ".join(f"{x}→{y} epochs {c:+.2f} pp" for x, y, c in steps)
    if at is not None:
        said.append(
            f"Standard has plateaued at {at} epochs for this schedule: every longer run stays "
            f"within {PLATEAU_PP:g} pp of it (steps: {steps_txt}; seed {std['seed']})."
        )
    else:
        why = "" if said else f"{rule}; "
        said.append(
            f"No plateau up to {steps[-1][1]} epochs, the longest budget run ({why}steps: "
            f"{steps_txt}; seed {std['seed']})."
        )
    return [*md, " ".join(said) + drops, ""]


#: The paper's claim, read one-sided: the variant is not worse than standard by 1 pp or more.
NEGLIGIBLE_PP = 1.0


def drop_verdict(d: dict) -> str:
    """Words for a paired drop (standard − variant, fractions) with its 95 % interval:
    *negligible* when the interval's upper end is below 1 pp, *not negligible* when its lower
    end is at or above 1 pp, otherwise *not resolved*; and whether the interval excludes 0."""
    lo, hi = 100 * d["lo"], 100 * d["hi"]
    if hi < NEGLIGIBLE_PP:
        what = f"negligible (the 95 % interval's upper end is below {NEGLIGIBLE_PP:g} pp)"
    elif lo >= NEGLIGIBLE_PP:
        what = f"not negligible (the whole 95 % interval is at or above {NEGLIGIBLE_PP:g} pp)"
    else:
        what = f"not resolved (the 95 % interval straddles {NEGLIGIBLE_PP:g} pp)"
    if lo > 0:
        what += "; a real drop (the interval excludes 0)"
    elif hi < 0:
        what += "; in fact a gain (the interval excludes 0)"
    return what


def _verdict(fin: dict, group: dict, plateau: list[dict], need: int = 3) -> str | None:
    std = fin.get("standard")
    lines = []
    for v in ("hier-q8", "hier-q4", "hier-fp32"):
        d = (fin.get(v) or {}).get("drop_final")
        if std is None or d is None:
            continue
        if d["lo"] is None or d["n"] < need:
            lines.append(f"{v}: no verdict yet (n={d['n']} paired seeds, needs {need})")
            continue
        lines.append(
            f"{v}: drop {100 * d['mean']:+.2f} pp [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}], "
            f"n={d['n']}: {drop_verdict(d)}"
        )
    if not lines:
        return None
    state = finals_plateau(group, plateau)
    qualifier = {
        "not": f" (at the fixed {group['epochs']}-epoch budget; standard has not plateaued "
        "there: see the plateau evidence below)",
        "plateau": " (standard has plateaued at this budget: see the plateau evidence below)",
        None: f" (at the fixed {group['epochs']}-epoch budget; whether standard has plateaued "
        "there is not measured)",
    }[state]
    return f"**Is the drop negligible?**{qualifier} " + "; ".join(lines) + "."


def _tta_section(out, group, runs, recs, fin, profiles, written) -> list[str]:
    std = fin.get("standard", {}).get("final", (None, None))[0]
    cur = curves(group, runs, recs)
    if std is None or not cur:
        return ["Time to accuracy: needs finished standard finals.", ""]
    target = std - 0.01
    n_batches = None
    for r in runs:
        if r["group"] == group["name"] and r["stage"] == "final" and r["id"] in recs:
            n_batches = int(recs[r["id"]]["steps_per_epoch"])
            break
    try:
        times, sc = epoch_times(group, profiles, n_batches)
    except (OSError, ConfigError) as exc:
        return [f"Time to accuracy: no profile ({exc}).", ""]
    rows, csv_rows = [], []
    for v, curve in cur.items():
        cells = []
        for link in LINKS:
            ep, t = time_to_accuracy(curve, times[(v, link)], target)
            cells.append(f"{_fmt_time(t)}" + ("" if ep is None else f" ({ep} ep)"))
            csv_rows.append([v, link, times[(v, link)], ep, t])
        rows.append([v, *cells])
    written.append(
        _write_csv(
            out / "tables" / f"{group['name']}-time-to-accuracy.csv",
            ["variant", "link", "epoch_s_predicted", "epochs_to_target", "time_to_target_s"],
            csv_rows,
        )
    )
    written.extend(_tta_plot(out, group, cur, times))
    return [
        f"### Time to accuracy (target: standard's mean final test accuracy − 1 pp = "
        f"{100 * target:.2f} %)",
        "",
        "Per-epoch test accuracy (mean over finished seeds, along each run's own cosine schedule) "
        "joined with the runtime model's predicted time per epoch "
        f"({n_batches} batches; edge = the committed 2-thread CPU profile; cloud "
        f"{sc.cloud_factor:g}× faster, ASSUMED; per-message latency; raw data and activations "
        "uploaded every epoch). MLPerf-style: the first epoch at or above the target. deepsup is "
        "timed as standard (cloud-only; its exit head's small cost is not modelled). This is a "
        "model's prediction joined with measured accuracy, not a measured time.",
        "",
        md_table(["variant", *LINKS], rows),
        "",
        f"![accuracy vs predicted wall clock](plots/{group['name']}-time-to-accuracy.png)",
        "",
    ]


def _tta_plot(out, group, cur, times) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LINKS), figsize=(5 * len(LINKS), 4), sharey=True)
    for ax, link in zip(axes, LINKS, strict=True):
        for v, curve in cur.items():
            pts = [(i + 1, a) for i, a in enumerate(curve) if a is not None]
            xs = [ep * times[(v, link)] / 3600 for ep, _ in pts]
            ax.plot(xs, [100 * a for _, a in pts], marker=".", label=v)
        ax.set_title(f"{group['label']}\nlink {link}", fontsize=9)
        ax.set_xlabel("predicted training time (h)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "plots" / f"{group['name']}-time-to-accuracy.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _epoch_plot(out, group, runs, recs, written) -> list[str]:
    """Test accuracy per epoch: each variant's finals (mean over seeds, the seeds' range shaded)
    and its plateau runs (dashed, one line per budget)."""
    finals: dict[str, list[list[float | None]]] = {}
    longer: list[tuple[str, int, int, list[float | None]]] = []
    for r in runs:
        if r["group"] != group["name"] or r["id"] not in recs or r["stage"] == "sweep":
            continue
        rec = recs[r["id"]]
        accs = [e.get("final_acc") for e in rec["epochs"]]
        if r["stage"] == "final":
            finals.setdefault(r["variant"], []).append(accs)
        else:
            longer.append((r["variant"], len(accs), r["seed"], accs))
    if not finals:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {}
    for v in group["variants"]:
        series = finals.get(v)
        if not series:
            continue
        n = min(len(x) for x in series)
        pts = [
            (i + 1, [x[i] for x in series])
            for i in range(n)
            if all(x[i] is not None for x in series)
        ]
        xs = [ep for ep, _ in pts]
        (line,) = ax.plot(
            xs,
            [100 * statistics.fmean(a) for _, a in pts],
            marker=".",
            label=f"{v} (finals, n={len(series)})",
        )
        colors[v] = line.get_color()
        if len(series) > 1:
            ax.fill_between(
                xs,
                [100 * min(a) for _, a in pts],
                [100 * max(a) for _, a in pts],
                color=line.get_color(),
                alpha=0.15,
            )
    for v, n_ep, seed, accs in sorted(longer, key=lambda t: (t[1], t[0])):
        pts = [(i + 1, a) for i, a in enumerate(accs) if a is not None]
        ax.plot(
            [ep for ep, _ in pts],
            [100 * a for _, a in pts],
            linestyle="--",
            color=colors.get(v),
            alpha=0.8,
            label=f"{v} ({n_ep} epochs, seed {seed})",
        )
    ax.set_title(f"{group['label']}", fontsize=9)
    ax.set_xlabel("epoch (each run with its own cosine schedule)")
    ax.set_ylabel("test accuracy (%), final classifier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "plots" / f"{group['name']}-accuracy-by-epoch.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return [
        f"![test accuracy per epoch: finals (mean, the seeds' range shaded) and the longer "
        f"runs (dashed)](plots/{group['name']}-accuracy-by-epoch.png)",
        "",
    ]
