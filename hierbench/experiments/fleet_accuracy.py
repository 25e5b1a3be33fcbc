"""Issue 17's accuracy question: hierarchical training on E = 4 edges against E = 1, at the same
number of samples, IID and non-IID shards, independent and averaged edge models.

Each variant is one local fleet run (:func:`hierbench.fleet.launcher.run_fleet`) of the same
hierarchical ResNet-18 (ImageNet stem) @layer3 with q8 activations on real CIFAR-10, scored on
the whole test split after training (:mod:`hierbench.fleet.evaluate`: every edge's final
classifier and exit, and their means). **Same samples, same cloud batches**: E = 1 trains
``STEPS`` steps of 128; E = 4 trains ``STEPS`` lockstep steps of 4 x 32 (each edge 32 per step),
so the cloud sees the same number of batches of the same size and every variant the same
99,840 training samples; an edge of E = 4 sees a quarter of them. Steps come as
``EPOCHS`` x ``BATCHES_PER_EPOCH`` (each "epoch" a fresh seeded draw from the edge's shard), so
every variant has exactly ``STEPS`` steps whatever its shard sizes (checked before each run).

Settings: SGD momentum 0.9, weight decay 5e-4, cosine decay over the run, lr 0.1 (hier-q8's pick
in the converge sweep over 0.01-0.2, results/converge/tuning.json), augmentation on, link
unshaped (the math does not depend on it), ``fedavg:39`` (edge layers and exit averaged twice
per 78 steps), Dirichlet(0.5) label shards for non-IID. Seeds as given (results/fleet-accuracy:
0, 1, 2): a short-budget comparison, not an accuracy at convergence (that is results/converge).

Run ids: the variant names of :data:`VARIANTS`, ``-s<seed>``; records in ``<out>/runs/`` (fleet
records with ``eval``); a finished record is kept (resume at run granularity).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hierbench.errors import ConfigError

BATCHES_PER_EPOCH = 78
EPOCHS = 10
STEPS = BATCHES_PER_EPOCH * EPOCHS
#: Samples per cloud step, every variant.
CLOUD_BATCH = 128

BASE_RUN: dict = {
    "method": "hierarchical",
    "model": "resnet18",
    "stem": "imagenet",
    "dataset": "cifar10",
    "cut": "layer3",
    "codec": "q8",
    "link": None,
    "epochs": EPOCHS,
    "batches_per_epoch": BATCHES_PER_EPOCH,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "augment": True,
    "eval": "end",
    "eval_samples": None,
    "threads_edge": 1,
    "threads_cloud": 1,
}

#: name -> (E, partition, edge_sync)
VARIANTS: dict[str, tuple[int, str, str]] = {
    "e1": (1, "iid", "none"),
    "e4-iid-independent": (4, "iid", "none"),
    "e4-iid-fedavg": (4, "iid", "fedavg:39"),
    "e4-dirichlet-independent": (4, "dirichlet:0.5", "none"),
    "e4-dirichlet-fedavg": (4, "dirichlet:0.5", "fedavg:39"),
}


def fleet_config(variant: str, seed: int = 0, run: dict | None = None):
    from hierbench.fleet import FleetConfig
    from hierbench.methods import RunConfig

    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    edges, partition, sync = VARIANTS[variant]
    cfg = {**BASE_RUN, "seed": seed, "batch_size": CLOUD_BATCH // edges, **(run or {})}
    return FleetConfig(
        run=RunConfig.from_dict(cfg),
        edges=edges,
        workers=1,
        edge_sync=sync,
        partition=partition,
    )


def run_fleet_accuracy(
    out: str | Path,
    *,
    seeds: tuple[int, ...] = (0,),
    variants: tuple[str, ...] = tuple(VARIANTS),
    run: dict | None = None,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Run every missing variant x seed into ``<out>/runs``; return the records' paths."""
    from hierbench.fleet import wire
    from hierbench.fleet.launcher import run_fleet
    from hierbench.fleet.record import write_json

    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    todo = [(v, s) for s in seeds for v in variants]
    paths = []
    for i, (v, s) in enumerate(todo, 1):
        rid = f"{v}-s{s}"
        path = out / "runs" / f"{rid}.json"
        paths.append(path)
        if path.is_file():
            say(f"[{i}/{len(todo)}] {rid}: done earlier, kept")
            continue
        fcfg = fleet_config(v, s, run)
        _, _, spe = wire.shards(fcfg)  # before hours of training: every variant's steps agree
        if spe != fcfg.run.batches_per_epoch:
            raise ConfigError(
                f"{rid}: the smallest shard holds {spe} batches of {fcfg.run.batch_size}, not "
                f"{fcfg.run.batches_per_epoch}: this variant would train fewer samples"
            )
        say(f"[{i}/{len(todo)}] {rid}: {fcfg.edges} edge(s) x batch {fcfg.run.batch_size} ...")
        t0 = time.perf_counter()
        run_dir = Path(tempfile.mkdtemp(prefix=f"hierbench-fleet-acc-{rid}-"))
        try:
            rec = run_fleet(
                fcfg, run_dir, timeout=7200.0, command=f"hierbench fleet-accuracy --out {out}"
            )
        except BaseException:
            say(f"[{i}/{len(todo)}] {rid} failed: its logs and parts are in {run_dir}")
            raise
        shutil.rmtree(run_dir, ignore_errors=True)
        rec["id"], rec["variant"], rec["seed"] = rid, v, s
        rec["elapsed_s"] = time.perf_counter() - t0
        for e in rec["edges"]:  # per-step timings are not this comparison's subject: keep totals
            e["steps"] = []
        for w in rec["workers"]:
            w["losses"] = [r.get("loss") for r in w["steps"]]
            w["steps"] = []
        write_json(path, rec)
        ev = rec["eval"]
        say(
            f"[{i}/{len(todo)}] {rid}: test final {100 * ev['final_acc']:.2f} %, exit "
            f"{100 * ev['exit_acc']:.2f} % ({rec['elapsed_s'] / 60:.1f} min)"
        )
    return paths


def read_runs(out: str | Path) -> list[dict]:
    from hierbench.fleet.record import check_fleet_record

    return [
        check_fleet_record(json.loads(p.read_text()), str(p))
        for p in sorted((Path(out) / "runs").glob("*.json"))
    ]


def report(out: str | Path, command: str) -> Path:
    """``<out>/README.md``: one row per variant: mean ± std over seeds, the change against E = 1
    paired by seed with its 95 % t-interval, each seed's value, the per-edge range."""
    from hierbench.spec.stats import mean_std, paired_drop

    out = Path(out)
    recs = read_runs(out)
    rows = [
        "| variant | E | batch per edge | partition | edge models | seeds | test accuracy, "
        "final (mean over edges) | exit (mean over edges) | final − e1, paired by seed "
        "(95 % CI) | final per seed | per-edge final, min–max | machine time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def by_seed(v: str, key: str) -> dict[int, float]:
        return {r["seed"]: 100 * r["eval"][key] for r in recs if r.get("variant") == v}

    def pm(xs: list[float]) -> str:
        m, sd = mean_std(xs)
        return f"{m:.2f} %" + (f" ± {sd:.2f}" if sd is not None else "")

    base = by_seed("e1", "final_acc")
    for v, (e, part, sync) in VARIANTS.items():
        rs = sorted((r for r in recs if r.get("variant") == v), key=lambda r: r["seed"])
        if not rs:
            rows.append(
                f"| {v} | {e} | {CLOUD_BATCH // e} | {part} | {sync} | 0 | — | — | — | — | — | — |"
            )
            continue
        fin = by_seed(v, "final_acc")
        ex = by_seed(v, "exit_acc")
        if v == "e1":
            delta = "(the reference)"
        else:
            d = paired_drop(fin, base)  # fin − e1
            if d is None:
                delta = "—"
            elif d["lo"] is None:
                delta = f"{d['mean']:+.2f} pp (1 seed)"
            else:
                delta = f"{d['mean']:+.2f} pp [{d['lo']:+.2f}, {d['hi']:+.2f}], n = {d['n']}"
        seeds = ", ".join(f"s{r['seed']}: {100 * r['eval']['final_acc']:.1f}" for r in rs)
        edges = [100 * p["final_acc"] for r in rs for p in r["eval"]["per_edge"]]
        mins = sum(r["elapsed_s"] for r in rs) / 60
        batch = rs[0]["config"]["run"]["batch_size"]
        rows.append(
            f"| {v} | {e} | {batch} | {part} | "
            f"{'independent' if sync == 'none' else sync} | {len(rs)} | "
            f"{pm(list(fin.values()))} | {pm(list(ex.values()))} | {delta} | {seeds} | "
            f"{min(edges):.1f}–{max(edges):.1f} | {mins:.0f} min |"
        )
    cpus = sorted({r["environment"].get("cpu_model", "?") for r in recs})
    text = "\n".join(
        [
            "# Hierarchical training on 4 edges vs 1, same samples (issue 17)",
            "",
            "Made by `" + command + "`; protocol in `hierbench/experiments/fleet_accuracy.py` "
            f"(E = 1: {STEPS} steps of {CLOUD_BATCH}; E = 4: {STEPS} lockstep steps of 4 x "
            f"{CLOUD_BATCH // 4}; ResNet-18 (ImageNet stem) @layer3, q8, lr 0.1, cosine; test "
            "split of CIFAR-10, 10,000 images). A short budget, not an accuracy at convergence "
            "(that is results/converge). Mean ± sample std over the seeds column; the change "
            "against E = 1 is paired by seed number, its interval a Student-t 95 % interval "
            "over the pairs; machine time is the sum over seeds. Machine: "
            + (", ".join(cpus) or "?")
            + ".",
            "",
            *rows,
            "",
        ]
    )
    path = out / "README.md"
    path.write_text(text)
    return path
