"""Measured comparison of the three methods: same model, cut, data, seed; two processes.

Runs cloud-only, split learning and hierarchical training one after the other, each as two
processes (edge here, cloud in a child) pinned to one core each, and writes one run record per
method plus a summary table:

    python scripts/compare_methods.py --link 3g --batches 200 --out results/methods/3g

The run records hold every per-batch timestamp; the summary is regenerated from them with
``--summarize-only``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

METHODS = ("cloud_only", "split", "hierarchical")


def summarize(out: Path, command: str) -> str:
    rows = []
    for m in METHODS:
        path = out / f"{m}.json"
        if not path.exists():
            continue
        rec = json.loads(path.read_text())
        t = rec["totals"]
        last = rec["epochs"][-1]
        rows.append((m, rec, t, last))
    base = {m: t["train_wall_s"] for m, _, t, _ in rows}
    cfg = rows[0][1]["config"] if rows else {}
    env = rows[0][1]["environment"] if rows else {}
    lines = [
        f"# Measured: cloud-only vs split learning vs hierarchical, link `{cfg.get('link')}`",
        "",
        f"Command: `{command}`",
        "",
        f"{cfg.get('model')} (stem {cfg.get('stem')}), cut `{cfg.get('cut')}`, exit head "
        f"`{cfg.get('exit_head')}`, real {cfg.get('dataset')} (JPEG copy), batch "
        f"{cfg.get('batch_size')}, {rows[0][2]['batches'] if rows else '?'} batches, seed "
        f"{cfg.get('seed')}; activations `{cfg.get('codec')}`, split-learning gradients "
        f"`{cfg.get('grad_codec')}`. Two processes (edge, cloud) pinned to one core each, one "
        f"torch thread each, loopback TCP through the transfer engine's token bucket; torch "
        f"{env.get('torch')}, {env.get('time_utc')}.",
        "",
        "Conventions: every batch is uploaded when used (online setting); bytes are whole "
        "messages (32-byte header, 1 byte per label, codec frame or raw uint8 pixels); training "
        "wall clock runs from the edge's first step to the cloud's last, and excludes the "
        "evaluation pass at the end. The cloud here is this same CPU (one core), not a GPU.",
        "",
        "| method | training wall s | vs cloud-only | s/batch | MB up | MB down | edge busy s "
        "| cloud busy s | final acc | exit acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, _rec, t, last in rows:
        red = ""
        if "cloud_only" in base and m != "cloud_only":
            red = f"{100 * (1 - t['train_wall_s'] / base['cloud_only']):+.1f} %"
        exit_acc = last.get("exit_acc")
        lines.append(
            f"| {m} | {t['train_wall_s']:.1f} | {red} | {t['train_wall_s'] / t['batches']:.3f} "
            f"| {t['bytes_up'] / 1e6:.2f} | {t['bytes_down'] / 1e6:.2f} | {t['edge_busy_s']:.1f} "
            f"| {t['cloud_busy_s']:.1f} | {last.get('final_acc', float('nan')):.3f} "
            f"| {'' if exit_acc is None else f'{exit_acc:.3f}'} |"
        )
    lines += [
        "",
        f"Accuracy: {rows[0][1]['epochs'][-1].get('eval_samples', '?') if rows else '?'} test "
        "images after this short budget; it shows the runs trained, not the methods' final "
        "accuracy (the CIFAR-10 JPEG copy sits slightly below published figures).",
        "",
    ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--link", default="3g")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--stem", default="imagenet")
    p.add_argument("--cut", default="layer3")
    p.add_argument("--codec", default="q8")
    p.add_argument("--grad-codec", default="q8")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--summarize-only", action="store_true")
    args = p.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        from hierbench.methods import RunConfig, write_record
        from hierbench.methods.runner import run_two_processes

        for m in args.methods:
            cfg = RunConfig(
                method=m,
                model=args.model,
                stem=args.stem,
                cut=args.cut,
                codec=args.codec,
                grad_codec=args.grad_codec,
                link=args.link,
                batches_per_epoch=args.batches,
                epochs=1,
                eval="end",
                eval_samples=1000,
            )
            t0 = time.perf_counter()
            print(f"== {m} ({args.batches} batches, link {args.link})", flush=True)
            rec = run_two_processes(cfg, cpus=(0, 1), progress=True)
            rec["command"] = command
            write_record(rec, args.out / f"{m}.json")
            print(
                f"   {m}: {rec['totals']['train_wall_s']:.1f} s training "
                f"({time.perf_counter() - t0:.0f} s in all)",
                flush=True,
            )
    print(summarize(args.out, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
