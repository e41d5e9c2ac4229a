"""Small renderings of results for humans (Dagster metadata, READMEs)."""

from __future__ import annotations

import polars as pl


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured markdown table of a (small) frame."""
    if frame.height == 0:
        return "_none_"
    lines = [
        "| " + " | ".join(frame.columns) + " |",
        "|" + "---|" * frame.width,
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)
