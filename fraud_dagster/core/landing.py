"""Reading transaction files that users drop into the landing folder, and the folder's bookkeeping.

A landing file is CSV (optionally gzipped) or parquet and holds one day. Column names match
case-insensitively, so the Fraud Detection Handbook's layout (``TRANSACTION_ID, TX_DATETIME, ...``)
loads as it is; columns we do not know are ignored and reported. Values are parsed the same way from
CSV text and from parquet's typed columns: a value that cannot be read as its column's type becomes
null and is recorded in ``parse_errors``, so validation can quarantine the row with the reason. A
file that cannot be read at all raises ``LandingFileError`` with a reason meant for the user; so does
*any* exception while reading it, so one strange file never stops the others.

``LandingFolder`` decides what happens to each entry at the top of the folder (``decide``) without
changing anything, and separately carries the decisions out (``read_delivery`` and ``commit`` for
files an ingest run takes, ``reject`` for the others). No Dagster here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import io
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from fraud_dagster.core.schema import DELIVERY_DTYPES, POLARS_DTYPES, REQUIRED_COLUMNS

LANDING_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
TEMPORARY_SUFFIXES = (".tmp", ".part")
"""With a leading dot, the names writers use while a file is being written (then renamed)."""
TEMPORARY_REPORT_AFTER_SECONDS = 600.0
"""A temporary name unchanged this long is reported (once): a writer that never renamed it."""
CONFIRM_YOUNGER_THAN_SECONDS = 60.0
"""A file modified less than this long ago is taken only once a second look (the sensor's next
tick) finds it unchanged: a writer that paused longer than the settle time is caught writing."""
MAX_REASON_CHARS = 500
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
_WHOLE_NUMBER = re.compile(r"^([+-]?\d+)\.0*$")
_EXACT_FLOAT_INTEGER = 2.0**53
"""Beyond this a float64 no longer holds every integer, so a float id there may not be the one
that was meant: a parse error, from parquet as from CSV."""
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
class Layout:
    """What a kind of landing file holds: its columns and their types, which are required, and
    the column whose dates say the file's day when its name has none."""

    dtypes: dict[str, pl.DataType]
    required: tuple[str, ...]
    dated_by: str

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.dtypes)


TRANSACTIONS = Layout(POLARS_DTYPES, REQUIRED_COLUMNS, "tx_datetime")
LABEL_FILE_DTYPES: dict[str, pl.DataType] = {
    "transaction_id": pl.Int64(), "tx_fraud": pl.Int8(), "reported_at": pl.Datetime("us")}
LABELS = Layout(LABEL_FILE_DTYPES, tuple(LABEL_FILE_DTYPES), "reported_at")
"""A label file (``<landing>/labels/``): one row per report, the day it was made."""


@dataclasses.dataclass(frozen=True)
class LandingFile:
    day: dt.date
    transactions: pl.DataFrame
    """The rows (transactions, or label reports for ``LABELS``)."""
    ignored_columns: tuple[str, ...]


def landing_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in sorted(LANDING_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), None)


def _read_any(name: str, data: bytes) -> pl.DataFrame:
    if not data:
        raise LandingFileError("the file is empty")
    suffix = landing_suffix(name)
    if suffix == ".csv.gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise LandingFileError(f"cannot read .csv.gz file: {exc}") from exc
        if not data:
            raise LandingFileError("the file is empty (once decompressed)")
    try:
        if suffix in (".csv", ".csv.gz"):
            # Every column as text: types are parsed below, value by value, so one bad value
            # costs one row, not the file. Bytes that are not UTF-8 (a latin-1 é) become U+FFFD:
            # harmless in an ignored column, a parse error in a read one.
            return pl.read_csv(
                io.BytesIO(data), infer_schema=False, truncate_ragged_lines=False,
                encoding="utf8-lossy",
            )
        return pl.read_parquet(io.BytesIO(data))
    except Exception as exc:  # polars and pyarrow raise many types for damaged files
        raise LandingFileError(f"cannot read {suffix} file: {exc}".strip()) from exc


def _parse_integer(column: pl.Expr, dtype: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Whole numbers only, the same from text and from numbers: ``1234``, ``1234.0`` (text or
    float) read as 1234; ``2.5``, ``1e3`` as text, floats past 2**53 and values outside the
    target type are parse errors."""
    if dtype.is_integer():
        return column.cast(target, strict=False)
    if dtype.is_float():
        exact = (column == column.round()) & (column.abs() <= _EXACT_FLOAT_INTEGER)
        return pl.when(exact).then(column).cast(target, strict=False)
    if dtype.is_numeric():  # decimals
        return _parse_integer(column.cast(pl.Float64), pl.Float64(), target)
    text = column.cast(pl.Utf8).str.replace(_WHOLE_NUMBER.pattern, "${1}")
    return text.cast(target, strict=False)


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


def _parse(name: str, dtype: pl.DataType, target: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if target == pl.Float64:
        return _parse_float(column, dtype)
    if isinstance(target, pl.Datetime):
        return _parse_datetime(column, dtype)
    return _parse_integer(column, dtype, target)


def _readable_dtype(dtype: pl.DataType) -> bool:
    return (
        dtype.is_numeric()
        or dtype in (pl.Utf8, pl.Date, pl.Boolean, pl.Categorical)
        or isinstance(dtype, (pl.Datetime, pl.Enum))
    )


def normalise_columns(frame: pl.DataFrame, layout: Layout = TRANSACTIONS
                      ) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Typed canonical columns plus ``parse_errors``; returns the ignored column names too."""
    by_lower: dict[str, str] = {}
    for original in frame.columns:
        by_lower.setdefault(original.lstrip("\ufeff").strip().lower(), original)
    missing = [name for name in layout.required if name not in by_lower]
    if missing:
        raise LandingFileError(
            f"missing required column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    known = {by_lower[name]: name for name in layout.columns if name in by_lower}
    for src, dst in known.items():
        if not _readable_dtype(frame.schema[src]):
            raise LandingFileError(f"column {dst} holds {frame.schema[src]} values, not single values")
    ignored = tuple(c for c in frame.columns if c not in known)
    frame = frame.select(_blank_as_null(pl.col(src), frame.schema[src]).alias(dst) for src, dst in known.items())
    frame = frame.with_columns(
        pl.lit(None, dtype=layout.dtypes[name]).alias(name)
        for name in layout.columns
        if name not in frame.columns
    )
    parsed = frame.select(_parse(name, frame.schema[name], layout.dtypes[name]).alias(name)
                          for name in layout.columns)
    errors = [
        pl.when(frame[name].is_not_null() & parsed[name].is_null()).then(
            pl.lit(f"{name}=") + pl.lit(frame[name].cast(pl.Utf8))
        )
        for name in layout.columns
    ]
    parse_errors = frame.select(
        pl.concat_str(errors, separator="; ", ignore_nulls=True).alias("parse_errors")
    ).with_columns(pl.when(pl.col("parse_errors") != "").then(pl.col("parse_errors")))
    return parsed.with_columns(parse_errors), ignored


def day_of_file(name: str, transactions: pl.DataFrame, column: str = "tx_datetime") -> dt.date:
    """The day a file holds: a YYYY-MM-DD in its name, else the most common date of ``column``
    in its rows."""
    match = _DATE_IN_NAME.search(name)
    if match:
        try:
            return dt.date.fromisoformat(match.group(1))
        except ValueError as exc:
            raise LandingFileError(f"{match.group(1)} in the file name is not a date") from exc
    dates = transactions[column].dt.date().drop_nulls()
    if dates.is_empty():
        raise LandingFileError(f"no date in the file name and no readable {column} in the rows")
    return dates.mode().sort()[0]


def parse_landing_bytes(name: str, data: bytes, layout: Layout = TRANSACTIONS) -> LandingFile:
    """Read, normalise and date one landing file's bytes, or raise ``LandingFileError``: any
    exception becomes one, with its message as the reason."""
    try:
        frame = _read_any(name, data)
        if frame.height == 0:
            raise LandingFileError("the file has a header but no rows")
        rows, ignored = normalise_columns(frame, layout)
        return LandingFile(day_of_file(name, rows, layout.dated_by), rows, ignored)
    except LandingFileError:
        raise
    except Exception as exc:
        raise LandingFileError(f"cannot read the file: {type(exc).__name__}: {exc}") from exc


def read_bytes_no_follow(path: Path) -> bytes:
    """The bytes of a regular file, refusing to follow a symbolic link (``O_NOFOLLOW``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LandingFileError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def read_landing_file(path: Path, layout: Layout = TRANSACTIONS) -> LandingFile:
    """Read, normalise and date one landing file, or raise ``LandingFileError``."""
    path = Path(path)
    try:
        data = read_bytes_no_follow(path)
    except OSError as exc:
        raise LandingFileError(f"cannot open the file: {exc.strerror or exc}") from exc
    return parse_landing_bytes(path.name, data, layout)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- The folder -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One name at the top of the landing folder, as ``lstat`` sees it (links not followed)."""

    name: str
    kind: str  # "file", "symlink", "directory" or "other"
    size: int
    mtime: float
    signature: str
    """Changes whenever the entry is written, replaced or touched."""

    @classmethod
    def of(cls, path: Path) -> "Entry":
        st = path.lstat()
        mode = st.st_mode
        kind = (
            "symlink" if stat.S_ISLNK(mode)
            else "file" if stat.S_ISREG(mode)
            else "directory" if stat.S_ISDIR(mode)
            else "other"
        )
        return cls(path.name, kind, st.st_size, st.st_mtime,
                   f"{kind}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")

    @property
    def temporary(self) -> bool:
        return self.name.startswith(".") or self.name.lower().endswith(TEMPORARY_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with one entry: ``take`` it for ``day``, ``reject`` it (move it to
    ``_rejected/``) or ``report`` it (leave it where it is); the last two with a ``reason``."""

    name: str
    signature: str
    action: str
    day: dt.date | None = None
    sha256: str | None = None
    reason: str | None = None
    rows: int = 0
    ignored_columns: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """What identifies this delivery: its name and its content (or, for what has no content
        we read, its signature)."""
        return f"{self.name}:{self.sha256 or self.signature}"


@dataclasses.dataclass(frozen=True)
class Taken:
    name: str
    sha256: str
    day: dt.date
    signature: str
    rows: int


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What an ingest run read: the days' rows, the top-level files it took, and those it was
    asked to take but did not (gone or changed since the sensor decided), with why."""

    transactions: pl.DataFrame
    taken: tuple[Taken, ...]
    skipped: tuple[tuple[str, str], ...]


def _short(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


class LandingFolder:
    """The landing folder's layout: new files at the top, then ``_accepted/<day>/`` or ``_rejected/``.

    Only the run that ingested a file moves it into ``_accepted/<day>/``, after its rows are stored;
    a file there under the same name as the new one is moved to ``_accepted/<day>/_replaced/``
    first (a correction replaces; any other name adds). ``_accepted/<day>/`` is what the day is
    made of: every regular file at its top.
    """

    ACCEPTED = "_accepted"
    REJECTED = "_rejected"
    REPLACED = "_replaced"
    LABELS = "labels"
    """The subfolder label files land in, with the same layout (``labels()``)."""

    def __init__(self, root: Path, layout: Layout = TRANSACTIONS):
        self.root = Path(root)
        self.layout = layout
        self.schema = {**layout.dtypes, **DELIVERY_DTYPES}

    def labels(self) -> "LandingFolder":
        """The label files' folder: ``<root>/labels/``, its own ``_accepted/`` and ``_rejected/``."""
        return LandingFolder(self.root / self.LABELS, LABELS)

    # The top level, as it is now.

    def entries(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.iterdir()):
            if path.name in (self.ACCEPTED, self.REJECTED) or (
                    self.layout is TRANSACTIONS and path.name == self.LABELS and path.is_dir()
                    and not path.is_symlink()):
                continue
            try:
                found.append(Entry.of(path))
            except FileNotFoundError:  # removed while we listed
                continue
        return found

    def day_dir(self, day: dt.date) -> Path:
        return self.root / self.ACCEPTED / day.isoformat()

    def accepted(self, day: dt.date) -> list[Path]:
        folder = self.day_dir(day)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())

    def accepted_content(self, day: dt.date) -> dict[str, str]:
        """sha256 -> name of the files that make ``day`` now (hashed: costs reading them)."""
        return {sha256(read_bytes_no_follow(p)): p.name for p in self.accepted(day)}

    # Deciding, without changing anything.

    def decide(
        self, entry: Entry, now: float, settle_seconds: float,
        first: dt.date, last: dt.date | None, seen_unchanged: bool = False,
    ) -> Decision | None:
        """The decision for one entry, or None while it may still be being written: modified
        less than ``settle_seconds`` ago, or less than ``CONFIRM_YOUNGER_THAN_SECONDS`` ago and
        not ``seen_unchanged`` (same signature) by an earlier look."""
        age = now - entry.mtime
        if entry.temporary:
            if age < max(settle_seconds, TEMPORARY_REPORT_AFTER_SECONDS):
                return None
            return Decision(entry.name, entry.signature, "report", reason=(
                "a hidden or temporary name marks a file still being written, so it is not read;"
                f" it has not changed for {age / 60:.0f} minutes: rename it (without the leading"
                " dot or the .tmp/.part ending) to have it ingested, or remove it"))
        if age < settle_seconds:
            return None
        if age < max(settle_seconds, CONFIRM_YOUNGER_THAN_SECONDS) and not seen_unchanged:
            return None

        def reject(reason: str, **kw) -> Decision:
            return Decision(entry.name, entry.signature, "reject", reason=_short(reason), **kw)

        if entry.kind == "symlink":
            return reject("a symbolic link: links are never followed; copy or move the file"
                          " itself into the landing folder")
        if entry.kind == "directory":
            return reject("a directory: only files at the top of the landing folder are read")
        if entry.kind != "file":
            return reject("not a regular file (a pipe, socket or device)")
        if landing_suffix(entry.name) is None:
            return reject("not a landing file: only .csv, .csv.gz, .parquet and .pq files are read")
        try:
            data = read_bytes_no_follow(self.root / entry.name)
        except (OSError, LandingFileError) as exc:
            return reject(f"cannot open the file: {getattr(exc, 'strerror', None) or exc}")
        digest = sha256(data)
        try:
            landed = parse_landing_bytes(entry.name, data, self.layout)
        except LandingFileError as exc:
            return reject(str(exc), sha256=digest)
        if landed.day < first or last is None or landed.day > last:
            return reject(f"{landed.day} is outside the partitions {first}..{last or '(none yet)'}",
                          sha256=digest)
        return Decision(entry.name, entry.signature, "take", day=landed.day, sha256=digest,
                        rows=landed.transactions.height, ignored_columns=landed.ignored_columns)

    def without_repeats(self, decisions: Iterable[Decision]) -> list[Decision]:
        """Files whose content is already ingested for their day, or is another file's of this
        batch, are rejected as repeats rather than ingested twice."""
        out, seen, accepted = [], {}, {}
        for d in decisions:
            if d.action == "take":
                if d.day not in accepted:
                    try:
                        accepted[d.day] = self.accepted_content(d.day)
                    except (OSError, LandingFileError):  # an unreadable accepted file: no repeat check
                        accepted[d.day] = {}
                same = accepted[d.day].get(d.sha256)
                if same is not None:
                    d = dataclasses.replace(d, action="reject", day=None, reason=(
                        f"same content as {self.ACCEPTED}/{d.day}/{same}, already ingested"))
                elif d.sha256 in seen:
                    d = dataclasses.replace(d, action="reject", day=None, reason=(
                        f"same content as {seen[d.sha256]}, delivered at the same time"))
                else:
                    seen[d.sha256] = d.name
            out.append(d)
        return out

    # Carrying decisions out: an ingest run reads, stores, then commits; a rejection run rejects.

    def read_delivery(
        self, days: Sequence[dt.date], take: Sequence[tuple[str, str, dt.date]]
    ) -> Delivery:
        """The rows of ``days``: each day's accepted files, plus the top-level files in ``take``
        (name, sha256, day) that still hold that content; a taken file replaces an accepted one
        of the same name."""
        taking: dict[dt.date, list[tuple[Taken, pl.DataFrame]]] = {}
        skipped: list[tuple[str, str]] = []
        wanted = set(days)
        for name, digest, day in take:
            path = self.root / name
            why = None
            if day not in wanted:
                why = f"its day {day} is not one of this run's days"
            else:
                try:
                    entry = Entry.of(path)
                    data = read_bytes_no_follow(path)
                except (OSError, LandingFileError):
                    why = "no longer at the top of the landing folder"
                else:
                    if sha256(data) != digest:
                        why = "changed since the sensor decided: it will be decided again"
            if why is not None:
                skipped.append((name, why))
                continue
            landed = parse_landing_bytes(name, data, self.layout)
            taking.setdefault(day, []).append(
                (Taken(name, digest, day, entry.signature, landed.transactions.height),
                 landed.transactions))
        frames = [pl.DataFrame(schema=self.schema)]
        for day in days:
            new = taking.get(day, [])
            replaced = {t.name for t, _ in new}
            parts = [(p.name, read_landing_file(p, self.layout).transactions)
                     for p in self.accepted(day) if p.name not in replaced]
            parts += [(t.name, tx) for t, tx in new]
            for name, tx in parts:
                frames.append(tx.with_columns(partition_date=pl.lit(day), source=pl.lit(name))
                              .select(list(self.schema)))
        return Delivery(pl.concat(frames), tuple(t for ts in taking.values() for t, _ in ts),
                        tuple(skipped))

    def commit(self, delivery: Delivery) -> tuple[list[Path], list[tuple[str, str]]]:
        """Move the taken files into ``_accepted/<day>/`` (after their rows are stored); one
        replaced by a file of the same name goes to ``_accepted/<day>/_replaced/``. A file that
        changed since it was read stays where it is. Returns the new paths, and what was left."""
        moved, left = [], []
        for t in delivery.taken:
            path = self.root / t.name
            try:
                if Entry.of(path).signature != t.signature:
                    left.append((t.name, "changed after it was read: it will be decided again"))
                    continue
            except FileNotFoundError:
                left.append((t.name, "gone before it could be moved"))
                continue
            target = self.day_dir(t.day) / t.name
            if target.exists() or target.is_symlink():
                _move_without_overwriting(target, self.day_dir(t.day) / self.REPLACED)
            target.parent.mkdir(parents=True, exist_ok=True)
            moved.append(path.rename(target))
        return moved, left

    def reject(self, name: str, signature: str, reason: str) -> Path | None:
        """Move an entry to ``_rejected/`` beside ``<name>.reason.txt``; None if it is gone or
        changed since the decision (it will be decided again)."""
        path = self.root / name
        try:
            if Entry.of(path).signature != signature:
                return None
        except FileNotFoundError:
            return None
        target = _move_without_overwriting(path, self.root / self.REJECTED)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
        return target


def _move_without_overwriting(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists() or target.is_symlink():
        suffix = landing_suffix(path.name) or path.suffix
        stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
        target = folder / f"{stem}.{n}{suffix}"
        n += 1
    return path.rename(target)
