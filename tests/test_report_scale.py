"""``hierbench predict-scale`` (hierbench.report.scale): the many-edges predictions' table, plot
and README, from the committed profiles; the committed results/scale/ is what the command makes."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from hierbench.cli import main
from hierbench.report.scale import (
    DEFAULT_SCALE,
    edge_grid,
    fedavg_rows,
    scale_tables,
    write_scale_report,
)
from hierbench.runtime.model import Scenario
from hierbench.runtime.scale import Fleet, saturation, scale_predict
from hierbench.runtime.table import load_for

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "results/profiles"
SMALL = {
    "configs": [["resnet18", "imagenet", "cifar10", "layer3", 0.61]],
    "links": ["3g"],
    "workers": [1, 2],
    "e_plot": 50,
    "e_max": 400,
}


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_edge_grid():
    g = edge_grid(1000)
    assert g[0] == 1 and g[-1] == 1000
    assert g == sorted(set(g))
    assert len(g) > 20


def test_write_scale_report_matches_the_model(tmp_path):
    paths = write_scale_report(tmp_path, PROFILES, SMALL, command="hierbench predict-scale X")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    rows = _read(paths["saturation_csv"])
    assert len(rows) == 1 * 1 * 2 * 3
    edge, cloud = load_for(PROFILES, "resnet18", "imagenet", "cifar10", 1)
    sc = Scenario(edge, "3g", cloud=cloud)
    for row in rows:
        fleet = Fleet(
            1,
            "3g",
            workers=int(row["workers"]),
            ingress=DEFAULT_SCALE["ingress_bps"],
        )
        sat = saturation(sc, fleet, "layer3", "q8", e_max=400)[row["method"]]
        expect = "" if sat.cloud_edges is None else str(sat.cloud_edges)
        assert row["cloud_saturates_at_e"] == expect
        top = scale_predict(sc, fleet.with_edges(50), "layer3", "q8")[row["method"]]
        assert float(row["samples_per_s_e50"]) == pytest.approx(top.samples_per_s, rel=1e-5)
        assert row["bottleneck_e50"] == top.bottleneck
    curves = _read(paths["throughput_csv"])
    assert len(curves) == 2 * 3 * len(edge_grid(50))
    readme = paths["readme"].read_text()
    assert "these are predictions" in readme.lower() and "hierbench predict-scale X" in readme
    assert "measured/README.md" in readme
    assert paths["saturation_md"].read_text().strip() in readme
    fed = _read(paths["fedavg_csv"])
    assert len(fed) == 2 * 2 * 2  # E in {10, 1000} x K in {39, 390} x (hierarchical, split)
    for row in fed:
        fleet = Fleet(int(row["edges"]), "3g", workers=2, ingress=DEFAULT_SCALE["ingress_bps"])
        k = int(row["fedavg_every"])
        alone = scale_predict(sc, fleet, "layer3", "q8")[row["method"]]
        synced = scale_predict(sc, replace(fleet, sync_every=k), "layer3", "q8")[row["method"]]
        assert float(row["samples_per_s_fedavg"]) == pytest.approx(synced.samples_per_s, rel=1e-5)
        assert float(row["slowdown"]) == pytest.approx(
            alone.samples_per_s / synced.samples_per_s, rel=1e-5
        )
        assert float(row["slowdown"]) > 1  # averaging never speeds a fleet up
    assert "FedAvg every K steps" in readme


def test_fedavg_never_speeds_a_fleet_up():
    """Every row of the committed configurations, links, E and K: FedAvg costs time; more
    often costs more."""
    rows = fedavg_rows(PROFILES, DEFAULT_SCALE)
    assert rows and all(r["slowdown"] > 1 for r in rows)
    by = {(r["config"], r["link"], r["edges"], r["method"], r["fedavg_every"]): r for r in rows}
    for (cfg, link, e, method, k), r in by.items():
        if k == 39:
            assert r["slowdown"] >= by[(cfg, link, e, method, 390)]["slowdown"]


def test_cli_writes_the_folder(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--links", "wifi", "--workers", "1", "--edges", "20"]
    rc = main(["predict-scale", *args, "--e-max", "40", "--ingress", "none"])
    assert rc == 0
    rows = _read(tmp_path / "saturation.csv")
    assert len(rows) == 4 * 3  # the paper's four configurations x methods
    assert all(r["ingress_saturates_at_e"] == r["ingress_cap_samples_per_s"] == "" for r in rows)
    assert "no shared cloud ingress" in (tmp_path / "README.md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_cli_bad_workers_names_the_problem(tmp_path, capsys):
    rc = main(["predict-scale", "--out", str(tmp_path), "--workers", "0", "--e-max", "5"])
    assert rc == 2
    assert "workers" in capsys.readouterr().err


def test_committed_saturation_table_is_current():
    """results/scale/saturation.csv is what the stated command makes from the committed
    profiles (the README in that folder states it)."""
    rows, _ = scale_tables(PROFILES, DEFAULT_SCALE)
    committed = _read(ROOT / "results/scale/saturation.csv")
    assert len(committed) == len(rows)
    for got, row in zip(committed, rows):
        for key, value in row.items():
            if isinstance(value, float):
                assert float(got[key]) == pytest.approx(value, rel=1e-5), key
            else:
                assert got[key] == ("" if value is None else str(value)), key
