"""Does a precision setting train to the same accuracy as fp32? (issue 14, part 1)

Short real runs through the real roles (:func:`hierbench.methods.run`, one process): the same
model, data subset, schedule and seeds in each ``--precisions`` setting, per ``--methods``;
test accuracy (final classifier, edge exit) after every epoch (``--eval end``: after the last).
The seed-to-seed spread of fp32 is the yardstick: a setting "matches" when its mean final
accuracy is within the larger of 2 x fp32's seed spread (max - min) and 1 pp. Each setting's
difference to fp32 is also paired by seed (same seed: same initial weights and data order, so
only the arithmetic differs) with its 95 % Student-t interval; ``equivalent_1pp`` says whether
that interval lies inside +-1 pp (a stricter, equivalence-test reading).

    python scripts/precision_check.py --model resnet18 --stem imagenet \\
        --out results/speed/precision-accuracy-resnet18-imagenet-<sha>.json
    python scripts/precision_check.py --summarize results/speed/precision-accuracy-*.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def by_seed(rows: list[dict], method: str, precision: str, key: str = "final_acc") -> dict:
    """``{seed: last-epoch accuracy}`` of one method and setting (seeds without a value left
    out)."""
    return {
        r["seed"]: r[key][-1]
        for r in rows
        if r["method"] == method and r["precision"] == precision and r[key][-1] is not None
    }


def vs_fp32(rows: list[dict], method: str, precision: str, key: str = "final_acc") -> dict | None:
    """The setting's accuracy minus fp32's, paired by seed: ``mean``, 95 % ``lo`` / ``hi``
    (None with one pair) and ``n``; None without a pair."""
    from hierbench.spec.stats import paired_drop

    # paired_drop gives fp32 - setting
    d = paired_drop(by_seed(rows, method, "fp32", key), by_seed(rows, method, precision, key))
    if d is None:
        return None
    lo = None if d["lo"] is None else -d["hi"]
    hi = None if d["hi"] is None else -d["lo"]
    return {"mean": -d["mean"], "lo": lo, "hi": hi, "n": d["n"]}


def markdown(paths: list[str]) -> str:
    """Per result file: per setting, final and exit accuracy by seed, their means and the
    difference to fp32 paired by seed with its 95 % t-interval (``--summarize``)."""

    def pp(x):
        return f"{100 * x:+.2f}"

    out = []
    for path in paths:
        d = json.loads(Path(path).read_text())
        st = d["settings"]
        out += [
            f"### {Path(path).name}",
            "",
            f"{st['model']} (stem {st['stem']}) @{st['cut']}, {d['environment'].get('cpu_model')}, "
            f"{st['limit_per_class']} training images per class, {st['epochs']} epochs, lr "
            f"{st['lr']}, test images per evaluation: {st['eval_samples']}, git {d['git_sha']}, "
            f"load average at the end {d['loadavg_end'][0]:.1f}. `{d['command']}`",
            "",
            "| method | precision | key | by seed (%) | mean (%) | − fp32, paired [95 % CI] (pp) "
            "| train time, mean (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for method in dict.fromkeys(r["method"] for r in d["runs"]):
            rows = [r for r in d["runs"] if r["method"] == method]
            for precision in dict.fromkeys(r["precision"] for r in rows):
                mine = [r for r in rows if r["precision"] == precision]
                for key in ("final_acc", "exit_acc"):
                    acc = by_seed(rows, method, precision, key)
                    if not acc:
                        continue
                    diff = "—"
                    if precision != "fp32" and (dr := vs_fp32(rows, method, precision, key)):
                        diff = pp(dr["mean"])
                        if dr["lo"] is not None:
                            diff += f" [{pp(dr['lo'])}, {pp(dr['hi'])}] (n={dr['n']})"
                    out.append(
                        f"| {method} | {precision} | {key.split('_')[0]} | "
                        + " / ".join(f"{100 * acc[k]:.2f}" for k in sorted(acc))
                        + f" | {100 * statistics.fmean(acc.values()):.2f} | {diff} | "
                        f"{statistics.fmean(r['train_wall_s'] for r in mine):.0f} |"
                    )
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--summarize"]:
        print(markdown(argv[1:]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--stem", default="imagenet")
    p.add_argument("--cut", default="layer3")
    p.add_argument("--methods", default="cloud_only,hierarchical")
    p.add_argument("--precisions", default="fp32,bf16-cl")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-per-class", type=int, default=500)
    p.add_argument("--eval-samples", default="2000", help="test images per evaluation, or 'all'")
    p.add_argument("--eval", default="epoch", choices=("epoch", "end"))
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)

    from hierbench.methods import RunConfig, run
    from hierbench.methods.runner import environment

    eval_samples = None if a.eval_samples == "all" else int(a.eval_samples)

    rows = []
    for method in a.methods.split(","):
        for precision in a.precisions.split(","):
            for seed in map(int, a.seeds.split(",")):
                hier = method == "hierarchical"
                cfg = RunConfig(
                    method=method,
                    model=a.model,
                    stem=a.stem,
                    cut=a.cut,
                    codec="q8" if hier else "fp32",
                    link=None,
                    epochs=a.epochs,
                    lr=a.lr,
                    seed=seed,
                    limit_per_class=a.limit_per_class,
                    eval=a.eval,
                    eval_samples=eval_samples,
                    precision=precision,
                    threads_edge=1 if hier else a.threads,
                    threads_cloud=1 if hier else a.threads,
                )
                t0 = time.perf_counter()
                rec = run(cfg, progress=False)
                wall = time.perf_counter() - t0
                ep = rec["epochs"]
                row = {
                    "method": method,
                    "precision": precision,
                    "seed": seed,
                    "final_acc": [e.get("final_acc") for e in ep],
                    "exit_acc": [e.get("exit_acc") for e in ep],
                    "cloud_train_loss": [e.get("cloud_train_loss") for e in ep],
                    "train_wall_s": rec["totals"]["train_wall_s"],
                    "wall_s": wall,
                }
                rows.append(row)
                print(
                    json.dumps({k: row[k] for k in ("method", "precision", "seed")})
                    + f" final {row['final_acc'][-1]} exit {row['exit_acc'][-1]} "
                    f"train {row['train_wall_s']:.0f} s",
                    flush=True,
                )
    summary = []
    for method in a.methods.split(","):
        ref = list(by_seed(rows, method, "fp32").values())
        spread = (max(ref) - min(ref)) if len(ref) > 1 else None
        tol = max(2 * spread, 0.01) if spread is not None else 0.01
        for precision in a.precisions.split(","):
            accs = list(by_seed(rows, method, precision).values())
            walls = [
                r["train_wall_s"]
                for r in rows
                if r["method"] == method and r["precision"] == precision
            ]
            diff = statistics.fmean(accs) - statistics.fmean(ref) if ref else None
            pd = vs_fp32(rows, method, precision) if ref else None
            lo, hi = (None, None) if pd is None else (pd["lo"], pd["hi"])
            summary.append(
                {
                    "method": method,
                    "precision": precision,
                    "mean_final_acc": statistics.fmean(accs),
                    "diff_vs_fp32": diff,
                    "fp32_seed_spread": spread,
                    "tolerance": tol,
                    "matches_fp32": None if diff is None else abs(diff) <= tol,
                    "paired_diff_ci95": None if lo is None else [lo, hi],
                    "equivalent_1pp": None if lo is None else (lo >= -0.01 and hi <= 0.01),
                    "mean_train_wall_s": statistics.fmean(walls),
                }
            )
            print(summary[-1], flush=True)
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    out = {
        "what": __doc__.splitlines()[0],
        "command": "python scripts/precision_check.py " + " ".join(argv),
        "git_sha": sha,
        "environment": environment(),
        "loadavg_end": os.getloadavg(),
        "settings": vars(a),
        "runs": rows,
        "summary": summary,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
