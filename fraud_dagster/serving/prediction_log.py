"""Served transactions and their scores, appended under the data root for drift on real traffic.

Rows are buffered in memory and written as ``<folder>/<transaction day>/<uuid>.parquet`` when the
buffer reaches ``max_rows``, when its oldest row is ``max_seconds`` old, and on ``close``. Each file
is written under a temporary name and renamed, so a reader never sees half a file. Nothing here
knows about BentoML.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import polars as pl

logger = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, folder: Path, max_rows: int = 10_000, max_seconds: float = 60.0):
        self.folder = Path(folder)
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._frames: list[pl.DataFrame] = []
        self._rows = 0
        self._oldest: float | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_when_due, name="prediction-log",
                                        daemon=True)
        self._writer.start()

    def append(self, frame: pl.DataFrame) -> None:
        """Buffer rows with at least ``tx_datetime``; the writer thread writes them."""
        with self._lock:
            self._frames.append(frame)
            self._rows += frame.height
            if self._oldest is None:
                self._oldest = time.monotonic()
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()

    def _write_when_due(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                age = None if self._oldest is None else time.monotonic() - self._oldest
            if age is None:
                timeout = self.max_seconds
            else:
                timeout = max(self.max_seconds - age, 0.0)
            self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                old = (self._oldest is not None
                       and time.monotonic() - self._oldest >= self.max_seconds)
                due = self._rows >= self.max_rows or old
            if due and not self._closed.is_set():
                try:
                    self.flush()
                except OSError:
                    logger.exception("could not write the prediction log under %s", self.folder)

    def flush(self) -> list[Path]:
        """Write the buffered rows now; returns the files written."""
        with self._lock:
            frames, self._frames, self._rows, self._oldest = self._frames, [], 0, None
        if not frames:
            return []
        rows = pl.concat(frames, how="vertical_relaxed")
        written = []
        days = rows.with_columns(pl.col("tx_datetime").dt.date().alias("_day"))
        for (day,), part in days.partition_by("_day", as_dict=True, include_key=False).items():
            folder = self.folder / day.isoformat()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{uuid.uuid4().hex}.parquet"
            tmp = folder / f".{path.name}.tmp"
            part.write_parquet(tmp)
            tmp.rename(path)
            written.append(path)
        return written

    def close(self) -> list[Path]:
        """Stop the writer thread and write what is buffered."""
        self._closed.set()
        self._wake.set()
        self._writer.join()
        return self.flush()


def read_day(folder: Path, day) -> pl.DataFrame | None:
    """Every row logged for transactions of ``day`` (files written whole, temporary ones
    skipped), or None when nothing was served for that day."""
    files = sorted((Path(folder) / day.isoformat()).glob("*.parquet"))
    if not files:
        return None
    return pl.concat([pl.read_parquet(path) for path in files], how="vertical_relaxed")
