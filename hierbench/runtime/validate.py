"""Predicted against measured: the runtime model checked on run records (torch-free).

A run record (:mod:`hierbench.spec.records`) holds the config and the measured training wall
clock; this module rebuilds the same scenario from the config and a device profile, predicts the
method's total time, and reports the error. The cloud of a measured run on this machine is the same
CPU as the edge, so ``cloud_speedup`` is 1 unless a cloud profile is given.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from hierbench.errors import ConfigError
from hierbench.runtime.codec_bytes import parse_codec
from hierbench.runtime.model import Conventions, Prediction, Scenario, predict
from hierbench.runtime.profiles import Profile, load_profile
from hierbench.spec.profiles import profile_filename
from hierbench.spec.records import RunRecord, read_record

_METHOD_KEY = {"cloud_only": "cloud-only", "split": "split", "hierarchical": "hierarchical"}


@dataclasses.dataclass(frozen=True)
class Check:
    record: str
    method: str
    link: str
    batches: int
    latency: str
    predicted_s: float
    measured_s: float
    bottleneck: str
    prediction: Prediction | None = None

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_s / self.measured_s - 1.0)


def profile_for(cfg: dict, profile_dir: Path, threads: int) -> Profile:
    """The CPU profile matching a run's model, stem, dataset and precision at ``threads``
    threads (``cfg`` may be partial, like a campaign group's base: stem and precision default
    as in ``RunConfig``; VGG-16's profiles carry no stem)."""
    name = profile_filename(
        cfg["model"],
        cfg.get("stem", "imagenet"),
        cfg["dataset"],
        "cpu",
        threads,
        cfg.get("precision", "fp32"),
    )
    return load_profile(Path(profile_dir) / name)


def with_run_calibration(edge: Profile, rec: RunRecord) -> Profile:
    """``edge`` with the whole edge step the record's own calibration timed right before the
    run (``rec["calibration"]["edge_step_s"]``, written by ``reproduce`` for runs with a slowed
    edge) in place of the profile's; ``edge`` itself where the record has none."""
    timed = (rec.get("calibration") or {}).get("edge_step_s")
    if not timed:
        return edge
    steps = {cut: dict(heads) for cut, heads in (edge.meta.get("edge_step_s") or {}).items()}
    for cut, heads in timed.items():
        steps.setdefault(cut, {}).update(heads)
    return dataclasses.replace(edge, meta={**edge.meta, "edge_step_s": steps})


def predict_record(
    rec: RunRecord,
    profile_dir: str | Path,
    *,
    latency: str = "pipelined",
    cloud_speedup: float = 1.0,
) -> Prediction:
    """The runtime model's prediction for the run a record describes (its config, its number of
    batches), from the CPU profile taken with the edge's thread count."""
    cfg = rec["config"]
    edge = with_run_calibration(
        profile_for(cfg, Path(profile_dir), int(cfg.get("threads_edge", 1))), rec
    )
    if int(cfg.get("batch_size", edge.batch)) != edge.batch:
        raise ConfigError(
            f"the run used batch {cfg['batch_size']} but the profile was taken at batch "
            f"{edge.batch}: profile the run's batch (`hierbench profile --batch ...`) to predict it"
        )
    sc = Scenario(
        edge=edge,
        link=cfg["link"] or "inf",
        n_batches=int(rec["totals"]["batches"]),
        cloud_speedup=cloud_speedup,
        edge_slowdown=float(cfg.get("edge_slowdown", 1.0)),
        head=cfg.get("exit_head", "conv"),
        conventions=Conventions(latency=latency),
        grad_codec=parse_codec(cfg.get("grad_codec", "fp32")),
    )
    return predict(sc, cfg["cut"], parse_codec(cfg["codec"]))[_METHOD_KEY[cfg["method"]]]


def check_record(
    path: str | Path,
    profile_dir: str | Path,
    *,
    latency: str = "pipelined",
    cloud_speedup: float = 1.0,
) -> Check:
    """Predict the run in ``path`` from the profiles and compare with its measured wall clock."""
    rec = read_record(path)
    cfg = rec["config"]
    pred = predict_record(rec, profile_dir, latency=latency, cloud_speedup=cloud_speedup)
    return Check(
        record=str(path),
        method=cfg["method"],
        link=cfg["link"] or "unshaped",
        batches=int(rec["totals"]["batches"]),
        latency=latency,
        predicted_s=pred.total_s,
        measured_s=float(rec["totals"]["train_wall_s"]),
        bottleneck=pred.bottleneck,
        prediction=pred,
    )


def stage_means(rec: RunRecord) -> dict:
    """Mean per-batch stage times measured in a run: edge compute (its ``compute_s``: forward,
    exit, backward, step, codec, plus the ``idle_s`` by which the edge-slowdown knob stretched
    it), uplink transmission of one message (median), cloud step. Means, not medians, for the
    compute stages: a pipeline's period is paid N times, outliers included."""
    edge = [
        r["compute_s"] + r.get("idle_s", 0.0)
        for r in rec["edge_steps"]
        if r.get("compute_s") is not None
    ]
    cloud = [r["t1"] - r["t0"] for r in rec["cloud_steps"]]
    msgs = (rec.get("link") or {}).get("messages") or []
    up = [m["tx_end"] - m["tx_start"] for m in msgs if m["direction"] == "sent"]
    return {
        "edge_s": statistics.fmean(edge) if edge else None,
        "link_up_s": statistics.median(up[1:] or up) if up else None,
        "cloud_s": statistics.fmean(cloud) if cloud else None,
    }


def predict_from_stages(rec: RunRecord, pred: Prediction) -> float | None:
    """The model's formula with the run's own measured compute times (mean edge compute and
    cloud step per batch) in place of the profile's; the link terms stay the model's.

    Its error against the measured wall clock is the error of the formulas (pipeline structure,
    latency, fill); what is left of the profile-based error is the profile's (compute measured
    at another time, alone on the machine)."""
    st = stage_means(rec)
    n = pred.n_batches
    p = pred.parts
    edge, cloud = st["edge_s"], st["cloud_s"]
    if cloud is None:
        return None
    if pred.method == "cloud-only":
        return (p["t_up"] + cloud) + (n - 1) * max(pred.t_L, cloud)
    if edge is None:
        return None
    if pred.method == "split":
        return n * (edge + cloud + p["t_up"] + p["t_down"])
    scale = edge / pred.t_E if pred.t_E > 0 else 1.0
    fill = (p["t_eF"] + p["t_enc"]) * scale + p["t_up"] + cloud
    return fill + (n - 1) * max(edge, pred.t_L, cloud)
