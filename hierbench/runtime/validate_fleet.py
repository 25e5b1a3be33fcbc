"""Predicted against measured for fleet runs (issue 17): :mod:`~.scale` on fleet records.

A fleet record (:mod:`hierbench.fleet.record`) holds the fleet config and the measured
``train_wall_s`` (the first edge step's start to the last step's end) of ``steps`` lockstep
steps of E messages; this module rebuilds the same fleet (E edges on the run's link, the shared
ingress if any, W workers), predicts its total time with :func:`~.scale.scale_predict` from the
one-thread CPU profile at the run's batch and the record's own edge calibration (as
:func:`~.validate.predict_record` does for one edge), and compares throughputs:
``E · B · steps / time``, measured and predicted (the same ratio as the times, inverted).
Torch-free.

The cloud workers are this machine's CPU (one thread each, cloud factor 1); the all-reduce
between them is :mod:`~.scale`'s ring with its default inputs (not measured here; at the
measured points it is a few per cent of one step and never the bottleneck).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hierbench.errors import ConfigError
from hierbench.runtime.codec_bytes import parse_codec
from hierbench.runtime.model import Conventions, Scenario
from hierbench.runtime.scale import Fleet, ScalePrediction, scale_predict
from hierbench.runtime.validate import _METHOD_KEY, profile_for, with_run_calibration
from hierbench.spec.sync import parse_edge_sync


@dataclasses.dataclass(frozen=True)
class FleetCheck:
    """One fleet run: its point, measured and predicted samples/s, the model's bottleneck."""

    record: str
    edges: int
    workers: int
    ingress: str | None
    steps: int
    measured_sps: float
    predicted_sps: float
    bottleneck: str
    prediction: ScalePrediction

    @property
    def error_pct(self) -> float:
        """Predicted over measured throughput, minus 1, in per cent."""
        return 100.0 * (self.predicted_sps / self.measured_sps - 1.0)


def predict_fleet_record(
    rec: dict, profile_dir: str | Path, *, latency: str = "pipelined"
) -> ScalePrediction:
    """The scale model's prediction for the fleet run ``rec`` describes."""
    fcfg = rec["config"]
    cfg = fcfg["run"]
    edge = profile_for(cfg, Path(profile_dir), 1)
    edge = with_run_calibration(edge, rec)  # type: ignore[arg-type]
    if int(cfg["batch_size"]) != edge.batch:
        raise ConfigError(
            f"the fleet ran batch {cfg['batch_size']} per edge but the profile in {profile_dir} "
            f"is at batch {edge.batch}"
        )
    edges, steps = int(fcfg["edges"]), int(rec["totals"]["steps"])
    sc = Scenario(
        edge=edge,
        link=cfg["link"] or "inf",
        n_batches=steps * edges,
        cloud_speedup=1.0,
        edge_slowdown=float(cfg.get("edge_slowdown", 1.0)),
        head=cfg.get("exit_head", "conv"),
        conventions=Conventions(latency=latency),
        grad_codec=parse_codec(cfg.get("grad_codec", "fp32")),
    )
    fleet = Fleet(
        edges=edges,
        links=cfg["link"] or "inf",
        workers=int(fcfg["workers"]),
        ingress=fcfg.get("ingress"),
        sync_every=parse_edge_sync(fcfg.get("edge_sync", "none")),
    )
    preds = scale_predict(sc, fleet, cfg["cut"], cfg["codec"])
    return preds[_METHOD_KEY[cfg["method"]]]


def check_fleet(rec: dict, profile_dir: str | Path, *, latency: str = "pipelined") -> FleetCheck:
    """Predict the fleet run ``rec`` and compare with its measured throughput."""
    pred = predict_fleet_record(rec, profile_dir, latency=latency)
    t = rec["totals"]
    fcfg = rec["config"]
    samples = float(t["samples"])
    return FleetCheck(
        record=str(rec.get("_path", rec.get("id", "?"))),
        edges=int(fcfg["edges"]),
        workers=int(fcfg["workers"]),
        ingress=fcfg.get("ingress"),
        steps=int(t["steps"]),
        measured_sps=samples / float(t["train_wall_s"]),
        predicted_sps=samples / pred.total_s,
        bottleneck=pred.bottleneck,
        prediction=pred,
    )
