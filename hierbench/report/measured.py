"""(c) The measured two-process runs, and the runtime model against them (torch-free).

- :func:`validation_table`: one row per run: the measured training time (the end-to-end clock of
  :mod:`hierbench.spec.records`), the prediction for the same run from the profiles measured right
  before the runs (``<folder>/profiles``, when the preset calibrates) and from the committed ones,
  the per-stage times that explain a difference, and whether the run was disturbed.
- :func:`validation_summary`: one row per timing point: repeats, median and min–max of the
  measured time and of the error; disturbed repeats are left out of the statistics and counted.
- :func:`measured_table`: measured reductions of hierarchical training (per repeat, paired by
  repeat index), median and min–max, beside the prediction and the published number.
- :func:`drift_table`: the profiles measured with the runs against the committed ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hierbench.errors import ConfigError
from hierbench.report.tables import _label
from hierbench.runtime.profiles import load_profile
from hierbench.runtime.validate import predict_from_stages, predict_record, stage_means
from hierbench.spec.records import CPU_SHARE_MIN, disturbed

__all__ = ["drift_table", "measured_table", "validation_summary", "validation_table"]

METHOD_ORDER = {"cloud_only": 0, "split": 1, "hierarchical": 2}
_POINT = ["config", "link", "shaper", "batch", "slowdown", "batches", "method", "cut", "codec"]


def _predict(rec: dict, profile_dir: Path | None, latency: str = "pipelined"):
    """The model's prediction for a run, or ``None`` when no profile there matches it. A folder
    of calibration profiles holds one subfolder per batch size (``batch-16/``)."""
    if profile_dir is None:
        return None
    per_batch = Path(profile_dir) / f"batch-{rec['config'].get('batch_size', 128)}"
    profile_dir = per_batch if per_batch.is_dir() else profile_dir
    try:
        return predict_record(rec, profile_dir, latency=latency)
    except ConfigError:
        return None


def _point(rec: dict) -> dict:
    cfg = rec["config"]
    hier = cfg["method"] != "cloud_only"
    return {
        "config": _label(cfg["model"], cfg["dataset"]),
        "link": cfg["link"] or "unshaped",
        # who made the link's rate: the engine's token bucket, or tc tbf (a kernel run)
        "shaper": "tc tbf" if rec.get("shaper") else "engine",
        "batch": cfg.get("batch_size", 128),
        "slowdown": float(cfg.get("edge_slowdown", 1.0)),
        "batches": rec["totals"]["batches"],
        "method": cfg["method"],
        "cut": cfg["cut"] if hier else "",
        "codec": cfg["codec"] if hier else "raw uint8",
    }


def validation_table(
    records: Sequence[dict], profile_dir: Path | None, committed_dir: Path | None = None
) -> pd.DataFrame:
    """One row per timing run: measured, predicted (``profile_dir``: the profiles the run is
    validated against; ``committed_dir``: the committed ones, for the drift), errors, stages.

    A version-1 record (the old clock) gets no error: it is listed as such."""
    rows = []
    for rec in records:
        cfg = rec["config"]
        measured = rec["totals"]["train_wall_s"]
        row = {
            **_point(rec),
            "repeat": (rec.get("experiment") or {}).get("repeat", 0),
            "measured_s": measured,
            "clock": "end-to-end" if rec.get("record_version", 1) >= 2 else "old (v1)",
            "disturbed": "; ".join(disturbed(rec)),
            "edge_cpu_share": rec["totals"].get("edge_cpu_share"),
            "cloud_cpu_share": rec["totals"].get("cloud_cpu_share"),
            "id": rec.get("_id", ""),
        }
        pipe = _predict(rec, profile_dir)
        committed = _predict(rec, committed_dir) if committed_dir != profile_dir else pipe
        if pipe is None:
            rows.append({**row, "bottleneck": "no matching profile"})
            continue
        old_clock = row["clock"] != "end-to-end"
        per_msg = _predict(rec, profile_dir, latency="per-message")
        staged = predict_from_stages(rec, pipe)
        st = stage_means(rec)
        p = pipe.parts
        if cfg["method"] == "cloud_only":
            pred_edge, pred_cloud = 0.0, p["t_full"]
        elif cfg["method"] == "split":
            pred_edge = p["t_eF"] + p["t_eB"] + p["t_eU"]
            pred_cloud = p["t_cF"] + p["t_cB"] + p["t_cU"]
        else:
            pred_edge, pred_cloud = pipe.t_E, pipe.t_C

        row.update(
            {
                "predicted_s": pipe.total_s,
                "error": _error(pipe.total_s, measured, old_clock),
                "predicted_per_message_s": per_msg.total_s,
                "error_per_message": _error(per_msg.total_s, measured, old_clock),
                "error_run_compute": _error(staged, measured, old_clock),
                "predicted_committed_s": None if committed is None else committed.total_s,
                "error_committed": _error(
                    None if committed is None else committed.total_s, measured, old_clock
                ),
                "edge_ms_measured": None if st["edge_s"] is None else 1e3 * st["edge_s"],
                "edge_ms_profile": 1e3 * pred_edge,  # both include the edge slowdown
                "cloud_ms_measured": None if st["cloud_s"] is None else 1e3 * st["cloud_s"],
                "cloud_ms_profile": 1e3 * pred_cloud,
                "bytes_up_per_batch": rec["totals"]["bytes_up"] / rec["totals"]["batches"],
                "bytes_up_predicted": pipe.bytes_up,
                "bottleneck": pipe.bottleneck,
                "link_spec": (rec.get("link") or {}).get("spec") or "",
            }
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["_o"] = df["method"].map(METHOD_ORDER)
        df = df.sort_values(["config", "link", "codec", "_o", "repeat"], kind="stable")
        df = df.drop(columns="_o")
    return df.reset_index(drop=True)


def _error(pred_s: float | None, measured: float, old_clock: bool) -> float | None:
    return None if old_clock or pred_s is None else pred_s / measured - 1


def _stats(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def validation_summary(val: pd.DataFrame) -> pd.DataFrame:
    """One row per timing point (model, link, batch, slowdown, batches, method, cut, codec): the
    number of repeats, how many were disturbed (left out of the statistics unless all were),
    and the median and min–max of the measured time and of the error."""
    if not len(val):
        return pd.DataFrame()
    rows = []
    for key, grp in val.groupby(_POINT, sort=False, dropna=False):
        quiet = grp[grp["disturbed"] == ""]
        used = quiet if len(quiet) else grp
        row = dict(zip(_POINT, key, strict=True))
        row.update(repeats=len(grp), disturbed=len(grp) - len(quiet), used=len(used))
        for col in ("measured_s", "predicted_s", "error", "error_per_message", "error_committed"):
            if col in used:
                row[f"{col}_median"], row[f"{col}_min"], row[f"{col}_max"] = _stats(list(used[col]))
        row["bottleneck"] = used["bottleneck"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def measured_table(
    records: Sequence[dict], profile_dir: Path | None, published: dict | None = None
) -> pd.DataFrame:
    """Measured reductions of hierarchical training against cloud-only and split learning run
    on the same model, data, link, batch, slowdown and number of batches, paired by repeat
    index; median and min–max over the quiet repeats, the prediction for the same runs, and
    the published number (``published``: ``(model, dataset) -> (cut, reduction)``, 3g only)."""
    by: dict[tuple, dict[str, dict[int, dict]]] = {}
    for rec in records:
        cfg, pt = rec["config"], _point(rec)
        key = (pt["config"], pt["link"], pt["shaper"], pt["batch"], pt["slowdown"], pt["batches"])
        name = cfg["method"] if cfg["method"] != "hierarchical" else f"hierarchical/{cfg['codec']}"
        rep = (rec.get("experiment") or {}).get("repeat", 0)
        by.setdefault(key, {}).setdefault(name, {})[rep] = rec
    rows = []
    for (conf, link, shaper, batch, slowdown, n), recs in by.items():
        base, spl = recs.get("cloud_only", {}), recs.get("split", {})
        for name, reps in recs.items():
            if not name.startswith("hierarchical"):
                continue
            any_rec = next(iter(reps.values()))
            cfg = any_rec["config"]
            row = {
                "config": conf,
                "link": link,
                "shaper": shaper,
                "batch": batch,
                "slowdown": slowdown,
                "batches": n,
                "method": name,
                "cut": cfg["cut"],
            }
            for other, col in ((base, "vs_cloud"), (spl, "vs_split")):
                pairs = [
                    (reps[r], other[r])
                    for r in sorted(reps)
                    if r in other and not disturbed(reps[r]) and not disturbed(other[r])
                ]
                left_out = sum(1 for r in reps if r in other) - len(pairs)
                red = [
                    1 - h["totals"]["train_wall_s"] / o["totals"]["train_wall_s"] for h, o in pairs
                ]
                row[f"{col}_median"], row[f"{col}_min"], row[f"{col}_max"] = _stats(red)
                row[f"{col}_pairs"] = len(pairs)
                row[f"{col}_disturbed"] = left_out
            ph = _predict(any_rec, profile_dir)
            for other, col in ((base, "predicted_vs_cloud"), (spl, "predicted_vs_split")):
                po = _predict(next(iter(other.values())), profile_dir) if other else None
                row[col] = 1 - ph.total_s / po.total_s if ph and po else None
            pub = (published or {}).get((cfg["model"], cfg["dataset"]))
            row["published"] = pub[1] if pub and link == "3g" and pub[0] == cfg["cut"] else None
            row["hier_s_median"] = _stats([r["totals"]["train_wall_s"] for r in reps.values()])[0]
            if base:
                times = [r["totals"]["train_wall_s"] for r in base.values()]
                row["cloud_only_s_median"] = _stats(times)[0]
            if spl:
                row["split_s_median"] = _stats([r["totals"]["train_wall_s"] for r in spl.values()])[
                    0
                ]
            rows.append(row)
    return pd.DataFrame(rows)


def _parts(p, cut: str) -> float:
    return p.edge_forward(cut) + p.edge_backward(cut) + p.edge_step(cut) + p.exit_cost(cut)


def drift_table(calibrated_dir: Path, committed_dir: Path) -> pd.DataFrame:
    """Each profile measured with the runs beside the committed profile of the same name (when
    it was taken at the same batch): whole-model step time and the sum of its blocks, and their
    ratio. Over 1: this session's CPU was slower than when the committed profiles were taken.
    Also the CPU share each calibration got (``disturbed`` below :data:`CPU_SHARE_MIN`) and, per
    cut, the whole edge step over the sum of its parts (the scale the predictions apply)."""
    rows = []
    for path in sorted(Path(calibrated_dir).rglob("*.csv")):
        now = load_profile(path)
        ref_path = Path(committed_dir) / path.name
        ref = load_profile(ref_path) if ref_path.is_file() else None
        same = ref is not None and ref.batch == now.batch
        row = {
            "profile": str(path.relative_to(calibrated_dir)),
            "batch": now.batch,
            "t_full_s": now.t_full,
            "committed_t_full_s": ref.t_full if same else None,
            "measured_utc": now.meta.get("date_utc"),
            "committed_utc": ref.meta.get("date_utc") if same else None,
            # a calibration that did not get its core is flagged, never used silently
            "cpu_share": now.meta.get("cpu_share"),
            "disturbed": now.meta.get("cpu_share") is not None
            and now.meta["cpu_share"] < CPU_SHARE_MIN,
            # the whole edge step at the runs' cuts over the sum of its separately timed parts
            "edge_scale": "; ".join(
                f"{cut} {t / _parts(now, cut):.3f}"
                for cut, t in sorted(
                    (c, h["conv"]) for c, h in (now.meta.get("edge_step_s") or {}).items()
                )
            )
            or None,
        }
        if same:
            a, b = row["t_full_s"], row["committed_t_full_s"]
            row["ratio"] = float(a) / float(b) if a and b else None
        else:
            row["ratio"] = None
            row["note"] = "no committed profile at this batch" if ref is not None else "new"
        rows.append(row)
    return pd.DataFrame(rows)
