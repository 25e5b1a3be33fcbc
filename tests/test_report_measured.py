"""The report's measured tables on hand-made records: repeats, medians, disturbed runs left out
and counted, pairing by repeat, the old clock refused, and the edge-speed fit (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hierbench.errors import ConfigError
from hierbench.experiments import Experiment
from hierbench.experiments.run import finished
from hierbench.report import fit, measured
from hierbench.runtime.table import PAPER_SETTINGS
from hierbench.spec import provenance
from hierbench.spec.records import write_record
from tests.runtime.helpers import run_record

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "results" / "profiles"


def _rec(method: str, wall: float, repeat: int, *, cloud_share=1.0, version=2, **cfg) -> dict:
    rec = run_record(
        {"method": method, "batch_size": 128, **cfg},
        12,
        wall,
        processes=2,
        experiment={"repeat": repeat},
        _id=f"{method}-r{repeat}",
    )
    rec["record_version"] = version
    rec["totals"] |= {"bytes_up": 12_000, "cloud_cpu_share": cloud_share}
    return rec


def _grid(cloud_share_r2: float = 1.0) -> list[dict]:
    out = []
    for r, (co, hier) in enumerate(((40.0, 20.0), (44.0, 20.0), (42.0, 24.0)), 1):
        out.append(_rec("cloud_only", co, r))
        share = cloud_share_r2 if r == 2 else 1.0
        out.append(_rec("hierarchical", hier, r, cloud_share=share))
    return out


def test_reductions_are_paired_by_repeat_with_median_and_range():
    meas = measured.measured_table(_grid(), PROFILES, {("resnet18", "cifar10"): ("layer3", 0.61)})
    row = meas.iloc[0]
    reds = sorted([1 - 20 / 40, 1 - 20 / 44, 1 - 24 / 42])
    assert row["vs_cloud_pairs"] == 3 and row["vs_cloud_disturbed"] == 0
    assert row["vs_cloud_median"] == pytest.approx(reds[1])
    assert (row["vs_cloud_min"], row["vs_cloud_max"]) == pytest.approx((reds[0], reds[2]))
    assert row["published"] == 0.61
    assert 0 < row["predicted_vs_cloud"] < 1


def test_disturbed_repeats_are_left_out_and_counted():
    recs = _grid(cloud_share_r2=0.5)
    meas = measured.measured_table(recs, PROFILES)
    row = meas.iloc[0]
    assert (row["vs_cloud_pairs"], row["vs_cloud_disturbed"]) == (2, 1)
    assert row["vs_cloud_median"] == pytest.approx((0.5 + (1 - 24 / 42)) / 2)
    val = measured.validation_table(recs, PROFILES)
    assert val["disturbed"].str.contains("cloud CPU share 0.500").sum() == 1
    summ = measured.validation_summary(val)
    hier = summ[summ["method"] == "hierarchical"].iloc[0]
    assert (hier["repeats"], hier["disturbed"], hier["used"]) == (3, 1, 2)
    assert hier["measured_s_median"] == pytest.approx(22.0)  # 20 and 24; the disturbed 20 out
    assert hier["error_median"] is not None


def test_old_clock_records_get_no_error():
    val = measured.validation_table([_rec("hierarchical", 20.0, 1, version=1)], PROFILES)
    assert val.iloc[0]["clock"] == "old (v1)"
    assert val.iloc[0]["predicted_s"] > 0 and val.iloc[0]["error"] is None


def test_edge_fit_residuals_are_the_curve_at_the_best_k():
    curve, res = fit.edge_speed_fit(PROFILES, PAPER_SETTINGS["configs"], points=61)
    assert res["best_k"] in curve.index
    for (_model, _stem, _data, _cut, pub), name in zip(
        PAPER_SETTINGS["configs"], curve.columns, strict=True
    ):
        want = 100 * (curve.loc[res["best_k"], name] - pub)
        assert res["residuals_pp"][name] == pytest.approx(want)
    # a slower edge never helps hierarchical training (more edge time, same link and cloud)
    for name in curve.columns:
        assert curve[name].is_monotonic_decreasing
    if res["window_k"]:
        lo, hi = res["window_k"]
        inside = curve.loc[lo:hi]
        for name, pub in zip(curve.columns, [c[4] for c in PAPER_SETTINGS["configs"]], strict=True):
            assert (100 * (inside[name] - pub)).abs().max() <= fit.TOLERANCE_PP + 1e-9


def test_cloud_factor_table_spread():
    df = fit.cloud_factor_table(PROFILES, PAPER_SETTINGS["configs"], ["3g", "wifi"])
    assert len(df) == 8
    for _, r in df.iterrows():
        vals = [r["cloud_1x"], r["cloud_10x"], r["cloud_100x"]]
        assert r["spread_pp"] == pytest.approx(100 * (max(vals) - min(vals)))


def test_resume_refuses_a_record_from_other_code(tmp_path):
    exp = Experiment("timing", {"method": "cloud_only", "link": "3g", "batches_per_epoch": 2})
    rec = _rec("cloud_only", 1.0, 0)
    rec["config"] = exp.run_config().to_dict()
    rec["environment"] = {"git_sha": "0" * 40, "git_dirty": False, "git_diff_sha256": None}
    write_record(rec, tmp_path / "runs" / f"{exp.id}.json")
    with pytest.raises(ConfigError, match="--accept-other-commits"):
        finished(tmp_path, exp)
    assert finished(tmp_path, exp, accept_other_commits=True)
    rec["environment"] = provenance.git_state()  # this code: accepted
    (tmp_path / "runs" / f"{exp.id}.json").write_text(json.dumps(rec))
    if rec["environment"]["git_sha"] != "unknown":
        assert finished(tmp_path, exp)


@pytest.mark.filterwarnings("ignore:the profiler got:RuntimeWarning")
def test_calibration_profiles_the_timing_runs_blocks_once(tmp_path):
    from hierbench.experiments.run import calibrate
    from hierbench.runtime.profiles import load_profile

    cfg = {"method": "hierarchical", "link": "3g", "batches_per_epoch": 2, "batch_size": 2}
    exps = [Experiment("timing", cfg, r) for r in (1, 2)] + [Experiment("accuracy", cfg)]
    said: list[str] = []
    done = calibrate(tmp_path, exps, said.append, None)
    path = tmp_path / "profiles" / "batch-2" / "resnet18-imagenet-cifar10-cpu-t1.csv"
    assert list(done) == ["batch-2/resnet18-imagenet-cifar10-cpu-t1.csv"]
    prof = load_profile(path)
    assert prof.batch == 2 and prof.meta["threads"] == 1
    assert calibrate(tmp_path, exps, said.append, None) == {}  # kept, not measured again
    assert "measured earlier, kept" in said[-1]
    # the report predicts a batch-2 run from that folder's batch-2 profile
    rec = _rec("hierarchical", 1.0, 1, batch_size=2)
    val = measured.validation_table([rec], tmp_path / "profiles", PROFILES)
    assert val.iloc[0]["predicted_s"] > 0
    assert val.iloc[0]["predicted_committed_s"] is None  # the committed one is batch 128


def test_drift_table_flags_a_disturbed_calibration_and_shows_the_edge_scale(tmp_path):
    from hierbench.report.measured import drift_table
    from hierbench.runtime.profiles import write_profile
    from tests.runtime.helpers import toy_profile

    cal, com = tmp_path / "cal" / "batch-10", tmp_path / "committed"
    write_profile(toy_profile(t_full=9.0, cpu_share=0.5), cal / "toy-a.csv")
    write_profile(
        toy_profile(t_full=8.0, cpu_share=0.99, edge_step_s={"a": {"conv": 4.4}}),
        cal / "toy-b.csv",
    )
    write_profile(toy_profile(t_full=6.0), com / "toy-a.csv")
    d = drift_table(tmp_path / "cal", com).set_index("profile")
    assert d.loc["batch-10/toy-a.csv", "disturbed"] and not d.loc["batch-10/toy-b.csv", "disturbed"]
    assert d.loc["batch-10/toy-a.csv", "ratio"] == pytest.approx(1.5)
    assert d.loc["batch-10/toy-b.csv", "edge_scale"] == "a 1.333"  # 4.4 / (1 + 1.5 + 0.5 + 0.3)
    assert pd.isna(d.loc["batch-10/toy-a.csv", "edge_scale"])
