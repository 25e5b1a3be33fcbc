"""Build hierbench's wheel out of tree, time it, and check what it holds (``make wheel``).

    python scripts/build_wheel.py [--out dist] [--record results/wheel/FILE.json]

The sources the build needs (setup.py, pyproject.toml, README.md, LICENSE, csrc/, hierbench/:
the files git tracks or would track, so no locally built ``_C*.so`` rides along) are copied to a
temporary folder and built there with ``pip wheel --no-build-isolation --no-deps`` against the
torch of the Python running this script; the checkout gets the wheel in ``--out`` and nothing
else (no ``build/``, no ``*.egg-info``). C++ only unless ``HIERBENCH_CUDA=1`` is set (setup.py:
CUDA is opt-in for wheels).

Then the wheel is checked, and the script fails naming what is wrong:
- ``Requires-Dist``: ``torch==<the version built against>``, numpy and zstandard, and nothing
  else outside an extra (pandas, torchvision, matplotlib, pillow only behind ``extra == ...``);
- ``LICENSE`` in the ``.dist-info``, ``hierbench/py.typed``;
- ``hierbench/_C*.so`` without ``.debug_*`` sections (``readelf -S``);
- no ``build/`` or ``*.egg-info`` appeared in the checkout.

It prints the build's wall time, the wheel's and ``_C``'s sizes, and with ``--record`` writes
them as JSON with the CPU model, core count, load average before and after, the commit and torch.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # hierbench.spec is torch-free: the checkout's own, not an install
from hierbench.spec import provenance  # noqa: E402

SOURCES = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "csrc", "hierbench")
CORE = {"torch", "numpy", "zstandard"}
BENCH_ONLY = {"pandas", "torchvision", "matplotlib", "pillow"}


class WheelError(Exception):
    """The wheel does not hold what it must."""


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def copy_sources(dest: Path) -> int:
    """Copies the build's sources (tracked or not ignored) to ``dest``; returns the file count."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *SOURCES)
    n = 0
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree but still in the index
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
        n += 1
    return n


def requires_dist(metadata: str) -> list[str]:
    return email.parser.Parser().parsestr(metadata).get_all("Requires-Dist") or []


def check_requirements(reqs: list[str], torch_version: str) -> None:
    """Core requirements exactly torch==``torch_version``, numpy, zstandard; the rest in extras."""
    core = [r for r in reqs if "extra ==" not in r]
    names = {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower(): r for r in core}
    if set(names) != CORE:
        raise WheelError(f"core Requires-Dist must be exactly {sorted(CORE)}, got {core}")
    pin = f"torch=={torch_version}"
    if names["torch"].replace(" ", "") != pin:
        raise WheelError(f"Requires-Dist {names['torch']!r}: expected {pin!r}")
    extras = {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in reqs if "extra ==" in r}
    if not extras >= BENCH_ONLY:
        raise WheelError(f"the bench extra lacks {sorted(BENCH_ONLY - extras)}")


def debug_sections(so: Path) -> list[str]:
    """Names of the ELF ``.debug_*`` / ``.zdebug_*`` sections of ``so`` (``readelf -S -W``)."""
    out = subprocess.run(
        ["readelf", "-S", "-W", str(so)], capture_output=True, text=True, check=True
    ).stdout
    return sorted(set(re.findall(r"\s(\.z?debug_\w+)\s", out)))


def check_wheel(wheel: Path, torch_version: str, unpack: Path) -> dict:
    """Raises :class:`WheelError` on the first problem; returns sizes and names."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise WheelError("no .dist-info/METADATA")
        check_requirements(requires_dist(zf.read(meta).decode()), torch_version)
        if not any(re.search(r"\.dist-info/(licenses/)?LICENSE$", n) for n in names):
            raise WheelError("no LICENSE in the .dist-info")
        if "hierbench/py.typed" not in names:
            raise WheelError("no hierbench/py.typed")
        sos = [n for n in names if re.fullmatch(r"hierbench/_C[^/]*\.so", n)]
        if len(sos) != 1:
            raise WheelError(f"expected one hierbench/_C*.so, found {sos}")
        so = Path(zf.extract(sos[0], unpack))
    debug = debug_sections(so)
    if debug:
        raise WheelError(f"{sos[0]} carries debug sections {debug}: not stripped")
    return {"files": len(names), "so": sos[0], "so_bytes": so.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheel goes")
    ap.add_argument("--record", type=Path, help="also write the measurements here (JSON)")
    ap.add_argument("--keep-temp", action="store_true", help="keep the temporary build folder")
    args = ap.parse_args(argv)

    import torch

    torch_version = torch.__version__.split("+")[0]
    cuda = os.environ.get("HIERBENCH_CUDA", "auto")
    leftovers = [p for p in ("build", "hierbench.egg-info") if (ROOT / p).exists()]
    tmp = Path(tempfile.mkdtemp(prefix="hierbench-wheel-"))
    try:
        src, dist = tmp / "src", tmp / "dist"
        n = copy_sources(src)
        print(f"build_wheel: {n} files -> {src} (HIERBENCH_CUDA={cuda}, torch {torch_version})")
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps"]
        res = subprocess.run([*cmd, "-w", str(dist), str(src)], cwd=tmp)
        build_s = time.perf_counter() - t0
        load1 = os.getloadavg()
        if res.returncode != 0:
            print(f"build_wheel: pip wheel failed (rc {res.returncode})", file=sys.stderr)
            return 1
        (wheel,) = dist.glob("hierbench-*.whl")
        info = check_wheel(wheel, torch_version, tmp / "unpacked")
        new = [p for p in ("build", "hierbench.egg-info") if (ROOT / p).exists()]
        if set(new) - set(leftovers):
            raise WheelError(f"the build left {sorted(set(new) - set(leftovers))} in the checkout")
        args.out.mkdir(parents=True, exist_ok=True)
        final = args.out / wheel.name
        shutil.copy2(wheel, final)
    except WheelError as exc:
        print(f"build_wheel: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep_temp:
            print(f"build_wheel: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    wheel_bytes = final.stat().st_size
    print(
        f"build_wheel: {final.relative_to(ROOT) if final.is_relative_to(ROOT) else final}\n"
        f"  built in {build_s:.1f} s (pip wheel, wall clock; {os.cpu_count()} cores, load "
        f"{load0[0]:.2f} -> {load1[0]:.2f})\n"
        f"  wheel {wheel_bytes / 1e6:.2f} MB, {info['so']} {info['so_bytes'] / 1e6:.2f} MB "
        f"(no debug sections), {info['files']} files; Requires-Dist torch=={torch_version}"
    )
    if args.record:
        git = provenance.git_state(ROOT)  # the run records' definition of the commit and "dirty"
        record = {
            "command": "python scripts/build_wheel.py " + " ".join(argv or sys.argv[1:]),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": git["git_sha"][:7] + ("-dirty" if git["git_dirty"] else ""),
            "cpu": provenance.cpu_model(),
            "cores": os.cpu_count(),
            "loadavg_1min_start": round(load0[0], 2),
            "loadavg_1min_end": round(load1[0], 2),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "hierbench_cuda": cuda,
            "build_s": round(build_s, 1),
            "wheel": final.name,
            "wheel_bytes": wheel_bytes,
            "so_bytes": info["so_bytes"],
        }
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=2) + "\n")
        print(f"build_wheel: wrote {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
