"""The chaos soak (issue 15): ``tests/methods/chaos.py``'s run over many seeds; each must end as
the uninterrupted run (every step trained exactly once, in order, same losses on both sides).

    python scripts/chaos_soak.py --seeds 20 --out results/chaos/soak.json

Writes one JSON: per seed the faults injected (with times), whether each kill landed during a
checkpoint write, the wall time, and the verdict; plus the machine and the git state; and a
Markdown table beside it (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hierbench.data.catalog import default_root  # noqa: E402
from hierbench.methods import run  # noqa: E402
from hierbench.spec.provenance import provenance  # noqa: E402
from tests.methods.chaos import chaos_config, check_against, run_chaos  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--events", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "chaos" / "soak.json")
    ap.add_argument("--note", default="", help="how the soak was run (e.g. under quiet.sh)")
    args = ap.parse_args()
    t_soak = time.monotonic()
    env = provenance()  # at the start: the load average before the soak
    cfg = chaos_config(default_root("cifar10"), epochs=args.epochs)
    reference = run(cfg.replace(checkpoint_every=0), progress=False)
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with tempfile.TemporaryDirectory(prefix="hierbench-chaos-") as tmp:
            t0 = time.monotonic()
            try:
                res = run_chaos(cfg, Path(tmp), seed, events=args.events)
                problems = check_against(res.pop("record"), reference)
            except AssertionError as exc:
                res = {"seed": seed, "wall_s": time.monotonic() - t0}
                problems = [str(exc)[-4000:]]
        res["passed"] = not problems
        res["problems"] = problems
        runs.append(res)
        print(
            f"seed {seed}: {'pass' if not problems else 'FAIL'} "
            f"({res['wall_s']:.0f} s, {len(res.get('events', []))} faults)",
            flush=True,
        )
    kills = [
        e
        for r in runs
        for e in r.get("events", [])
        if e["action"].startswith("kill") and not e.get("after_the_run")
    ]
    out = {
        "command": "python scripts/chaos_soak.py " + " ".join(sys.argv[1:]),
        "config": cfg.to_dict(),
        "seeds": len(runs),
        "passed": sum(r["passed"] for r in runs),
        "kills": len(kills),
        "kills_mid_checkpoint_write": sum(1 for e in kills if e.get("mid_write")),
        "kills_before_first_edge_checkpoint": sum(
            1 for e in kills if e.get("before_first_checkpoint") or e.get("first")
        ),
        "hostile_connections": sum(
            1 for r in runs for e in r.get("events", []) if not e["action"].startswith("kill")
        ),
        "machine": {
            "cpu": subprocess.run(["lscpu"], capture_output=True, text=True).stdout,
            "python": platform.python_version(),
        },
        "environment": env,
        "note": args.note,
        "wall_s": round(time.monotonic() - t_soak, 1),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out))
    print(f"{out['passed']}/{out['seeds']} seeds passed -> {args.out}")
    return 0 if out["passed"] == out["seeds"] else 1


def markdown(out: dict) -> str:
    """The soak as a small table: one row per seed, the totals, the machine and the command."""
    env = out["environment"]
    cfg = out["config"]
    lines = [
        f"# Chaos soak: {out['passed']} of {out['seeds']} seeds passed",
        "",
        f"- command: `{out['command']}`" + (f" ({out['note']})" if out["note"] else ""),
        f"- git: {env['git_sha']}" + (" (dirty)" if env["git_dirty"] else ""),
        f"- CPU: {env['cpu_model']}, {env['cpu_count']} cores; load average at the start "
        f"{env['load_average'][0]}",
        f"- wall time: {out['wall_s']:.0f} s in all (the uninterrupted reference run included)",
        f"- run: {cfg['method']} {cfg['model']} cut {cfg['cut']}, codec {cfg['codec']}, "
        f"{cfg['epochs']} epochs x {cfg['batches_per_epoch']} batches of {cfg['batch_size']}, "
        f"checkpoints every {cfg['checkpoint_every']} steps, link {cfg['link']}",
        f"- faults: {out['kills']} SIGKILLs ({out['kills_mid_checkpoint_write']} during a "
        f"checkpoint write, {out['kills_before_first_edge_checkpoint']} before the edge's first "
        f"checkpoint), {out['hostile_connections']} hostile connections",
        "",
        "| seed | verdict | wall s | faults (in order) |",
        "|---|---|---|---|",
    ]
    for r in out["runs"]:
        faults = []
        for e in r.get("events", []):
            name = e["action"]
            if e.get("mid_write"):
                name += " (mid-write)"
            if e.get("before_first_checkpoint") or e.get("first"):
                name += " (before edge.pt)"
            if e.get("after_the_run"):
                name += " (came after the run was done: no restart)"
            faults.append(name)
        verdict = "pass" if r["passed"] else "FAIL: " + r["problems"][0][:120].replace("|", "/")
        lines.append(f"| {r['seed']} | {verdict} | {r['wall_s']:.0f} | {', '.join(faults)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
