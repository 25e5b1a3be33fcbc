"""``hierbench reproduce`` and ``hierbench report``: the smoke preset end to end (real CIFAR-10,
real processes over loopback TCP), resumability, the no-overwrite rule, a torch-free report, and
the README's results block being the report's output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hierbench import experiments, report
from hierbench.errors import ConfigError
from hierbench.report.paper import PUBLISHED
from hierbench.runtime import Scenario, cloud_only, hierarchical, load_profile

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "results" / "profiles"
SMOKE = experiments.get_preset("smoke")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hierbench.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or dict(os.environ),
        timeout=600,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, cifar10_root) -> Path:
    """The smoke preset, run once for this module, as a user runs it."""
    out = tmp_path_factory.mktemp("smoke") / "smoke"
    env = dict(os.environ, HIERBENCH_CIFAR10_ROOT=str(cifar10_root))
    res = _cli("reproduce", "--preset", "smoke", "--out", str(out), "--quiet", env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_smoke_writes_every_table_plot_and_record(smoke):
    manifest = json.loads((smoke / "manifest.json").read_text())
    assert manifest["preset"]["name"] == "smoke"
    assert set(manifest["runs"]) == {e.id for e in SMOKE.experiments}
    for e in SMOKE.experiments:
        rec = json.loads((smoke / "runs" / f"{e.id}.json").read_text())
        assert rec["config"] == e.run_config().to_dict()
        assert rec["totals"]["batches"] > 0
        if e.kind == "timing":
            assert rec["processes"] == 2
    for name in ("reduction", "sensitivity", "bytes", "validation", "measured", "accuracy"):
        assert (smoke / "tables" / f"{name}.csv").stat().st_size > 0, name
    conventions = (smoke / "tables" / "CONVENTIONS.md").read_text()
    assert "upload: every-epoch" in conventions and "cloud: ASSUMED" in conventions
    for name in ("runtime_vs_rate", "reduction_vs_cut", "timeline", "accuracy"):
        png = smoke / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    text = (smoke / "README.md").read_text()
    for section in ("## Conventions", "## (a)", "## (b)", "## (c)", "## (d)", "## Runs"):
        assert section in text
    acc = pd.read_csv(smoke / "tables" / "accuracy.csv")
    assert sorted(acc["method"]) == ["cloud_only", "hierarchical"]
    assert acc["exit_acc"].notna().sum() == 1  # only hierarchical has an edge exit
    val = pd.read_csv(smoke / "tables" / "validation.csv")
    assert sorted(val["method"]) == ["cloud_only", "hierarchical", "split"]
    # The smoke runs use batch 16: no committed profile matches, so no prediction is made up.
    assert (val["bottleneck"] == "no matching profile").all()
    red = pd.read_csv(smoke / "tables" / "reduction.csv")
    assert len(red) == len(SMOKE.report["configs"]) * len(SMOKE.report["links"])


def test_existing_results_are_neither_overwritten_nor_rerun(smoke, cifar10_root):
    env = dict(os.environ, HIERBENCH_CIFAR10_ROOT=str(cifar10_root))
    res = _cli("reproduce", "--preset", "smoke", "--out", str(smoke), "--quiet", env=env)
    assert res.returncode == 2
    assert "--resume" in res.stderr and "--overwrite" in res.stderr
    runs = smoke / "runs"
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    # Resume after a lost run: only that run is done again; the others are skipped untouched.
    lost = next(e.id for e in SMOKE.experiments if e.kind == "accuracy")
    (runs / f"{lost}.json").unlink()
    res = _cli("reproduce", "--preset", "smoke", "--out", str(smoke), "--resume", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("finished earlier, skipped") == len(SMOKE.experiments) - 1
    after = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert set(after) == set(before)
    changed = {n for n in after if after[n] != before.get(n)}
    assert changed == {f"{lost}.json"}
    manifest = json.loads((smoke / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2


def test_folder_rules(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "something").write_text("keep me")
    with pytest.raises(ConfigError, match="--resume"):
        experiments.prepare_folder(tmp_path / "x", SMOKE, overwrite=False, resume=False)
    with pytest.raises(ConfigError, match="no manifest"):
        experiments.prepare_folder(tmp_path / "x", SMOKE, overwrite=False, resume=True)
    with pytest.raises(ConfigError, match="contradict"):
        experiments.prepare_folder(tmp_path / "x", SMOKE, overwrite=True, resume=True)
    assert (tmp_path / "x" / "something").read_text() == "keep me"
    (tmp_path / "x" / "manifest.json").write_text(json.dumps({"preset": {"name": "quick"}}))
    with pytest.raises(ConfigError, match="holds preset 'quick'"):
        experiments.prepare_folder(tmp_path / "x", SMOKE, overwrite=False, resume=True)
    # --overwrite deletes only a results folder (issue 15): not this one, with a stray file
    with pytest.raises(ConfigError, match="not a hierbench manifest"):
        experiments.prepare_folder(tmp_path / "x", SMOKE, overwrite=True, resume=False)
    manifest = {"manifest_version": 1, "preset": {"name": "quick"}}
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"holds files a results folder does not \(something\)"):
        experiments.prepare_folder(tmp_path / "x", SMOKE, overwrite=True, resume=False)
    assert (tmp_path / "x" / "something").read_text() == "keep me"
    (tmp_path / "x" / "something").unlink()
    (tmp_path / "x" / "runs").mkdir()
    assert experiments.prepare_folder(tmp_path / "x", SMOKE, overwrite=True, resume=False) is None
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="valid choices: smoke, quick"):
        experiments.get_preset("huge")


def test_every_preset_is_a_valid_grid():
    for preset in experiments.PRESETS.values():
        assert preset.experiments, preset.name
        for e in preset.experiments:
            cfg = e.run_config()  # validates names and values
            assert cfg.method in ("cloud_only", "split", "hierarchical")
        kinds = {e.kind for e in preset.experiments}
        assert kinds <= {"timing", "kernel", "accuracy"}
    quick = experiments.get_preset("quick")
    links = {e.config["link"] for e in quick.experiments if e.kind == "timing"}
    assert len(links) >= 3  # validation at >= 3 link rates
    assert any(e.config["codec"] == "q4" for e in quick.experiments if e.kind == "timing")
    # every measured point is repeated, and each repeat is its own record
    timing = [e for e in quick.experiments if e.kind in ("timing", "kernel")]
    points = {(e.kind, tuple(sorted(e.config.items()))) for e in timing}
    assert len(timing) >= 3 * len(points) and len({e.id for e in timing}) == len(timing)
    # the paper's four configurations are measured at 3g, with kernel-shaped 3g points too
    measured = {
        (e.config["model"], e.config["dataset"]) for e in timing if e.config["link"] == "3g"
    }
    assert len(measured) == 4 and any(e.kind == "kernel" for e in timing)


def test_report_needs_no_torch(smoke, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(smoke, folder)
    shutil.rmtree(folder / "tables")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from hierbench.report import write_report\n"
        f"write_report({str(folder)!r}, {str(PROFILES)!r})\n"
        "assert sys.modules['torch'] is None\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (folder / "tables" / "reduction.csv").is_file()


def test_reduction_table_is_the_runtime_model_and_quotes_the_paper():
    configs = experiments.get_preset("quick").report["configs"]
    red = report.tables.reduction_table(PROFILES, configs, ["3g", "wifi"])
    assert len(red) == 8
    for _, row in red.iterrows():
        model, dataset, link = row["model"], row["dataset"], row["link"]
        stem_part = "" if model == "vgg16" else "-imagenet"
        edge = load_profile(PROFILES / f"{model}{stem_part}-{dataset}-cpu-t1.csv")
        sc = Scenario(edge, link)
        cut, published = PUBLISHED[(model, dataset)]
        expect = hierarchical(sc, cut, "q8").reduction_vs(cloud_only(sc))
        assert row["paper_cut"] == cut
        assert row["paper_cut_q8_vs_cloud"] == pytest.approx(expect)
        if link == "3g":
            assert row["published_3g"] == published
            assert row["delta_pp"] == pytest.approx(100 * (expect - published))
        else:
            assert pd.isna(row["published_3g"])
        # The search never picks something slower than the paper's cut with the same codec.
        assert row["search_q8_vs_cloud"] >= min(row["paper_cut_q8_vs_cloud"], 0.0) - 1e-12


def test_sensitivity_rows_move_the_number_they_name():
    configs = experiments.get_preset("quick").report["configs"]
    sens = report.tables.sensitivity_table(PROFILES, configs, "3g")
    ours = sens.loc["runtime model, base conventions (ours)"]
    # A slower edge can only lengthen hierarchical training; a 4-bit codec only shorten it.
    assert (sens.loc["edge 4× slower (k = 4)"] <= ours + 1e-12).all()
    assert (sens.loc["4-bit activations instead of 8-bit"] >= ours - 1e-12).all()
    limit = sens.loc["link-bound limit: 1 − (8-bit codes)/(uint8 pixels)"]
    assert list(limit.round(3)) == [0.333, 0.667, 0.333, 0.833]  # PAPER.md's 33/67/33/83 %


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    assert report.update_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{report.BEGIN}\nnew table\n{report.END}\noutro\n"
    assert not report.update_readme(readme, "new table")
    readme.write_text("no markers")
    with pytest.raises(ConfigError, match="markers"):
        report.update_readme(readme, "x")


def test_readme_results_block_is_generated_from_committed_results():
    """The README's headline table is the report's output for the committed folders."""
    text = (ROOT / "README.md").read_text()
    block = text.split(report.BEGIN, 1)[1].split(report.END, 1)[0].strip()
    folders = [f for f in report.README_FOLDERS if (ROOT / f).is_dir()]
    assert folders and folders[0] == "results/quick", "results/quick is not committed"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        expected = report.headline_markdown(folders).strip()
    finally:
        os.chdir(cwd)
    assert block == expected, "README results block is stale: run `make readme-results`"
