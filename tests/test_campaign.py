"""The converge campaign's machinery on a tiny real CIFAR-10 budget (``converge-ci``), and its
statistics on hand-made records."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest

from hierbench.errors import ConfigError
from hierbench.experiments.campaign import CampaignRunner
from hierbench.experiments.converge import CAMPAIGNS, get_campaign, pick_lr
from hierbench.methods import RunConfig
from hierbench.report import converge as rc
from hierbench.spec import stats
from hierbench.spec.records import read_record, write_record


def _ci(cifar10_root):
    camp = get_campaign("converge-ci")
    g = camp.groups[0]
    g = dataclasses.replace(g, base={**g.base, "data_root": str(cifar10_root)})
    return dataclasses.replace(camp, groups=(g,))


def test_pick_lr():
    assert pick_lr({0.01: 0.5, 0.05: 0.6, 0.1: 0.6}) == 0.05  # tie: the smaller rate
    assert pick_lr({0.01: 0.5, 0.05: None}) is None
    assert pick_lr({}) is None


def test_campaign_definitions_are_consistent():
    for camp in CAMPAIGNS.values():
        runs = camp.runs()
        for g in camp.groups:
            sweeps = [r for r in runs if r.group == g.name and r.stage == "sweep"]
            # the same number of tuning runs for every variant
            counts = {v: sum(r.variant == v for r in sweeps) for v in g.variants}
            assert set(counts.values()) == {len(g.lrs)}
            assert all(r.config["val_holdout"] == g.val_holdout for r in sweeps)
            finals = [r for r in runs if r.group == g.name and r.stage == "final"]
            assert all(r.config["val_holdout"] == 0 and r.needs_lr for r in finals)
            assert len(finals) == len(g.variants) * len(g.seeds)
    main = get_campaign("converge").groups[0]
    assert set(main.variants) == {"standard", "hier-q8", "hier-q4", "hier-fp32", "deepsup"}
    assert len(main.seeds) >= 3
    plateau = [r for r in main.runs() if r.stage == "plateau"]
    assert [(r.variant, r.config["epochs"]) for r in plateau] == [
        ("standard", 23),
        ("hier-q8", 23),
        ("standard", 35),
        ("hier-q8", 35),
    ]
    assert all(r.seed == 0 for r in plateau)
    # the first budget's ids keep their name; its runs follow seed 0's finals, the later
    # budget's the last seed's
    ids = [r.id for r in main.runs()]
    assert "r18in-plateau-standard-s0" in ids and "r18in-plateau35-hier-q8-s0" in ids
    assert ids.index("r18in-plateau-standard-s0") < ids.index("r18in-final-standard-s1")
    assert ids.index("r18in-plateau35-standard-s0") > ids.index("r18in-final-deepsup-s2")
    for bad in ((22,), (23, 30)):  # each budget >= 1.5x the one before
        with pytest.raises(ConfigError, match=r"1\.5x"):
            dataclasses.replace(main, plateau_epochs=bad)
    assert dataclasses.replace(main, plateau_epochs=30).plateau_epochs == (30,)
    # the other rows: standard vs hierarchical q8, every config valid
    others = {g.name: g for g in get_campaign("converge").groups[1:]}
    assert set(others) == {"tiny", "vgg16", "r18cifar"}
    assert len(others["tiny"].seeds) >= 3 and others["tiny"].base["cut"] == "layer4"
    assert others["vgg16"].base["cut"] == "pool4" and others["r18cifar"].base["stem"] == "cifar"
    for g in others.values():
        assert set(g.variants) == {"standard", "hier-q8"}
        for r in g.runs():
            cfg = RunConfig.from_dict({**r.config, "lr": r.config["lr"] or 0.05})
            assert cfg.dataset == g.base["dataset"]
            if r.variant == "hier-q8":  # the deep cut's pipeline: the edge gets both threads
                assert (cfg.threads_edge, cfg.threads_cloud) == (2, 1)
    with pytest.raises(ConfigError, match="overrides for variants it lacks"):
        dataclasses.replace(main, overrides={"hier-q2": {}})
    for bad in (("hier-q8",), ("standard", "hier-q2")):
        with pytest.raises(ConfigError, match="plateau_variants"):
            dataclasses.replace(main, plateau_variants=bad)


def test_campaign_runs_resumes_and_reports(cifar10_root, tmp_path, monkeypatch):
    camp = _ci(cifar10_root)
    out = tmp_path / "converge-ci"
    seen = []
    runner = CampaignRunner(camp, out, log=lambda s: None, on_record=seen.append, heartbeat_s=0.2)
    # an interruption in the middle of the first final run: the next call resumes it
    from hierbench.methods.edge import EdgeRole

    real = EdgeRole._train_step
    first_final = next(r for r in camp.runs() if r.stage == "final")

    def crashing(self, step, epoch, x, y):
        cfg = self.cfg
        if (
            (cfg.seed, cfg.epochs, cfg.method, cfg.val_holdout)
            == (first_final.seed, first_final.config["epochs"], "cloud_only", 0)
            and step == 5
            and not self.resumed_from
        ):
            raise KeyboardInterrupt
        return real(self, step, epoch, x, y)

    monkeypatch.setattr(EdgeRole, "_train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    states = dict((r.id, s) for r, s in runner.status())
    assert states[first_final.id] == "partial"
    assert all(states[r.id] == "done" for r in camp.runs() if r.stage == "sweep")
    tuning = json.loads((out / "tuning.json").read_text())
    picked = tuning["groups"]["tiny"]["picked"]
    assert set(picked) == {"standard", "hier-q8"} and all(
        v in (0.02, 0.05) for v in picked.values()
    )

    assert runner.run() > 0  # resumes the interrupted run, runs the rest
    assert all(s == "done" for _, s in runner.status())
    assert runner.run() == 0  # the same command again: nothing to do
    state = json.loads((out / "campaign.json").read_text())
    assert any(a["resumed"] for a in state["attempts"][first_final.id])
    assert not (out / "checkpoints" / first_final.id).exists()

    for r in camp.runs():
        rec = read_record(out / "runs" / f"{r.id}.json")
        assert rec["experiment"]["stage"] == r.stage
        assert rec["edge_steps"] == [] and "steps" in rec["conventions"]
        if r.stage == "sweep":
            assert rec["epochs"][-1]["eval_split"] == "train-holdout"
            assert rec["epochs"][-1]["eval_samples"] == 16
        else:
            assert rec["config"]["lr"] == picked[r.variant]
            assert rec["epochs"][-1]["eval_split"] == "test"
            assert len(rec["epochs"]) == rec["config"]["epochs"]
        if r.variant == "hier-q8":
            assert rec["epochs"][-1]["exit_acc"] is not None

    written = rc.write_converge_report(out, "results/profiles")
    readme = (out / "README.md").read_text()
    assert "of 10 runs finished" in readme and "Still missing" not in readme
    assert "### Plateau evidence: budgets of 2, 3, 5 epochs" in readme
    assert "### Time to accuracy (target: standard's mean final test accuracy" in readme
    assert "Picked at an edge of the grid" in readme  # a 2-rate grid: every pick is at an edge
    assert readme.count("**←**") == 2  # one pick per variant, read from tuning.json
    # the report marks the picks mid-campaign too, when campaign.json has none yet
    state = json.loads((out / "campaign.json").read_text())
    state.pop("picks")
    (out / "campaign.json").write_text(json.dumps(state))
    rc.write_converge_report(out, "results/profiles")
    assert (out / "README.md").read_text() == readme
    assert (out / "plots" / "tiny-time-to-accuracy.png") in written
    assert (out / "plots" / "tiny-accuracy-by-epoch.png") in written
    # the split-learning row is cited, not rerun: the test it cites exists
    cited = re.search(r"`(tests/[\w/]+\.py)::(\w+)`", readme)
    assert cited and f"def {cited[2]}(" in (Path(__file__).parent.parent / cited[1]).read_text()
    assert "](plots/tiny-accuracy-by-epoch.png)" in readme

    # a record of another config under a run's id is refused, never mixed in
    path = out / "runs" / f"{first_final.id}.json"
    rec = read_record(path)
    rec["config"]["lr"] = 0.123
    write_record(rec, path)
    with pytest.raises(ConfigError, match="another config"):
        runner.run()


# -- statistics on hand-made records --------------------------------------------------------


def test_grid_edge_note():
    lrs = [0.01, 0.02, 0.05, 0.1]
    assert (
        rc.grid_edge_note(["standard", "hier-q8"], {"standard": 0.02, "hier-q8": 0.05}, lrs) is None
    )
    note = rc.grid_edge_note(["standard", "hier-q8"], {"standard": 0.02, "hier-q8": 0.1}, lrs)
    assert "hier-q8" in note and "overstated" in note and "standard:" not in note
    note = rc.grid_edge_note(["standard", "hier-q8"], {"standard": 0.01}, lrs)
    assert note.startswith("Picked at an edge of the grid: standard.") and "understated" in note


def test_paired_drop_by_hand():
    base = {0: 0.80, 1: 0.82, 2: 0.81}
    other = {0: 0.79, 1: 0.80, 2: 0.805, 3: 0.5}  # seed 3 has no pair: ignored
    d = stats.paired_drop(base, other)
    diffs = [0.01, 0.02, 0.005]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(mean)
    assert d["std"] == pytest.approx(sd)
    assert d["hi"] - d["mean"] == pytest.approx(4.303 * sd / math.sqrt(3))
    one = stats.paired_drop({0: 0.8}, {0: 0.7})
    assert one["n"] == 1 and one["lo"] is None
    assert stats.paired_drop({0: 0.8}, {1: 0.7}) is None
    assert stats.t975(1) == 12.706 and stats.t975(100) == 1.96


def test_finals_table_and_verdict_by_hand():
    group = {"name": "g", "variants": ["standard", "hier-q8"]}
    runs, recs = [], {}
    for seed, (a, b) in enumerate([(0.80, 0.795), (0.81, 0.806), (0.79, 0.787)]):
        for v, acc, ex in (("standard", a, None), ("hier-q8", b, b - 0.1)):
            rid = f"g-final-{v}-s{seed}"
            runs.append({"id": rid, "group": "g", "stage": "final", "variant": v, "seed": seed})
            recs[rid] = {
                "epochs": [
                    {"final_acc": acc - 0.1, "exit_acc": None},
                    {"final_acc": acc, "exit_acc": ex},
                ]
            }
    fin = rc.finals_table(group, runs, recs)
    assert fin["standard"]["final"][0] == pytest.approx(0.80)
    assert fin["hier-q8"]["exit"][0] == pytest.approx((0.795 + 0.806 + 0.787) / 3 - 0.1)
    assert fin["hier-q8"]["drop_final"]["mean"] == pytest.approx((0.005 + 0.004 + 0.003) / 3)
    group.update(epochs=2, plateau_epochs=3)
    verdict = rc._verdict(fin, group, [])
    assert "hier-q8" in verdict and "negligible" in verdict
    assert "whether standard has plateaued there is not measured" in verdict

    def plateau_run(v, epochs, acc, rid=None):
        rid = rid or f"g-plateau{'' if epochs == 3 else epochs}-{v}-s0"
        runs.append({"id": rid, "group": "g", "stage": "plateau", "variant": v, "seed": 0})
        recs[rid] = {"epochs": [{"final_acc": acc, "exit_acc": None}], "config": {"epochs": epochs}}

    def section():
        return "\n".join(rc._plateau_section(group, rc.plateau_rows(group, runs, recs)))

    # the plateau runs: standard +2.5 pp at 3 epochs (no plateau), hier-q8 +0.5 pp
    plateau_run("standard", 3, 0.825)
    plateau_run("hier-q8", 3, 0.80)
    plateau = rc.plateau_rows(group, runs, recs)
    assert [(p["variant"], p["acc"]) for p in plateau] == [
        ("standard", {2: 0.80, 3: 0.825}),
        ("hier-q8", {2: 0.795, 3: 0.80}),
    ]
    assert rc.finals_plateau(group, plateau) == "not" and rc.plateau_at(group, plateau) is None
    assert "has not plateaued there" in rc._verdict(fin, group, plateau)
    text = section()
    assert (
        "| standard | 80.00 | 82.50 | +2.50 |" in text
        and "| hier-q8 | 79.50 | 80.00 | +0.50 |" in text
    )
    assert (
        "**Standard has not plateaued at 2 epochs**: longer runs changed its test accuracy by "
        "+2.50 pp at 3 epochs" in text
    )
    assert "No plateau up to 3 epochs, the longest budget run" in text
    assert "hier-q8: drop +0.50 pp at 2 epochs, +2.50 pp at 3 epochs" in text

    # a chain: 3 -> 5 epochs moves standard by +0.6 pp: the plateau is at 3
    group["plateau_epochs"] = [3, 5]
    plateau_run("standard", 5, 0.831)
    plateau_run("hier-q8", 5, 0.83)
    plateau = rc.plateau_rows(group, runs, recs)
    assert [p["acc"] for p in plateau] == [
        {2: 0.80, 3: 0.825, 5: 0.831},
        {2: 0.795, 3: 0.80, 5: 0.83},
    ]
    assert rc.plateau_at(group, plateau) == 3 and rc.finals_plateau(group, plateau) == "not"
    text = section()
    assert "| standard | 80.00 | 82.50 | 83.10 | +2.50 | +0.60 |" in text
    assert "by +2.50 pp at 3 epochs, +3.10 pp at 5 epochs (seed 0;" in text
    assert (
        "Standard has plateaued at 3 epochs for this schedule: every longer run stays within 1 "
        "pp of it (steps: 2→3 epochs +2.50 pp; 3→5 epochs +0.60 pp; seed 0)"
    ) in text
    assert "hier-q8: drop +0.50 pp at 2 epochs, +2.50 pp at 3 epochs, +0.10 pp at 5 epochs" in text
    # a small step, then a large one: no plateau at the small step's start
    std = {2: "g-final-standard-s0", 3: "g-plateau-standard-s0", 5: "g-plateau5-standard-s0"}
    for epochs, acc in ((2, 0.80), (3, 0.805), (5, 0.82)):
        recs[std[epochs]]["epochs"][-1]["final_acc"] = acc
    plateau = rc.plateau_rows(group, runs, recs)
    assert rc.plateau_at(group, plateau) is None and rc.finals_plateau(group, plateau) == "not"
    assert "No plateau up to 5 epochs" in section() and "has plateaued at" not in section()
    # small steps that add up to >= 1 pp: a plateau from 3, not from 2
    recs[std[5]]["epochs"][-1]["final_acc"] = 0.811  # +0.5, then +0.6: +1.1 pp from 2
    plateau = rc.plateau_rows(group, runs, recs)
    assert rc.plateau_at(group, plateau) == 3 and rc.finals_plateau(group, plateau) == "not"
    # the finals' budget within 1 pp of every longer run: the finals are at a plateau
    recs[std[5]]["epochs"][-1]["final_acc"] = 0.809
    plateau = rc.plateau_rows(group, runs, recs)
    assert rc.plateau_at(group, plateau) == 2 and rc.finals_plateau(group, plateau) == "plateau"
    assert "standard has plateaued at this budget" in rc._verdict(fin, group, plateau)
    assert "has not plateaued" not in section()
    # standard's final missing: the finals' budget is not judged; the rest still is
    held = recs.pop(std[2])
    plateau = rc.plateau_rows(group, runs, recs)
    assert rc.finals_plateau(group, plateau) is None and rc.plateau_at(group, plateau) == 3
    assert "is not measured" in rc._verdict(fin, group, plateau)
    recs[std[2]] = held
    # a record's own epochs decide its budget, not the run list's
    runs[-2]["epochs"] = 3
    assert rc.plateau_rows(group, runs, recs)[0]["acc"][5] == pytest.approx(0.809)
    for rid in ("g-plateau5-standard-s0", "g-plateau5-hier-q8-s0"):
        del recs[rid]
    runs = [r for r in runs if "plateau5" not in r["id"]]
    group["plateau_epochs"] = 3
    cur = rc.curves(group, runs, recs)
    assert cur["standard"] == pytest.approx([0.70, 0.80])
    assert rc.time_to_accuracy(cur["standard"], 10.0, 0.79) == (2, 20.0)
    assert rc.time_to_accuracy(cur["standard"], 10.0, 0.95) == (None, None)
    # an epoch some seed did not evaluate stays a gap: later epochs keep their numbers
    recs["g-final-standard-s1"]["epochs"].insert(0, {"final_acc": None})
    for rid in ("g-final-standard-s0", "g-final-standard-s2"):
        recs[rid]["epochs"].insert(0, {"final_acc": 0.5})
    cur = rc.curves(group, runs, recs)
    assert cur["standard"][0] is None and cur["standard"][1:] == pytest.approx([0.70, 0.80])
    assert rc.time_to_accuracy(cur["standard"], 10.0, 0.79) == (3, 30.0)
    # records at another rate than the current pick are named and left out
    for rid in recs:
        recs[rid]["config"] = {"lr": 0.1}
    recs["g-final-hier-q8-s2"]["config"]["lr"] = 0.05
    stale = rc.stale_records("g", runs, recs, {"standard": 0.1, "hier-q8": 0.1})
    assert stale == [("g-final-hier-q8-s2", 0.05, 0.1)]
    assert rc.stale_records("g", runs, recs, {"standard": 0.1, "hier-q8": None}) == []


@pytest.mark.parametrize(
    "lo, hi, words",
    [
        (-0.004, 0.009, ["negligible (the 95 % interval's upper end is below 1 pp)"]),
        (0.002, 0.008, ["negligible", "a real drop"]),
        (-0.03, -0.01, ["negligible", "in fact a gain"]),
        (0.01, 0.03, ["not negligible", "a real drop"]),
        (-0.025, 0.006, ["negligible"]),  # one-sided: not worse by 1 pp
        (-0.02, 0.012, ["not resolved (the 95 % interval straddles 1 pp)"]),
        (0.002, 0.015, ["not resolved", "a real drop"]),
    ],
)
def test_drop_verdict_reads_the_interval_one_sided(lo, hi, words):
    what = rc.drop_verdict({"lo": lo, "hi": hi})
    assert all(w in what for w in words), what
    if hi >= 0.01:
        assert not what.startswith("negligible")


def test_verdict_says_when_seeds_are_missing():
    fin = {
        "standard": {"final": (0.8, None)},
        "hier-q8": {"drop_final": {"n": 1, "mean": -0.03, "lo": None, "hi": None}},
    }
    verdict = rc._verdict(fin, {"epochs": 15}, [])
    assert "hier-q8: no verdict yet (n=1 paired seeds, needs 3)" in verdict


@pytest.mark.parametrize("gname", [g.name for g in get_campaign("converge").groups])
def test_every_group_has_its_precisions_profile(gname):
    """The time-to-accuracy table needs the committed 2-thread profile in the group's own
    precision (VGG-16 has no stem: its group's base has none, its profiles are named without)."""
    g = get_campaign("converge").group(gname)
    group = {"name": g.name, "variants": list(g.variants), "base": g.base}
    profiles = Path(__file__).resolve().parents[1] / "results" / "profiles"
    times, _ = rc.epoch_times(group, profiles, 390)
    assert times[("hier-q8", "3g")] > 0 and times[("standard", "3g")] > times[("standard", "wifi")]


def test_profile_records_its_precision(tmp_path):
    from hierbench import profiling
    from hierbench.methods.config import PRECISIONS
    from hierbench.runtime.profiles import load_profile

    assert profiling.PRECISIONS == PRECISIONS
    prof = profiling.measure_profile(
        "resnet18", stem="imagenet", batch=4, warmup=1, repeats=1, precision="bf16-cl"
    )
    assert prof.meta["precision"] == "bf16-cl"
    path = profiling.default_path(tmp_path, "resnet18", "imagenet", "cifar10", "cpu", 1, "bf16-cl")
    assert path.name == "resnet18-imagenet-cifar10-cpu-t1-bf16-cl.csv"
    profiling.write_profile(prof, path)
    assert load_profile(path).meta["precision"] == "bf16-cl"
    with pytest.raises(ConfigError, match="precision"):
        profiling.measure_profile("resnet18", batch=4, repeats=1, precision="fp8")


def test_second_driver_on_the_same_folder_is_refused(tmp_path):
    camp = get_campaign("converge-ci")
    first = CampaignRunner(camp, tmp_path / "c", log=lambda s: None)
    first.out.mkdir(parents=True)
    first._hold_folder()
    second = CampaignRunner(camp, tmp_path / "c", log=lambda s: None)
    with pytest.raises(ConfigError, match="another campaign driver"):
        second.run()
    first._lock_file.close()


def test_supervisor_kills_a_hung_driver_and_gives_up_without_progress(tmp_path):
    import sys

    from hierbench.experiments.campaign import supervise

    said = []
    rc = supervise(
        [],
        tmp_path,
        stale_s=1.0,
        poll_s=0.2,
        max_failures=2,
        log=said.append,
        cmd=[sys.executable, "-c", "import time; time.sleep(60)"],
    )
    assert rc != 0
    assert sum("killing it" in s for s in said) == 2
    assert any("finished no run" in s for s in said)
    ok = supervise([], tmp_path, poll_s=0.1, log=said.append, cmd=[sys.executable, "-c", "pass"])
    assert ok == 0


def test_supervisor_does_not_count_time_a_child_is_stopped(tmp_path):
    """Another job may SIGSTOP the campaign to have the machine: that is not a hang."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    from hierbench.experiments import campaign

    said = []
    real_popen = subprocess.Popen
    children = []

    def popen(*a, **kw):
        p = real_popen(*a, **kw)
        children.append(p)
        return p

    def cont_later():
        time.sleep(3.0)
        children[0].send_signal(signal.SIGCONT)

    code = "import os, signal; os.kill(os.getpid(), signal.SIGSTOP)"
    subprocess.Popen = popen
    try:
        threading.Thread(target=cont_later, daemon=True).start()
        rc = campaign.supervise(
            [], tmp_path, stale_s=1.0, poll_s=0.2, log=said.append, cmd=[sys.executable, "-c", code]
        )
    finally:
        subprocess.Popen = real_popen
    assert rc == 0 and not any("killing" in s for s in said)


def test_cli_status_lists_every_run(tmp_path, capsys):
    from hierbench.cli import main

    assert main(["campaign", "converge", "--out", str(tmp_path / "c"), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(get_campaign("converge").runs())
    assert lines[0].split() == ["todo", "r18in-sweep-standard-lr0.01"]
    waiting = sum(r.stage != "sweep" for r in get_campaign("converge").runs())
    assert waiting == 29  # 15 + 4 plateau (main), 6 (Tiny), 2 + 2 (VGG, CIFAR stem)
    assert sum(line.startswith("waiting") for line in lines) == waiting  # finals: no lr yet
    assert main(["campaign", "nope", "--status"]) == 2


def test_cpu_note_names_runs_off_the_main_machine():
    recs = {
        f"r{i}": {"environment": {"cpu_model": "AMD EPYC" if i < 3 else "Intel Xeon"}}
        for i in range(4)
    }
    done = [{"id": i} for i in recs]
    text = " ".join(rc._cpu_note(done, recs))
    assert "AMD EPYC: 3 runs; Intel Xeon: 1 run; not on the first: `r3`." in text
    assert rc._cpu_note(done[:3], recs) == ["CPU of every finished run: AMD EPYC.", ""]
    assert rc._cpu_note([], recs) == []
