"""Reading transaction files that users drop into the landing folder.

A landing file is CSV or parquet and holds one day. Column names match case-insensitively, so the
Fraud Detection Handbook's layout (``TRANSACTION_ID, TX_DATETIME, ...``) loads as it is; columns we do
not know are ignored and reported. Values that cannot be read as their column's type become null and
are recorded in ``parse_errors``, so validation can quarantine the row with the reason. A file that
cannot be read at all raises ``LandingFileError`` with a reason meant for the user.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import polars as pl

from fraud_dagster.core.schema import (
    LABEL_COLUMNS,
    POLARS_DTYPES,
    REQUIRED_COLUMNS,
    TRANSACTION_COLUMNS,
)

LANDING_SUFFIXES = (".csv", ".parquet", ".pq")
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


class LandingFileError(ValueError):
    """A landing file that cannot be ingested; the message says why."""


@dataclasses.dataclass(frozen=True)
class LandingFile:
    day: dt.date
    transactions: pl.DataFrame
    ignored_columns: tuple[str, ...]


def _read_any(path: Path) -> pl.DataFrame:
    if path.stat().st_size == 0:
        raise LandingFileError("the file is empty")
    try:
        if path.suffix.lower() == ".csv":
            # Read every column as text: types are parsed below, value by value, so one bad
            # value costs one row, not the file.
            return pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
        return pl.read_parquet(path)
    except Exception as exc:  # polars and pyarrow raise many types for damaged files
        raise LandingFileError(f"cannot read {path.suffix} file: {exc}".strip()) from exc


def _parse_integer(column: pl.Expr, dtype: pl.DataType, target: pl.DataType) -> pl.Expr:
    if dtype.is_integer():
        return column.cast(target, strict=False)
    if dtype.is_float():
        return pl.when(column == column.round()).then(column).cast(target, strict=False)
    return column.cast(pl.Utf8).cast(target, strict=False)


def _parse_float(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_numeric():
        return column.cast(pl.Float64)
    return column.cast(pl.Utf8).cast(pl.Float64, strict=False)


def _parse_datetime(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return column.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return column.cast(pl.Datetime("us"))
    text = column.cast(pl.Utf8)
    return pl.coalesce(
        [text.str.strptime(pl.Datetime("us"), fmt, strict=False) for fmt in _DATETIME_FORMATS]
    )


def _blank_as_null(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Text is stripped and an empty cell is a missing value, not an unreadable one."""
    if dtype != pl.Utf8:
        return column
    text = column.str.strip_chars()
    return pl.when(text != "").then(text)


def _parse(name: str, dtype: pl.DataType) -> pl.Expr:
    target = POLARS_DTYPES[name]
    column = pl.col(name)
    if target == pl.Float64:
        return _parse_float(column, dtype)
    if isinstance(target, pl.Datetime):
        return _parse_datetime(column, dtype)
    return _parse_integer(column, dtype, target)


def normalise_columns(frame: pl.DataFrame) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Typed canonical columns plus ``parse_errors``; returns the ignored column names too."""
    by_lower: dict[str, str] = {}
    for original in frame.columns:
        by_lower.setdefault(original.strip().lower(), original)
    missing = [name for name in REQUIRED_COLUMNS if name not in by_lower]
    if missing:
        raise LandingFileError(
            f"missing required column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    known = {by_lower[name]: name for name in TRANSACTION_COLUMNS if name in by_lower}
    ignored = tuple(c for c in frame.columns if c not in known)
    frame = frame.select(_blank_as_null(pl.col(src), frame.schema[src]).alias(dst) for src, dst in known.items())
    frame = frame.with_columns(
        pl.lit(None, dtype=POLARS_DTYPES[name]).alias(name)
        for name in LABEL_COLUMNS
        if name not in frame.columns
    )
    parsed = frame.select(_parse(name, frame.schema[name]).alias(name) for name in TRANSACTION_COLUMNS)
    errors = [
        pl.when(frame[name].is_not_null() & parsed[name].is_null()).then(
            pl.lit(f"{name}=") + pl.lit(frame[name].cast(pl.Utf8))
        )
        for name in TRANSACTION_COLUMNS
    ]
    parse_errors = frame.select(
        pl.concat_str(errors, separator="; ", ignore_nulls=True).alias("parse_errors")
    ).with_columns(pl.when(pl.col("parse_errors") != "").then(pl.col("parse_errors")))
    return parsed.with_columns(parse_errors), ignored


def day_of_file(path: Path, transactions: pl.DataFrame) -> dt.date:
    """The day a file holds: a YYYY-MM-DD in its name, else the most common date in its rows."""
    match = _DATE_IN_NAME.search(path.name)
    if match:
        try:
            return dt.date.fromisoformat(match.group(1))
        except ValueError as exc:
            raise LandingFileError(f"{match.group(1)} in the file name is not a date") from exc
    dates = transactions["tx_datetime"].dt.date().drop_nulls()
    if dates.is_empty():
        raise LandingFileError("no date in the file name and no readable tx_datetime in the rows")
    return dates.mode().sort()[0]


def read_landing_file(path: Path) -> LandingFile:
    """Read, normalise and date one landing file, or raise ``LandingFileError``."""
    frame = _read_any(path)
    if frame.height == 0:
        raise LandingFileError("the file has a header but no rows")
    transactions, ignored = normalise_columns(frame)
    return LandingFile(day_of_file(path, transactions), transactions, ignored)


class LandingFolder:
    """The landing folder's layout: new files at the top, then ``_accepted/<day>/`` or ``_rejected/``.

    Moving a file out of the top level is what records it as handled, so it is never ingested twice
    and what happened to it stays visible in the folder.
    """

    ACCEPTED = "_accepted"
    REJECTED = "_rejected"

    def __init__(self, root: Path):
        self.root = Path(root)

    def pending(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p
            for p in self.root.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in LANDING_SUFFIXES
        )

    def day_dir(self, day: dt.date) -> Path:
        return self.root / self.ACCEPTED / day.isoformat()

    def accepted(self, day: dt.date) -> list[Path]:
        folder = self.day_dir(day)
        return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def accept(self, path: Path, day: dt.date) -> Path:
        return _move_without_overwriting(path, self.day_dir(day))

    def reject(self, path: Path, reason: str) -> Path:
        target = _move_without_overwriting(path, self.root / self.REJECTED)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
        return target


def _move_without_overwriting(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    return path.rename(target)
