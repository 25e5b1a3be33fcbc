"""The ``scale`` preset's machinery on a tiny budget (the real points: ``hierbench scale``,
results/scale/measured): profile + per-run calibration + local fleet runs (real processes, real
CIFAR-10, loopback TCP, the shared ingress file) + the report, with the model's prediction
beside every run. Speed is not asserted here (a loaded 2-core CI machine); which resource the
model names as the bottleneck is: it follows from the links alone."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from hierbench.errors import ConfigError
from hierbench.experiments import scale
from hierbench.fleet.record import check_fleet_record
from hierbench.report.scale_measured import write_measured_report
from hierbench.runtime.model import Scenario
from hierbench.runtime.profiles import load_profile
from hierbench.runtime.scale import Fleet, scale_predict
from hierbench.runtime.validate_fleet import check_fleet


@pytest.mark.slow
def test_scale_preset_runs_resumes_and_reports(cifar10_root, tmp_path):
    out = tmp_path / "measured"
    tiny = {
        "data_root": str(cifar10_root),
        "limit_per_class": 4,
        "batch_size": 4,
        "batches_per_epoch": 3,
        "cut": "layer2",
        "codec": "fp32",
    }
    points = ((1, 1, False), (2, 1, True))
    said: list[str] = []
    paths = scale.run_scale(out, repeats=1, points=points, run=tiny, say=said.append)
    assert [p.name for p in paths] == ["e1-w1-r1.json", "e2-w1-ingress-r1.json"]
    assert (out / "profiles" / "batch-4" / "resnet18-imagenet-cifar10-cpu-t1.csv").is_file()
    for p in paths:
        rec = check_fleet_record(json.loads(p.read_text()))
        assert rec["calibration"]["edge_step_s"]  # timed right before the run
        assert rec["config"]["run"]["link"] == scale.SCALE_LINK
    rec = json.loads(paths[1].read_text())
    assert rec["config"]["ingress"] == scale.SCALE_INGRESS
    assert all(e["ingress_wait_s"] is not None for e in rec["edges"])

    # resume: nothing is measured again
    said.clear()
    scale.run_scale(out, repeats=1, points=points, run=tiny, say=said.append)
    assert sum("measured earlier, kept" in s for s in said) == 3  # the profile + 2 runs

    files = write_measured_report(out, command="hierbench scale --report-only")
    rows = list(csv.DictReader(files["points_csv"].open()))
    assert [(r["edges"], r["workers"], r["ingress"]) for r in rows] == [
        ("1", "1", ""),
        ("2", "1", scale.SCALE_INGRESS),
    ]
    # 250 kbit/s uplinks; two of them into a 500 kbit/s ingress: a tie, named for the ingress
    assert [r["bottleneck"] for r in rows] == ["link", "ingress"]
    for r in rows:
        assert float(r["measured_sps_median"]) > 0 and float(r["predicted_sps"]) > 0
        err = 100 * (float(r["predicted_sps"]) / float(r["measured_sps_median"]) - 1)
        # recomputed from columns rounded to 0.01 samples/s (~5 samples/s here): +-0.5 pp
        assert float(r["error_pct"]) == pytest.approx(err, abs=0.5)
    # the CPU demand column is the model's (E · t_E + W · C) / period, median over repeats
    for r, p in zip(rows, paths):
        c = check_fleet(json.loads(p.read_text()), out / "profiles" / "batch-4")
        t = c.prediction.terms
        demand = (c.edges * t["edge"] + c.workers * t["cloud"]) / c.prediction.period_s
        assert float(r["cpu_demand_cores"]) == pytest.approx(demand, abs=0.006)
    readme = files["readme"].read_text()
    assert "hierbench scale --report-only" in readme and "| 2 | 1 | 500kbit | 1 |" in readme
    assert files["plot"].stat().st_size > 10_000


def test_scale_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="repeats"):
        scale.run_scale(tmp_path, repeats=0)
    with pytest.raises(FileNotFoundError, match="no fleet records"):
        (tmp_path / "runs").mkdir()
        write_measured_report(tmp_path, command="x")
    assert scale.point_id(4, 2, True, 3) == "e4-w2-ingress-r3"
    fcfg = scale.fleet_config(4, 2, True)
    assert fcfg.ingress == scale.SCALE_INGRESS and fcfg.run.link == scale.SCALE_LINK


def test_the_cloud_bound_set_is_cloud_bound_in_the_model():
    """``--set cloud-bound`` exists to measure the case the link-bound set cannot: by the model
    (the committed one-thread profile at batch 16) every one of its points is cloud-bound, while
    every plain link-bound point is link- or ingress-bound."""
    prof = load_profile(
        "results/scale/measured/profiles/batch-16/resnet18-imagenet-cifar10-cpu-t1.csv"
    )
    for name, (points, run, fleet_extra, _) in scale.SETS.items():
        if fleet_extra:
            continue  # fedavg: test_the_fedavg_set_is_sync_bound
        cfg = {**scale.SCALE_RUN, **run}
        for e, w, ingress in points:
            sc = Scenario(edge=prof, link=cfg["link"], n_batches=48 * e, cloud_speedup=1.0)
            fleet = Fleet(
                edges=e,
                links=cfg["link"],
                workers=w,
                ingress=scale.SCALE_INGRESS if ingress else None,
            )
            pred = scale_predict(sc, fleet, cfg["cut"], cfg["codec"])["hierarchical"]
            want = {"cloud"} if name == "cloud-bound" else {"link", "ingress"}
            assert pred.bottleneck in want, (name, e, w, ingress, pred.bottleneck)


@pytest.mark.parametrize("cut,head", [("layer1", "conv"), ("layer3", "minimal")])
def test_the_models_fedavg_bytes_are_what_an_edge_sends(cut, head):
    """fedavg_bytes (torch-free, from the committed batch-16 profile and the head's shape) against
    the FedAvg message a real edge packs: the same values, to BatchNorm's integer step counters
    (8 bytes each, in the profile's buffers but not averaged) and the frame header."""
    from hierbench.fleet import wire
    from hierbench.methods import RunConfig
    from hierbench.methods.parts import build_parts
    from hierbench.runtime.scale import SYNC_OVERHEAD_BYTES, fedavg_bytes

    prof = load_profile(
        "results/scale/measured/profiles/batch-16/resnet18-imagenet-cifar10-cpu-t1.csv"
    )
    cfg = RunConfig.from_dict({**scale.SCALE_RUN, "cut": cut, "exit_head": head})
    _, edge_m, _, head_m = build_parts(cfg)
    sent = len(wire.pack_params(7, wire.flat_state(edge_m, head_m)))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in edge_m.modules())
    model = fedavg_bytes(prof, cut, head)
    assert model - SYNC_OVERHEAD_BYTES - 8 * n_bn < sent <= model


def test_the_fedavg_set_is_sync_bound():
    """``--set fedavg``: by the model every point's largest per-step share is the FedAvg sync."""
    prof = load_profile(
        "results/scale/measured/profiles/batch-16/resnet18-imagenet-cifar10-cpu-t1.csv"
    )
    points, run, extra, _ = scale.SETS["fedavg"]
    cfg = {**scale.SCALE_RUN, **run}
    k = int(extra["edge_sync"].partition(":")[2])
    for e, w, _ in points:
        sc = Scenario(edge=prof, link=cfg["link"], n_batches=48 * e, cloud_speedup=1.0)
        fleet = Fleet(edges=e, links=cfg["link"], workers=w, sync_every=k)
        pred = scale_predict(sc, fleet, cfg["cut"], cfg["codec"])["hierarchical"]
        assert pred.bottleneck == "fedavg", (e, w, pred.terms)
