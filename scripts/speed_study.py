"""Training-step speed per model and precision setting on this CPU (issue 14, part 1).

For each model and setting: the whole model's training step (forward, cross-entropy, backward,
SGD step with momentum and weight decay) on a random batch, ``--warmup`` untimed steps, then the
median of ``--steps`` timed ones. Settings: ``fp32``; ``bf16`` (``torch.autocast("cpu",
torch.bfloat16)`` around forward and loss, fp32 master weights); ``cl`` (channels_last model and
input, fp32); ``bf16-cl`` (both); optionally ``compile`` (``torch.compile`` of the fp32 model).

With ``--profile``, torch.profiler's top operators of a few steps of the ImageNet-stem ResNet-18
per setting (self CPU time), to show where its time goes.

    python scripts/speed_study.py --out results/speed/speed-<cpu>-<sha>.json [--profile]
    python scripts/speed_study.py --summarize results/speed/*.json > results/speed/README.md

The JSON holds every step's time, the medians, and machine info (CPU model, threads, torch,
git SHA, load average before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hierbench import models
from hierbench.spec.provenance import cpu_model

MODELS = {
    "resnet18-imagenet": ("resnet18", "imagenet"),
    "resnet18-cifar": ("resnet18", "cifar"),
    "vgg16": ("vgg16", "cifar"),
}
SETTINGS = ("fp32", "bf16", "cl", "bf16-cl")  # also: "compile" (fp32, torch.compile)


def _cpuinfo(key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> list[str]:
    flags = (_cpuinfo("flags") or "").split()
    return sorted(f for f in flags if f.startswith(("avx512", "amx")))


def git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_step(name: str, setting: str, batch: int, size: int):
    arch, stem = MODELS[name]
    torch.manual_seed(0)
    model = models.build_model(arch, 10, stem=stem, input_size=size)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    if setting in ("cl", "bf16-cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    bf16 = setting in ("bf16", "bf16-cl")
    fwd = torch.compile(model) if setting == "compile" else model

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(fwd(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def measure(name, settings, batch, size, warmup, steps) -> dict[str, list[float]]:
    """Per setting, ``steps`` step times, taken round-robin (one step of each setting in turn)
    so that every setting sees the same machine state; ratios to fp32 are paired per round."""
    fns = {st: make_step(name, st, batch, size) for st in settings}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {st: [] for st in settings}
    for _ in range(steps):
        for st, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[st].append(time.perf_counter() - t0)
    return times


def profile(
    name, setting, batch, size, steps: int = 5, top: int = 15, by_shape: bool = False
) -> list[dict]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    step = make_step(name, setting, batch, size)
    for _ in range(3):
        step()
    with tprofile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as prof:
        for _ in range(steps):
            step()
    rows = []
    avgs = prof.key_averages(group_by_input_shape=by_shape)
    total = sum(e.self_cpu_time_total for e in avgs)
    for e in sorted(avgs, key=lambda e: -e.self_cpu_time_total)[:top]:
        rows.append(
            {
                "op": e.key + (f" {e.input_shapes[:2]}" if by_shape else ""),
                "calls_per_step": e.count / steps,
                "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
                "self_share": e.self_cpu_time_total / total if total else None,
            }
        )
    return rows


def summarize(paths: list[str]) -> str:
    """A Markdown table of one or more result files (``--summarize``); other JSON files in the
    same folder (``precision_check.py``'s, which have no ``machine``) are skipped."""
    lines = []
    for path in paths:
        d = json.loads(Path(path).read_text())
        if "machine" not in d:
            continue
        m = d["machine"]
        lines += [
            f"### {Path(path).name}",
            "",
            f"{m['cpu_model']} ({', '.join(m['cpu_flags']) or 'no AVX-512/AMX flags'}), "
            f"{m['threads']} threads, torch {m['torch']}, git {m['git_sha']}, "
            f"OMP_WAIT_POLICY={m.get('omp_wait_policy')}, batch {d['batch']}, "
            f"{d['input_size']}x{d['input_size']}, load average {m['loadavg_before'][0]:.1f} -> "
            f"{m['loadavg_after'][0]:.1f}. {d.get('note', '')}",
            "",
            "| model | setting | median step (ms) | paired ratio to fp32 |",
            "|---|---|---|---|",
        ]
        for r in d["results"]:
            ratio = r.get("paired_ratio_to_fp32")
            lines.append(
                f"| {r['model']} | {r['setting']} | {1000 * r['median_s']:.0f} | "
                f"{'—' if ratio is None else f'{ratio:.2f}'} |"
            )
        for key, rows in d.get("profile", {}).items():
            lines += ["", f"torch.profiler, {key}, top operators by self CPU time per step:", ""]
            lines += ["| op | calls/step | self ms/step | share |", "|---|---|---|---|"]
            for r in rows:
                lines.append(
                    f"| {r['op']} | {r['calls_per_step']:.0f} | {r['self_ms_per_step']:.1f} | "
                    f"{100 * r['self_share']:.1f} % |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    if argv is None and sys.argv[1:2] == ["--summarize"]:
        print(summarize(sys.argv[2:]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--profile-settings", default="fp32,bf16-cl", help="settings profiled with --profile"
    )
    p.add_argument("--by-shape", action="store_true", help="profile rows per op and input shape")
    p.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = {
        "what": "median training step (forward+loss+backward+SGD step), whole model, random "
        "batch; settings timed round-robin, one step each in turn; paired_ratio_to_fp32 = "
        "median over rounds of (setting's step / fp32's step in the same round)",
        "command": "python scripts/speed_study.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_flags": cpu_flags(),
            "threads": a.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "mkldnn_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
            "git_sha": git_sha(),
            "loadavg_before": os.getloadavg(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "note": a.note,
        "batch": a.batch,
        "input_size": a.size,
        "warmup": a.warmup,
        "results": [],
    }
    settings = a.settings.split(",")
    for name in a.models.split(","):
        times = measure(name, settings, a.batch, a.size, a.warmup, a.steps)
        for setting in settings:
            med = statistics.median(times[setting])
            ratio = None
            if "fp32" in times:
                ratio = statistics.median(
                    t / f for t, f in zip(times[setting], times["fp32"], strict=True)
                )
            print(
                f"{name:20s} {setting:8s} median {med * 1000:8.1f} ms  paired ratio to fp32 "
                f"{ratio if ratio is None else round(ratio, 3)}",
                flush=True,
            )
            out["results"].append(
                {
                    "model": name,
                    "setting": setting,
                    "median_s": med,
                    "paired_ratio_to_fp32": ratio,
                    "step_s": times[setting],
                }
            )
    if a.profile:
        out["profile"] = {}
        for setting in a.profile_settings.split(","):
            rows = profile("resnet18-imagenet", setting, a.batch, a.size, by_shape=a.by_shape)
            out["profile"][f"resnet18-imagenet/{setting}"] = rows
            print(f"-- profile resnet18-imagenet {setting}")
            for r in rows:
                print(
                    f"  {r['op'][:90]:90s} {r['calls_per_step']:6.1f}/step "
                    f"{r['self_ms_per_step']:8.2f} ms {100 * r['self_share']:5.1f} %"
                )
    out["machine"]["loadavg_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
