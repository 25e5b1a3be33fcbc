"""Reading a results folder: its manifest, its run records, its foundation checks, and the
report's own CSV tables (:mod:`hierbench.experiments` writes the first three)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hierbench.errors import ConfigError
from hierbench.spec.records import read_record

__all__ = ["load_folder", "read_foundation", "read_manifest", "read_table"]


def read_manifest(folder: str | Path) -> dict:
    """``<folder>/manifest.json``, or ``{}`` when the folder has none."""
    mpath = Path(folder) / "manifest.json"
    return json.loads(mpath.read_text()) if mpath.is_file() else {}


def read_foundation(folder: str | Path) -> dict | None:
    """``<folder>/foundation.json`` (the data and loader checks of ``hierbench reproduce``), or
    None when the folder has none."""
    path = Path(folder) / "foundation.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_folder(folder: str | Path) -> tuple[dict, list[dict]]:
    """The manifest (or ``{}``) and every run record of a results folder, each record with its
    file stem as ``_id`` and its kind (``timing``: two processes; ``accuracy``) as ``_kind``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no results folder {folder}: run `hierbench reproduce` first")
    manifest = read_manifest(folder)
    records = []
    for path in sorted((folder / "runs").glob("*.json")):
        rec = read_record(path)
        rec["_id"] = path.stem
        kind = (rec.get("experiment") or {}).get("kind")
        rec["_kind"] = kind or ("timing" if rec.get("processes") == 2 else "accuracy")
        records.append(rec)
    return manifest, records


def read_table(path: Path) -> pd.DataFrame:
    """A CSV table of a report; empty when the file is missing or the table had no rows."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()
