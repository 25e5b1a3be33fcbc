"""Print a pytest-benchmark JSON as a short table: op, shape, device, median, GB/s, roofline
(ratio of medians, and paired: median of back-to-back op/copy ratios), time relative to
torch.quantize_per_tensor (ratio of medians, and paired), speed-up over the eager reference.

Usage: python scripts/bench_table.py results/gpu/<file>.json [--markdown]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: str):
    data = json.loads(Path(path).read_text())
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        name = b["name"].split("[", 1)
        params = b.get("params") or {}
        op = name[0].removeprefix("test_")
        if "bits" in params:
            op += f" {params['bits']}b"
        if "dtype" in params:
            op += f" {params['dtype']}"
        if info.get("cpu_kernel"):
            op += f" ({info['cpu_kernel']})"
        yield (
            op,
            params.get("shape_name", "x".join(map(str, info.get("shape", [])))),
            params.get("device", ""),
            b["stats"]["median"] * 1e3,
            info.get("gbps", float("nan")),
            info.get("roofline_ratio", float("nan")),
            info.get("roofline_ratio_paired"),
            info.get("time_ratio_vs_quantize_per_tensor"),
            info.get("time_ratio_vs_quantize_per_tensor_paired"),
            info.get("speedup_vs_reference"),
        )


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    md = "--markdown" in sys.argv
    head = (
        "op",
        "shape",
        "dev",
        "median ms",
        "GB/s",
        "roofline",
        "paired",
        "vs qpt",
        "paired",
        "vs ref",
    )
    fmt = (
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |"
        if md
        else "{:<34} {:<24} {:<5} {:>10} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8}"
    )
    print(fmt.format(*head))
    if md:
        print("|" + "---|" * len(head))
    for op, shape, dev, ms, gbps, roof, paired, qpt, qpt_paired, ref in rows(sys.argv[1]):
        print(
            fmt.format(
                op,
                shape,
                dev,
                f"{ms:.3f}",
                f"{gbps:.1f}",
                f"{roof:.2f}",
                "" if paired is None else f"{paired:.2f}",
                "" if qpt is None else f"{qpt:.2f}x",
                "" if qpt_paired is None else f"{qpt_paired:.2f}x",
                "" if ref is None else f"{ref:.0f}x",
            )
        )


if __name__ == "__main__":
    main()
