"""Frames cut into days: what the daily tables and the online store's journal are kept by."""

from __future__ import annotations

import datetime as dt

import polars as pl


def split_by_day(frame: pl.DataFrame, column: str) -> dict[dt.date | None, pl.DataFrame]:
    """The rows of each day of ``column`` (a date or datetime), in their order in ``frame``.

    A frame whose days each come as one block of rows (a frame built day by day, as the assets
    return) is cut into slices without copying; any other is regrouped.
    """
    days = frame.get_column(column).cast(pl.Date)
    runs = days.rle()
    run_days, run_lengths = runs.struct.field("value"), runs.struct.field("len")
    if run_days.n_unique() < run_days.len():
        parts = frame.with_columns(days.alias("__day")).partition_by(
            "__day", as_dict=True, include_key=False
        )
        return {day: part for (day,), part in parts.items()}
    parts, start = {}, 0
    for day, length in zip(run_days.to_list(), run_lengths.to_list(), strict=True):
        parts[day] = frame.slice(start, length)
        start += length
    return parts
