#!/usr/bin/env python
"""Long fuzz run of hierbench.codec's decoder, by hand.

    python scripts/fuzz_codec.py --iterations 10000000 --seed 7

Same engine and property as ``tests/test_codec_fuzz.py`` (seeded mutations of valid frames; each
decode returns a consistent tensor or raises CodecError, nothing else). Prints progress and a
summary; exits 1 if any mutation misbehaved, printing the seed, iteration and frame (hex) of the
first ones so they can be replayed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_codec_fuzz import fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--progress", type=int, default=100_000, help="report every N")
    args = parser.parse_args(argv)

    start = time.perf_counter()

    def progress(done: int, report) -> None:
        rate = done / (time.perf_counter() - start)
        print(
            f"[{done:>12,}/{args.iterations:,}] {rate:,.0f}/s  decoded {report.decoded:,}  "
            f"rejected {sum(report.rejected.values()):,}  failures {len(report.failures)}",
            flush=True,
        )

    print(f"fuzzing hierbench.codec: {args.iterations:,} mutations, seed {args.seed}", flush=True)
    report = fuzz(args.iterations, args.seed, progress=(max(1, args.progress), progress))
    print(report.summary())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
