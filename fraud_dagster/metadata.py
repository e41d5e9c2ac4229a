"""Small frames as Dagster metadata: ``MetadataValue.table``, which the UI shows as a table with
typed columns (a frame of results per day, per candidate, per quarantine reason)."""

from __future__ import annotations

import dagster as dg
import polars as pl


def _column_type(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype.is_temporal():
        return "date" if dtype == pl.Date else "datetime"
    return "string"


def _cell(value):
    """A value a ``TableRecord`` holds: numbers, booleans, text and None as they are, anything
    else (dates, lists) as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def as_table(frame: pl.DataFrame) -> dg.TableMetadataValue:
    """``frame``'s rows and column types as a table in the UI."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, _column_type(dtype))
                                     for name, dtype in frame.schema.items()])
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()})
               for row in frame.iter_rows(named=True)]
    return dg.MetadataValue.table(records, schema)
