"""Where a benchmark run's JSON goes, and what the machine was doing (no torch here).

Every run keeps its own file, never overwritten::

    results/bench/<UTC start, YYYY-MM-DDTHHMMSSZ>_<cpu slug>_<git sha>[-dirty]_<suite>.json

e.g. ``2026-11-28T101500Z_amd-epyc_941824f_quant.json``. ``pytest benchmarks/... --bench-save
SUITE`` (``benchmarks/conftest.py``; ``make bench``) names the file at the start of the session and
creates it exclusively, so a second run can never replace it (it gets its own second). The JSON's
``machine_info["hierbench"]`` repeats what the name says (``git_sha``, ``git_dirty``,
``cpu_model``, ``started_utc``) and adds the load average at the start and the end, so a reader
can tell a quiet run from a loaded one. ``tests/test_readme_numbers.py`` holds every file the
README cites to its name.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from hierbench.spec import provenance

REPO = Path(__file__).resolve().parents[1]
#: Where ``--bench-save`` writes (``HIERBENCH_BENCH_DIR`` overrides it, e.g. for a trial run).
BENCH_DIR = Path(os.environ.get("HIERBENCH_BENCH_DIR", REPO / "results" / "bench"))

#: ``<date>T<time>Z_<cpu>_<sha>[-dirty]_<suite>.json``
NAME_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{6})Z_(?P<cpu>[a-z0-9]+(?:-[a-z0-9]+)*)_"
    r"(?P<sha>[0-9a-f]{7,40})(?P<dirty>-dirty)?_(?P<suite>[a-z0-9]+(?:-[a-z0-9]+)*)\.json$"
)
_SUITE_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# Words in /proc/cpuinfo's model name that say nothing about the CPU.
_NOISE = {"r", "tm", "cpu", "processor", "core", "with", "radeon", "graphics"}


def cpu_slug(model: str) -> str:
    """A file-name form of a CPU model: ``AMD EPYC`` -> ``amd-epyc``, ``Intel(R) Xeon(R)
    Platinum 8480+ @ 2.00GHz`` -> ``intel-xeon-platinum-8480``; at most 40 characters."""
    model = model.split("@", 1)[0].lower()
    words = [w for w in re.split(r"[^a-z0-9]+", model) if w and w not in _NOISE]
    slug = "-".join(words)[:40].strip("-")
    return slug or "unknown-cpu"


def git_state(repo: Path = REPO) -> tuple[str, bool]:
    """(short SHA of HEAD, whether tracked files differ from it outside ``results/``), from
    :func:`hierbench.spec.provenance.git_state` (the run records' definition); ("unknown", True)
    outside git."""
    state = provenance.git_state(repo)
    if state["git_sha"] == "unknown":
        return "unknown", True
    return state["git_sha"][:7], bool(state["git_dirty"])


#: /proc/cpuinfo flags that tell CPU families apart where the model name does not (a VM may
#: report only "Intel(R) Xeon(R) Processor"): vector widths and extensions the kernels use.
FAMILY_FLAGS = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vbmi",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "vpclmulqdq",
)


def cpu_family() -> dict:
    """Vendor, family / model / stepping numbers and :data:`FAMILY_FLAGS` of the first CPU in
    /proc/cpuinfo (empty where there is none)."""
    info: dict = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("vendor_id", "cpu family", "model", "stepping"):
            info[key.replace(" ", "_")] = value
        elif key == "flags":
            have = set(value.split())
            info["flags"] = [f for f in FAMILY_FLAGS if f in have]
    return info


def load() -> dict:
    """The load average now: ``os.getloadavg()`` and the raw ``/proc/loadavg`` line."""
    try:
        raw = Path("/proc/loadavg").read_text().strip()
    except OSError:
        raw = None
    try:
        avg = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        avg = None
    return {"loadavg": avg, "proc_loadavg": raw, "nproc": os.cpu_count()}


def json_name(started: datetime, cpu: str, sha: str, dirty: bool, suite: str) -> str:
    """The file name of one run's JSON (see the module docstring)."""
    if not _SUITE_RE.match(suite):
        raise ValueError(f"suite {suite!r}: lower-case letters, digits and single '-' only")
    stamp = started.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    return f"{stamp}_{cpu_slug(cpu)}_{sha}{'-dirty' if dirty else ''}_{suite}.json"


def reserve(directory: Path, name: str) -> Path:
    """Create ``directory/name`` empty, failing if it exists (the run fills it at the end)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise FileExistsError(f"{path} exists: benchmark JSON is never overwritten") from None
    os.close(fd)
    return path


def now() -> datetime:
    return datetime.now(UTC)
