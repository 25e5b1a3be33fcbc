"""Where a measurement came from: the code (git commit, dirty or not) and the machine (CPU model).

Every run record, manifest, profile and benchmark file carries these, so that a number can be
traced to the commit and the kind of CPU that produced it, and ``--resume`` can refuse to mix
records made by different code. Torch-free; git is optional (a tarball install says "unknown").
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

__all__ = ["REPO", "cpu_model", "git_state", "load_average", "provenance"]

#: The checkout this package runs from (where git is asked).
REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """``/proc/cpuinfo``'s model name (``"AMD EPYC 9B45"``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state(repo: str | Path = REPO) -> dict:
    """``{"git_sha": full SHA or "unknown", "git_dirty": bool | None, "git_diff_sha256": hash of
    the uncommitted diff or None}`` of the checkout.

    Dirty means a tracked file differs from the commit (untracked files and ``results/`` do not
    count: runs write there while they go on); the diff's hash tells two dirty trees apart.
    """

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
        )

    try:
        sha = git("rev-parse", "HEAD")
        if sha.returncode != 0:
            return {"git_sha": "unknown", "git_dirty": None, "git_diff_sha256": None}
        diff = git("diff", "HEAD", "--", ".", ":!results").stdout
        return {
            "git_sha": sha.stdout.strip(),
            "git_dirty": bool(diff),
            "git_diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
        }
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": "unknown", "git_dirty": None, "git_diff_sha256": None}


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def provenance() -> dict:
    """git SHA, dirty flag, CPU model, CPU count and load average: one dict for a record."""
    return {
        **git_state(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
    }
