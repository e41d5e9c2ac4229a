"""Served transactions and their scores, appended under the data root: for drift on real traffic,
and for the online feature store to replay at start-up what was served since its snapshot.

The log is synchronous and append-only. ``PredictionLog.append`` writes its rows before it
returns, as one Arrow IPC record batch appended to an Arrow IPC *stream* file per process and
transaction day, ``<folder>/<YYYY-MM-DD>/<opened at>-<pid>-<uuid>.arrows``, and flushes it to the
operating system: once ``append`` has returned, the rows survive the process being killed
(``kill -9``), and any other process reads them. With ``fsync=True`` every append is also synced
to the disk, so that the rows survive a power cut too, at a price (see bento/README.md).

A process killed in the middle of an append leaves a *torn* batch at the end of its file; the
readers (``read_day``, ``read_since``) return every complete batch and ignore a torn tail. A file
is only ever written by the ``PredictionLog`` that created it, so no writer appends after a torn
batch: a new log, or a log whose write failed, opens a new file.

Days are taken from ``tx_datetime`` by polars and stay text, never Python ``date`` objects: polars
holds timestamps that Python cannot (year 0, which ``/predict_batch`` accepts), and no validated
timestamp may stop the log. Nothing here knows about BentoML.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa

from fraud_dagster.core.features import FEATURE_COLUMNS, KEY_COLUMNS
from fraud_dagster.core.schema import REQUEST_DTYPES

SUFFIX = ".arrows"
LEGACY_SUFFIX = ".parquet"
"""Written whole by the log before this one (buffered rows, one file per write)."""
MAX_OPEN_DAYS = 8
"""Files kept open at once: a batch may span many days (a replayed history), and each day is a
file. Past this many, the file used least recently is closed; a later row of its day opens a new
one."""
_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH_DAY = dt.date(1970, 1, 1)
_DAY_US = 86_400 * 10**6


@dataclass
class _DayFile:
    file: BinaryIO
    schema: pa.Schema
    writer: pa.ipc.RecordBatchStreamWriter

    def close(self) -> None:
        try:
            self.writer.close()  # the end-of-stream marker
        finally:
            self.file.close()


class PredictionLog:
    """Appends scored rows (at least ``tx_datetime``) under ``folder``, one file per process and
    transaction day. Thread-safe: appends are serialised by a lock."""

    def __init__(self, folder: Path, fsync: bool = False):
        self.folder = Path(folder)
        self.fsync = fsync
        self._files: OrderedDict[str, _DayFile] = OrderedDict()
        self._lock = threading.Lock()

    def append(self, frame: pl.DataFrame | pa.RecordBatch) -> None:
        """Write ``frame``'s rows (a frame, or the record batch ``_record_batch`` would make of
        it), each under its transaction day, before returning.

        Raises whatever the file system raises (``OSError``: disk full, folder not writable) and
        the caller must let it fail the request: a prediction whose row is not logged must not be
        acknowledged (the service then answers 500 for that request alone). The day's file is
        abandoned and the next append opens a new one. A frame of several days is written day by
        day: a failure on a later day leaves the earlier days' rows logged, and the micro-batcher,
        scoring each request of a failed batch again alone, may log them twice. At least once,
        never lost.
        """
        if isinstance(frame, pa.RecordBatch):
            day = _one_day(frame)
            if day is not None:
                with self._lock:
                    self._write(day, frame)
                return
            frame = pl.from_arrow(frame)
        if frame.height == 0:
            return
        # Days as text, not core.days.split_by_day's dates: a year-0 row has no Python date.
        stamps = frame.get_column("tx_datetime")
        epoch_days = stamps.dt.epoch("d")
        if epoch_days.min() == epoch_days.max():  # one day: no text per row
            parts = {stamps.head(1).dt.strftime("%Y-%m-%d")[0]: frame}
        else:
            days = stamps.dt.strftime("%Y-%m-%d")
            parts = {key: part for (key,), part in frame.with_columns(days.alias("_day"))
                     .partition_by("_day", as_dict=True, include_key=False).items()}
        with self._lock:
            for day, part in parts.items():
                self._write(day, _record_batch(part))

    def _write(self, day: str, batch: pa.RecordBatch) -> None:
        day_file = self._files.get(day)
        if day_file is not None and day_file.schema != batch.schema:
            self._close(day)  # another model's columns: a new file, each file has one schema
            day_file = None
        try:
            if day_file is None:
                day_file = self._open(day, batch.schema)
            day_file.writer.write_batch(batch)
            day_file.file.flush()
            if self.fsync:
                os.fsync(day_file.file.fileno())
        except BaseException:
            self._abandon(day)
            raise
        self._files.move_to_end(day)

    def _open(self, day: str, schema: pa.Schema) -> _DayFile:
        while len(self._files) >= MAX_OPEN_DAYS:
            self._close(next(iter(self._files)))
        folder = self.folder / day
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                _sync_folder(self.folder)
        opened = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        file = (folder / f"{opened}-{os.getpid()}-{uuid.uuid4().hex}{SUFFIX}").open("xb")
        try:
            if self.fsync:
                _sync_folder(folder)
            day_file = self._files[day] = _DayFile(file, schema,
                                                        pa.ipc.new_stream(file, schema))
        except BaseException:
            file.close()
            raise
        return day_file

    def _close(self, day: str) -> None:
        self._files.pop(day).close()

    def _abandon(self, day: str) -> None:
        """Drop a file a write failed on: its tail may be torn, nothing is appended after it."""
        day_file = self._files.pop(day, None)
        if day_file is not None:
            with contextlib.suppress(Exception):
                day_file.close()

    def close(self) -> None:
        """Close every file (each gets its end-of-stream marker)."""
        with self._lock:
            while self._files:
                self._close(next(iter(self._files)))


def scored_rows(scored, model_version: str) -> pl.DataFrame | pa.RecordBatch:
    """What the service logs for scored transactions (a ``scoring.Scored``): their keys and
    features, ``fraud_probability``, ``is_fraud``, ``model_version`` and ``scored_at`` (UTC).

    A frame when the features are one already (batches); for a request's few rows, whose
    features are a matrix, the record batch ``append`` would make of that frame, built column by
    column in Arrow: building the frame and converting it took longer than scoring the row."""
    n = scored.height
    now = dt.datetime.now(dt.timezone.utc)
    features = scored.features
    if features._frame is not None:  # noqa: SLF001  (built already: scored as a frame)
        return features.frame.hstack([
            pl.Series("fraud_probability", scored.probability),
            pl.Series("is_fraud", scored.is_fraud),
            pl.repeat(model_version, n, eager=True).alias("model_version"),
            pl.repeat(now, n, eager=True).alias("scored_at"),
        ])
    types = _arrow_types()
    transactions = features.transactions
    # Every feature column a slice of one array of the values, column after column: cheaper than
    # an array per column (bento/README.md, session 13); the IPC writer writes a slice's values
    # only.
    by_column = pa.array(np.ascontiguousarray(features.values.T).ravel(), type=pa.float64())
    columns = [
        *(pa.array(transactions.get_column(name).to_numpy(), type=types[name])
          for name in KEY_COLUMNS),
        *(by_column.slice(j * n, n) for j in range(len(FEATURE_COLUMNS))),
        pa.array(scored.probability), pa.array(scored.is_fraud, type=pa.bool_()),
        pa.array([model_version] * n, type=types["model_version"]),
        pa.array([now] * n, type=types["scored_at"]),
    ]
    names = [*KEY_COLUMNS, *FEATURE_COLUMNS, "fraud_probability", "is_fraud", "model_version",
             "scored_at"]
    return pa.RecordBatch.from_arrays(columns, names=names)


@functools.cache
def _arrow_types() -> dict[str, pa.DataType]:
    """The Arrow types polars hands ``append`` for the logged columns that are not numbers."""
    frame = pl.DataFrame(schema={**REQUEST_DTYPES, "model_version": pl.String,
                                 "scored_at": pl.Datetime("us", "UTC")})
    schema = pa.RecordBatchReader.from_stream(frame).schema
    return {field.name: field.type for field in schema}


def _record_batch(frame: pl.DataFrame) -> pa.RecordBatch:
    """``frame`` as one record batch, through the Arrow C stream: for a request's row, far cheaper
    than ``to_arrow``."""
    table = pa.RecordBatchReader.from_stream(frame).read_all()
    return table.combine_chunks().to_batches()[0]


def _one_day(batch: pa.RecordBatch) -> str | None:
    """The one transaction day of a record batch's rows as ``YYYY-MM-DD``, or None when they
    span several days, there are none, or a day Python cannot name (polars names it then)."""
    if batch.num_rows == 0:
        return None
    micros = batch.column("tx_datetime").to_numpy(zero_copy_only=False).astype("int64")
    days = set((micros // _DAY_US).tolist())
    if len(days) != 1:
        return None
    try:
        return (_EPOCH_DAY + dt.timedelta(days=days.pop())).isoformat()
    except OverflowError:
        return None


def _sync_folder(folder: Path) -> None:
    """Make a new entry of ``folder`` (a file, a day folder) durable, as fsync does a file's
    content."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def read_day(folder: Path, day: dt.date) -> pl.DataFrame | None:
    """Every row logged for transactions of ``day``: each complete record batch of its stream
    files (a torn tail ignored) and the older log's parquet files; None when nothing was served
    for that day."""
    return _read_day_folder(Path(folder) / day.isoformat())


def read_since(folder: Path, after: dt.date) -> pl.DataFrame | None:
    """Every row logged for the days strictly after ``after``, day by day: what the online store
    replays on top of its snapshot of the end of ``after``. None when there is none."""
    root = Path(folder)
    if not root.is_dir():
        return None
    days = sorted(path for path in root.iterdir()
                  if path.is_dir() and _DAY_FOLDER.fullmatch(path.name)
                  and path.name > after.isoformat())
    frames = [frame for day in days if (frame := _read_day_folder(day)) is not None]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def _read_day_folder(folder: Path) -> pl.DataFrame | None:
    files = sorted(folder.glob(f"*{SUFFIX}")) + sorted(folder.glob(f"*{LEGACY_SUFFIX}"))
    frames = [frame for path in files if (frame := _read_file(path)).height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def _read_file(path: Path) -> pl.DataFrame:
    if path.suffix == LEGACY_SUFFIX:
        return pl.read_parquet(path)
    return pl.from_arrow(_complete_batches(path))


def _complete_batches(path: Path) -> pa.Table:
    """The record batches of a stream file up to the first one not written whole (a process
    killed mid-append, or a writer still appending). The file is mapped, not read through a
    stream, so that what the reader raises is about its content: a torn message."""
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):  # not even the schema was written whole
            return pa.table({})
        batches = []
        with contextlib.suppress(pa.ArrowInvalid, OSError):
            for batch in reader:
                batches.append(batch)
        return pa.Table.from_batches(batches, reader.schema)
