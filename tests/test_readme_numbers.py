"""Every measured number in the README names the committed file it comes from.

The generated results block (between ``hierbench.report.readme``'s BEGIN / END markers) is the
report's output for the committed results folders: ``tests/test_reproduce.py::
test_readme_results_block_is_generated_from_committed_results`` regenerates it and fails when it is
stale. Everything else in the README is hand-written, and is held here to these rules:

* A *unit* is a paragraph, a list item, or a table (a table also counts the paragraph just before
  it, its caption). Fenced code and inline code are not scanned for numbers.
* A unit that holds a *measured number* — a number with a unit of time, rate, ratio or share
  (``ms``, ``s``, ``min``, ``MB/s``, ``GB/s``, ``Mbit/s``, ``×``, ``%`` …) or a bare decimal such as
  ``0.92`` — must link its source: a Markdown link ``[…](results/…)`` to a committed file or folder.
  (A path merely mentioned, say in a command, is not a source.)
* Every ``results/...`` path the README names (linked or not) must be tracked by git (a file, or a
  folder holding tracked files); usage placeholders such as ``results/P`` excepted.
* "N runs" needs N sources: N linked files, or a linked folder holding at least N tracked files.
  (The README once quoted "twelve runs … 0.82–0.97×" from runs that were never committed.)
* A cited benchmark JSON (``results/bench/*.json``) must be named as ``benchmarks/record.py``
  names them, agree with its own ``machine_info`` (SHA, dirty flag, CPU, date), come from a clean
  tree, and the unit must state the command (``pytest benchmarks/...`` or ``make bench``) and name
  every benchmark file that command ran.
* Numbers that are not measurements (the 3g link's definition, published figures, targets) are
  listed in ``NOT_MEASURED``, each of which must still occur in the README.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import record
from hierbench.report.readme import BEGIN, END

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Phrases with numbers that are not measurements, removed before scanning.
NOT_MEASURED = (
    "1 Mbit/s up, 4 down, 75 ms",  # the 3g link preset (hierbench/spec/links.py)
    "(paper: 61 %)",  # the published figure
    "target ≥ 2 GB/s",  # issue targets
    "target: ≤ 1.2×",
    "target ≥ 0.85",
)

_UNIT = r"(?:ms|µs|us|ns|s|min|h|GB/s|MB/s|kB/s|Gbit/s|Mbit/s|kbit/s|×|%|pp)"
_NUM = r"[−+-]?\d[\d,]*(?:\.\d+)?"
MEASURED = re.compile(
    rf"(?<![\w.]){_NUM}(?:\s*[–-]\s*{_NUM})?\s*{_UNIT}(?![\w/])"  # 11.6 ms, 0.82–0.97×, 4.2 %
    r"|(?<![\w.])\d+\.\d+(?![\w.])"  # a bare decimal: 0.92, 1.01
)
#: A source: a Markdown link to a committed file or folder under results/.
SOURCE = re.compile(r"\]\((results/[^)\s#]+)\)")
#: Any path under results/ named in the text (links, code, prose): it must be committed.
MENTION = re.compile(r"(?<![\w/])results/[\w.+/-]*[\w/]")
COMMAND = re.compile(r"pytest\s+['\"]?benchmarks/|make bench")
BENCH_FILE = re.compile(r"benchmarks/bench_\w+\.py")
_WORDS = "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
NUMBER_WORDS = {w: i for i, w in enumerate(_WORDS.split(), start=2)}
RUNS = re.compile(rf"(?<![\w-])(\d+|{'|'.join(NUMBER_WORDS)})\s+runs\b", re.IGNORECASE)


def tracked_files() -> set[str]:
    """Paths git tracks (the committed tree); the files on disk where git is unavailable."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        return set(out.decode().split("\0")) - {""}
    except (OSError, subprocess.CalledProcessError):
        return {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file()}


def hand_written(text: str) -> str:
    """The README without its generated block (markers must be there, once each)."""
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "README results markers missing"
    head, rest = text.split(BEGIN, 1)
    return head + rest.split(END, 1)[1]


def units(text: str) -> list[tuple[str, str]]:
    """(unit text, caption) for each paragraph, list item and table; fenced code dropped."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)
    blocks: list[list[str]] = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.strip("\n").splitlines()
        current: list[str] = []
        for line in lines:
            starts_item = re.match(r"\s*(?:[-*]|\d+\.)\s", line)
            if current and (starts_item or line.startswith("|") != current[-1].startswith("|")):
                blocks.append(current)
                current = []
            current.append(line)
        if current:
            blocks.append(current)
    out, previous = [], ""
    for block in blocks:
        body = "\n".join(block)
        caption = previous if block[0].startswith("|") else ""
        out.append((body, caption))
        previous = body
    return out


def measured_numbers(unit: str) -> list[str]:
    plain = re.sub(r"`[^`]*`", " ", unit)  # inline code: commands, paths, settings
    plain = re.sub(r"\]\([^)]*\)", "]", plain)  # link targets
    for phrase in NOT_MEASURED:
        plain = plain.replace(phrase, " ")
    return [m.group(0) for m in MEASURED.finditer(plain)]


def _bench_file_problems(path: str, unit: str) -> list[str]:
    name = Path(path).name
    m = record.NAME_RE.match(name)
    if not m:
        return [f"{path}: not named <UTC start>_<cpu>_<sha>[-dirty]_<suite>.json"]
    problems = []
    info = json.loads((ROOT / path).read_text())["machine_info"]["hierbench"]
    sha = info["git_sha"].removesuffix("-dirty")
    dirty = info.get("git_dirty", info["git_sha"].endswith("-dirty"))
    day = (info.get("started_utc") or "")[:10]
    if not sha.startswith(m["sha"]) and not m["sha"].startswith(sha):
        problems.append(f"{path}: name says commit {m['sha']}, machine_info {sha}")
    if bool(m["dirty"]) != dirty:
        problems.append(f"{path}: the name's dirty flag disagrees with machine_info")
    if dirty:
        problems.append(f"{path}: measured on a dirty tree; the README quotes clean runs only")
    if record.cpu_slug(info["cpu_model"]) != m["cpu"]:
        problems.append(f"{path}: name's CPU {m['cpu']!r}, machine_info {info['cpu_model']!r}")
    if day and day != m["date"]:
        problems.append(f"{path}: name's date {m['date']}, started {day}")
    if not COMMAND.search(unit):
        problems.append(f"{path}: cited without the command that made it")
    for bench in BENCH_FILE.findall(info.get("command", "")):
        if bench not in unit:
            problems.append(f"{path}: made by {bench}, which the text beside it does not name")
    return problems


def problems(text: str, tracked: set[str]) -> list[str]:
    """What is wrong with the hand-written numbers of README ``text`` (empty: nothing)."""
    folders = {p for f in tracked for p in _parents(f)}

    def sources_in(path: str) -> int:  # tracked files a path stands for (0: not committed)
        if path in tracked:
            return 1
        prefix = path.rstrip("/") + "/"
        return sum(1 for f in tracked if f.startswith(prefix)) if prefix in folders else 0

    found = []
    for unit, caption in units(hand_written(text)):
        where = unit.strip().splitlines()[0][:90]
        both = unit + "\n" + caption
        for path in sorted(set(MENTION.findall(unit))):
            if not _placeholder(path) and not sources_in(path):
                found.append(f"{path}: named but not committed: {where!r}")
        numbers = measured_numbers(unit)
        linked = sorted(set(SOURCE.findall(both)))
        if numbers and not linked:
            found.append(f"{numbers[:4]} with no linked results/ source: {where!r}")
        for path in linked:
            if path.startswith("results/bench/") and path.endswith(".json") and sources_in(path):
                found += _bench_file_problems(path, both)
        n_sources = sum(sources_in(p) for p in linked)
        for m in RUNS.finditer(unit):
            n = int(m.group(1)) if m.group(1).isdigit() else NUMBER_WORDS[m.group(1).lower()]
            if n_sources < n:
                found.append(f"{m.group(0)!r}, {n_sources} committed source(s) linked: {where!r}")
    return found


def _placeholder(path: str) -> bool:
    """``results/P``, ``results/<preset>``: a path in a usage line, not a file."""
    return any(re.fullmatch(r"[A-Z]", part) for part in path.split("/"))


def _parents(path: str):
    """``a/b/c.json`` -> ``a/``, ``a/b/``."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i]) + "/"


def test_readme_numbers_name_committed_files():
    text = README.read_text()
    found = problems(text, tracked_files())
    assert not found, "README numbers without a committed source:\n" + "\n".join(found)


def test_not_measured_phrases_still_in_readme():
    """The allowlist does not rot: each phrase is still in the README (else remove it)."""
    text = hand_written(README.read_text())
    assert [p for p in NOT_MEASURED if p not in text] == []


# The checker itself, on README text that must fail and pass.
_QUANT = "results/bench/2026-11-27T141605Z_amd-epyc_f1a9f19_quant.json"
_README = f"intro\n\n{BEGIN}\n| generated | 12.0 ms |\n{END}\n\n{{}}\n"


@pytest.mark.parametrize(
    "para",
    [
        # the paragraph the audit found: ranges from runs that were never committed
        "The previous session's twelve runs (12:16–13:08 UTC, commit 7389b76 and before) gave "
        "0.82–0.97× and 0.74–1.09 (≥ 0.85 in eleven).",
        # one linked file does not cover twelve runs
        f"From [the JSON]({_QUANT}) (`pytest benchmarks/bench_quant.py --bench-save quant`): "
        "twelve runs gave 0.82–0.97×.",
        # a folder named in passing is not a source
        "`make reproduce` took 9 min 15 s and wrote the `results/quick` committed here.",
        # a file that is not committed
        "Harness overhead (`results/bench/cpu-latest.json`): +4.2 %.",
        # a committed file without the command that made it
        f"Quantize takes 0.101 ms ({_QUANT}).",
        # a table whose caption cites nothing
        "Kernels:\n\n| op | time |\n|---|---|\n| quantize | 11.6 ms |",
        "Harness overhead: +4.2 % (quiet machine).",
    ],
)
def test_checker_rejects_unsourced_numbers(para):
    assert problems(_README.format(para), tracked_files())


@pytest.mark.parametrize(
    "para",
    [
        f"Kernels (`pytest benchmarks/bench_quant.py -k cpu`, [{_QUANT}]({_QUANT})):\n\n"
        "| op | time |\n|---|---|\n| quantize | 11.6 ms |",
        "Accuracy preset: 33 min (3 runs; their `wall_s` in "
        "[`results/accuracy/runs/`](results/accuracy/runs/)).",
        "Link 3g (1 Mbit/s up, 4 down, 75 ms), batch 128 over 256 MiB.",
        "Versions: `torch==2.14.1`, default `8.0;9.0`.",
    ],
)
def test_checker_accepts_sourced_numbers(para):
    assert problems(_README.format(para), tracked_files()) == []


def test_generated_block_is_left_to_the_staleness_test():
    """Numbers between the markers are the report's (regenerated and compared in
    tests/test_reproduce.py), so this checker skips them."""
    text = _README.format("nothing measured here")
    assert problems(text, tracked_files()) == []
    assert (
        "test_readme_results_block_is_generated_from_committed_results"
        in (ROOT / "tests" / "test_reproduce.py").read_text()
    )


def test_quick_run_time_matches_its_manifest():
    """The quick run's start, end and duration quoted in the README are its manifest's (they once
    went stale when results/quick was regenerated on another machine)."""
    from datetime import datetime

    m = json.loads((README.parent / "results" / "quick" / "manifest.json").read_text())
    start, end = (
        datetime.fromisoformat(m[k].replace("Z", "+00:00")) for k in ("started_utc", "finished_utc")
    )
    secs = int((end - start).total_seconds())
    text = " ".join(README.read_text().split())
    took = f"{secs // 60} min {secs % 60} s"
    span = f"{start:%H:%M:%S} to {end:%H:%M:%S} UTC on {start:%Y-%m-%d}, {took}"
    assert span in text
    assert text.count(took) == 2  # the prose and the preset table
    family = "Intel Xeon" if "Intel" in m["environment"]["cpu_model"] else "AMD EPYC"
    assert f"{span}, on an {family} " in text
