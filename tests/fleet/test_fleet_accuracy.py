"""The fleet accuracy comparison's machinery on a tiny budget (the real runs: ``hierbench
fleet-accuracy``, results/fleet-accuracy): real processes, real CIFAR-10, evaluation of the
saved models on the test split, the same steps for E = 1 and E = 4, resume, the report."""

from __future__ import annotations

import pytest

from hierbench.errors import ConfigError
from hierbench.experiments import fleet_accuracy as fa


def test_variants_train_the_same_samples():
    for v, (edges, _part, _sync) in fa.VARIANTS.items():
        fcfg = fa.fleet_config(v)
        assert fcfg.edges == edges and fcfg.edges * fcfg.run.batch_size == fa.CLOUD_BATCH
        assert fcfg.run.epochs * fcfg.run.batches_per_epoch == fa.STEPS
        assert fcfg.run.eval == "end"
    with pytest.raises(ConfigError, match="unknown variant"):
        fa.fleet_config("e8")


@pytest.mark.slow
def test_fleet_accuracy_runs_evaluates_resumes_and_reports(cifar10_root, tmp_path):
    tiny = {
        "data_root": str(cifar10_root),
        "limit_per_class": 8,
        "batch_size": 4,
        "epochs": 1,
        "batches_per_epoch": 2,
        "eval_samples": 48,
    }
    said: list[str] = []
    variants = ("e1", "e4-iid-independent")
    fa.run_fleet_accuracy(tmp_path, variants=variants, run=tiny, say=said.append)
    recs = {r["variant"]: r for r in fa.read_runs(tmp_path)}
    assert set(recs) == set(variants)
    for v, r in recs.items():
        ev = r["eval"]
        assert r["totals"]["steps"] == 2 and ev["eval_samples"] == 48
        assert len(ev["per_edge"]) == fa.VARIANTS[v][0]
        for p in ev["per_edge"]:
            assert 0 <= p["final_acc"] <= 1 and 0 <= p["exit_acc"] <= 1
            assert (p["final_acc"] * 48) == pytest.approx(round(p["final_acc"] * 48))
    said.clear()
    fa.run_fleet_accuracy(tmp_path, variants=variants, run=tiny, say=said.append)
    assert all("done earlier, kept" in s for s in said) and len(said) == 2
    text = fa.report(tmp_path, "hierbench fleet-accuracy --report-only").read_text()
    assert "| e1 | 1 | 4 | iid | independent | 1 |" in text
    assert "| e4-dirichlet-fedavg | 4 | 32 | dirichlet:0.5 | fedavg:39 | 0 | — |" in text
