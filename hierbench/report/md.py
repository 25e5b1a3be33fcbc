"""The one way a report writes a Markdown table (pandas-free: the converge report uses it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["md_table"]


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table: ``header`` cells, then one line per row (``str`` of
    each cell; the caller formats numbers)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
