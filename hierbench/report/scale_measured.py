"""The ``scale`` preset's report: measured fleet throughput against :mod:`~hierbench.runtime.scale`.

Reads the point records in ``<out>/runs`` (fleet records, as :mod:`hierbench.experiments.scale`
writes them),
predicts each from the profile the preset measured before its runs and the run's own edge
calibration (:func:`hierbench.runtime.validate_fleet.check_fleet`), and writes into ``<out>``:

- ``runs.csv``: one row per run (measured and predicted samples/s, error, load);
- ``points.csv`` / ``points.md``: per (E, W, ingress) point the median of the repeats, their
  range, the median prediction and the error of the medians (the issue's criterion: within
  10 %);
- ``measured.png``: samples/s against E, the model's lines (E = 1 … 8) and the measured points;
- ``README.md``: the setup, the table, the plot, the command.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hierbench.errors import ConfigError
from hierbench.report.md import md_table
from hierbench.runtime.validate_fleet import FleetCheck, check_fleet

#: Predicted vs measured throughput must agree within this at every point (issue 17).
TOLERANCE_PCT = 10.0


def read_runs(out: Path) -> list[dict]:
    """Every fleet record in ``<out>/runs`` (file-name order), its path as ``_path``."""
    recs = []
    for p in sorted((Path(out) / "runs").glob("*.json")):
        rec = json.loads(p.read_text())
        if not isinstance(rec, dict) or rec.get("record_kind") != "fleet":
            raise ConfigError(f"{p} is not a fleet record")
        rec["_path"] = str(p)
        recs.append(rec)
    return recs


def _profile_dir(out: Path, rec: dict) -> Path:
    """The profile the preset measured before ``rec``'s runs, at its batch."""
    return out / "profiles" / f"batch-{rec['config']['run']['batch_size']}"


def run_rows(out: Path) -> tuple[list[dict[str, Any]], list[FleetCheck]]:
    rows, checks = [], []
    for rec in read_runs(out):
        c = check_fleet(rec, _profile_dir(out, rec))
        checks.append(c)
        env = rec.get("environment") or {}
        rows.append(
            {
                "run": rec.get("id", Path(rec["_path"]).stem),
                "edges": c.edges,
                "workers": c.workers,
                "ingress": c.ingress or "",
                "repeat": rec.get("repeat"),
                "steps": c.steps,
                "train_wall_s": round(float(rec["totals"]["train_wall_s"]), 3),
                "measured_sps": round(c.measured_sps, 2),
                "predicted_sps": round(c.predicted_sps, 2),
                "error_pct": round(c.error_pct, 2),
                "bottleneck": c.bottleneck,
                "load_1min_after": round((rec.get("load_after") or [float("nan")])[0], 2),
                "cpu": env.get("cpu_model", ""),
                "git": (env.get("git_sha") or "")[:7] + ("+dirty" if env.get("git_dirty") else ""),
            }
        )
    return rows, checks


def point_rows(checks: Sequence[FleetCheck]) -> list[dict[str, Any]]:
    by: dict[tuple, list[FleetCheck]] = {}
    for c in checks:
        by.setdefault((c.edges, c.workers, c.ingress or ""), []).append(c)
    rows = []
    for key in sorted(by, key=lambda k: (k[2] != "", k[2], k[1], k[0])):  # ingress, W, E
        cs = by[key]
        meas = [c.measured_sps for c in cs]
        pred = statistics.median(c.predicted_sps for c in cs)
        med = statistics.median(meas)
        err = 100.0 * (pred / med - 1.0)
        # CPU the model says the point keeps busy: every edge's compute and every worker's cloud
        # stage, per period (all-reduce time is waiting, not counted)
        demand = statistics.median(
            (
                c.edges * c.prediction.terms.get("edge", 0.0)
                + c.workers * c.prediction.terms["cloud"]
            )
            / c.prediction.period_s
            for c in cs
        )
        rows.append(
            {
                "edges": key[0],
                "workers": key[1],
                "ingress": key[2],
                "repeats": len(cs),
                "measured_sps_median": round(med, 2),
                "measured_sps_min": round(min(meas), 2),
                "measured_sps_max": round(max(meas), 2),
                "predicted_sps": round(pred, 2),
                "error_pct": round(err, 2),
                "within_tolerance": abs(err) <= TOLERANCE_PCT,
                "bottleneck": statistics.mode(c.bottleneck for c in cs),
                "cpu_demand_cores": round(demand, 2),
            }
        )
    return rows


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def points_markdown(rows: Sequence[dict[str, Any]]) -> str:
    header = [
        "E", "W", "shared ingress", "repeats", "measured samples/s, median [min, max]",
        "predicted", "error", "bottleneck (model)", "CPU demand (cores, model)",
    ]  # fmt: skip
    return md_table(
        header,
        (
            [
                r["edges"],
                r["workers"],
                r["ingress"] or "none",
                r["repeats"],
                f"{r['measured_sps_median']:.1f} [{r['measured_sps_min']:.1f}, "
                f"{r['measured_sps_max']:.1f}]",
                f"{r['predicted_sps']:.1f}",
                f"{r['error_pct']:+.1f} %",
                r["bottleneck"],
                f"{r['cpu_demand_cores']:.2f}",
            ]
            for r in rows
        ),
    )


def measured_plot(checks: Sequence[FleetCheck], out: Path, path: Path) -> Path:
    """samples/s against E: the model's lines (one per W and ingress setting, E = 1 … 8, from
    the first run's calibration) and every measured run as a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hierbench.runtime.validate_fleet import predict_fleet_record

    by_rec = {r["_path"]: r for r in read_runs(out)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = sorted({(c.workers, c.ingress or "") for c in checks}, key=lambda k: (k[1], k[0]))
    for n, (w, ing) in enumerate(groups):
        color = f"C{n}"
        cs = [c for c in checks if c.workers == w and (c.ingress or "") == ing]
        if not cs:
            continue
        template = by_rec[cs[0].record]
        es = list(range(max(1, w), 9))
        ys = []
        for e in es:
            rec = {**template, "config": {**template["config"], "edges": e}}
            pred = predict_fleet_record(rec, _profile_dir(out, template))
            batch = template["config"]["run"]["batch_size"]
            ys.append(e * batch * template["totals"]["steps"] / pred.total_s)
        label = f"W={w}" + (f", ingress {ing}" if ing else "")
        ax.plot(es, ys, "-", color=color, label=f"model, {label}")
        ax.plot(
            [c.edges for c in cs],
            [c.measured_sps for c in cs],
            "o",
            color=color,
            mfc="none",
            label=f"measured, {label}",
        )
    ax.set_xlabel("edges E")
    ax.set_ylabel("samples/s (whole fleet)")
    ax.set_title(f"Fleet throughput, {_describe(next(iter(by_rec.values())))}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _describe(rec: dict) -> str:
    r = rec["config"]["run"]
    sync = rec["config"].get("edge_sync", "none")
    return (
        f"{r['model']} ({r['stem']} stem) on {r['dataset']}, {r['method']}, cut {r['cut']}, "
        f"{r['codec']} activations, batch {r['batch_size']} per edge, uplink {r['link']}, "
        + ("independent edge models" if sync == "none" else f"edge models averaged ({sync})")
    )


def write_measured_report(out: str | Path, *, command: str) -> dict[str, Path]:
    out = Path(out)
    rows, checks = run_rows(out)
    if not rows:
        raise FileNotFoundError(f"{out}/runs holds no fleet records: run `hierbench scale` first")
    points = point_rows(checks)
    paths = {
        "runs": out / "runs.csv",
        "points_csv": out / "points.csv",
        "points_md": out / "points.md",
        "plot": out / "measured.png",
        "readme": out / "README.md",
    }
    _write_csv(rows, paths["runs"])
    _write_csv(points, paths["points_csv"])
    table = points_markdown(points)
    paths["points_md"].write_text(table + "\n")
    measured_plot(checks, out, paths["plot"])
    bad = [p for p in points if not p["within_tolerance"]]
    cpus = sorted({r["cpu"] for r in rows if r["cpu"]})
    shas = sorted({r["git"] for r in rows if r["git"]})
    loads = [r["load_1min_after"] for r in rows]
    first = read_runs(out)[0]
    cores = (first.get("environment") or {}).get("cpu_count") or "?"
    over = [p for p in points if isinstance(cores, int) and p["cpu_demand_cores"] > cores]
    runs_cmd = next(
        (str(r.get("command", "")).split(" (")[0] for r in read_runs(out) if r.get("command")),
        None,
    )
    verdict = (
        f"Every point within ±{TOLERANCE_PCT:g} % (median of the repeats)."
        if not bad
        else f"{len(bad)} point(s) outside ±{TOLERANCE_PCT:g} %: "
        + ", ".join(f"E={p['edges']} W={p['workers']} {p['ingress']}".rstrip() for p in bad)
        + "."
    )
    if over:
        verdict += (
            f" Over this machine's {cores} cores by the model's CPU demand (contention, so the "
            "measurement is not the cloud's cost): "
            + ", ".join(f"E={p['edges']} W={p['workers']}" for p in over)
            + "."
        )
    paths["readme"].write_text(
        "\n".join(
            [
                "# Fleet throughput, measured against the scale model (issue 17)",
                "",
                "Runs made by `"
                + (runs_cmd or "?")
                + f"`; this report by `{command}` (`--report-only` redoes it from the committed "
                "runs). Machine: "
                + (", ".join(cpus) or "unknown CPU")
                + f"; code at {', '.join(shas) or '?'}.",
                "",
                "Each point is a local fleet run (E edge processes, a W-worker gloo cloud job "
                "under torch's elastic launcher, real TCP on loopback): "
                + _describe(first)
                + f", {first['totals']['steps']} lockstep steps; the `ingress` points add one "
                "shared bucket all uplinks draw from (`hierbench.transfer.Ingress`). "
                "Measured: the fleet record's samples / train_wall_s (the first edge step's start "
                "to the last step's end, a worker's or an edge's: fill included, nothing "
                "subtracted). Predicted: "
                "`hierbench.runtime.scale` from the one-thread profile taken before the runs "
                "(`profiles/`) and each run's own edge calibration, cloud factor 1 (the workers "
                "are this CPU), the all-reduce at the model's default inputs. CPU demand: "
                "(E · t_E + W · C) / period in the model, the cores the point keeps busy; where "
                f"it exceeds this machine's {cores} the processes share cores. Why these points "
                "and what they test: `hierbench/experiments/scale.py` (`--set`).",
                "",
                verdict,
                "",
                table,
                "",
                f"1-minute load average right after each run: {min(loads):.2f}-{max(loads):.2f} "
                "(it includes the run's own processes).",
                "",
                "![measured](measured.png)",
                "",
                "Files: `runs/*.json` (fleet records + calibration), `runs.csv`, `points.csv` / "
                "`.md`, `measured.png`, `profiles/`.",
                "",
            ]
        )
    )
    return paths
