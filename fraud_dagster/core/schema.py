"""The transaction tables' columns, each stated once in ``COLUMNS``, and what derives from them:
the column tuples, the polars dtypes and one pandera schema (polars) per table.

``RawTransaction`` is what any source delivers: the canonical columns, typed but not yet trusted
(nulls allowed), with ``parse_errors`` keeping what could not be read and ``partition_date`` the day the
row was delivered for. ``ValidatedTransaction`` is what passed every row rule; ``QuarantinedTransaction``
is a raw row that did not, with the reason. The row rules (``core.validation``) and the API's request
models (``serving.request_fields``) derive from ``COLUMNS`` too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

import polars as pl
import pandera.polars as pa

MAX_AMOUNT = 1_000_000.0
"""The largest amount a transaction may carry, in validation and in the API alike; the smallest
is 0 (a card verification). Past it, XGBoost's float32 inputs would overflow near 3.4e38, and
squared cents would overflow the features' int64 sums long before."""
EARLIEST, LATEST = dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1)
"""Timestamps a request may carry, on both endpoints: a card transaction outside them is a
client's bug (year 0000 would not even fit Python's ``datetime``)."""

Kind = Literal["request", "label", "delivery", "verdict"]
"""Which tables hold a column. ``request``: what a transaction is scored on, required in every
table; ``label``: optional labels of a delivery (null when it has none), raw and validated;
``delivery``: how the row was delivered, raw (and quarantined) only; ``verdict``: quarantined only."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the transaction tables. Its bounds hold in the validated table, the row rules
    and the API; a float column must also be finite."""

    name: str
    dtype: pl.DataType
    kind: Kind
    description: str
    nullable: bool = False
    """Once validated: a raw transaction's columns are all nullable, not yet trusted."""
    ge: float | None = None
    le: float | None = None
    isin: tuple[int, ...] | None = None
    unique: bool = False
    request_range: tuple[dt.datetime, dt.datetime] | None = None
    """``[from, before)`` for a request only: the table's own rule is the row's day."""


COLUMNS = (
    Column("transaction_id", pl.Int64(), "request",
           "Non-negative integer, echoed in the prediction.", ge=0, unique=True),
    Column("tx_datetime", pl.Datetime("us"), "request",
           "Local time without a time zone, ISO 8601: 2025-03-15T14:03:07; from"
           f" {EARLIEST.date()} to before {LATEST.date()}.", request_range=(EARLIEST, LATEST)),
    Column("customer_id", pl.Int64(), "request",
           "Non-negative integer; unknown customers have no history.", ge=0),
    Column("terminal_id", pl.Int64(), "request",
           "Non-negative integer; unknown terminals have no history.", ge=0),
    Column("tx_amount", pl.Float64(), "request",
           f"From 0 (a card verification) to {MAX_AMOUNT:,.2f}.", ge=0, le=MAX_AMOUNT),
    Column("tx_fraud", pl.Int8(), "label",
           "The delivery's label, if any: read only by fraud_labels.", nullable=True, isin=(0, 1)),
    Column("tx_fraud_scenario", pl.Int8(), "label",
           "The simulator's fraud scenario (its truth), if any.", nullable=True, ge=0),
    Column("label_reported_at", pl.Datetime("us"), "label",
           "When tx_fraud was reported (null: LABEL_REPORT_DELAY_DAYS after the transaction).",
           nullable=True),
    Column("partition_date", pl.Date(), "delivery", "The day this row was delivered for."),
    Column("source", pl.Utf8(), "delivery", "'simulator' or the landing file the row came from."),
    Column("parse_errors", pl.Utf8(), "delivery",
           "Values that could not be read as their column's type.", nullable=True),
    Column("quarantine_reason", pl.Utf8(), "verdict", "Every rule the row broke, '; '-separated."),
)


def columns(*kinds: Kind) -> tuple[Column, ...]:
    """The columns of these kinds, in table order."""
    return tuple(column for column in COLUMNS if column.kind in kinds)


TRANSACTION_COLUMNS = tuple(c.name for c in columns("request", "label"))
"""Column order of every transaction table; labels may be absent (null) for unlabelled sources."""
REQUIRED_COLUMNS = tuple(c.name for c in columns("request"))
LABEL_COLUMNS = tuple(c.name for c in columns("label"))
"""Optional: a delivery's labels. Only ``fraud_labels`` reads them, as reports made at
``label_reported_at`` (see ``core.labels``); ``tx_fraud_scenario`` is the simulator's truth."""

POLARS_DTYPES: dict[str, pl.DataType] = {c.name: c.dtype for c in columns("request", "label")}
REQUEST_DTYPES = {c.name: c.dtype for c in columns("request")}
"""A transaction as it is scored: the required fields, no labels."""
DELIVERY_DTYPES = {c.name: c.dtype for c in columns("delivery")}
"""What a delivered row carries besides its file's columns."""


def _is_finite(data: pa.PolarsData) -> pl.LazyFrame:
    # polars orders NaN above every number: keep the check explicit.
    return data.lazyframe.select(pl.col(data.key).is_finite())


def _checks(column: Column) -> list[pa.Check]:
    checks = []
    if column.ge is not None:
        checks.append(pa.Check.ge(column.ge))
    if column.le is not None:
        checks.append(pa.Check.le(column.le))
    if column.isin is not None:
        checks.append(pa.Check.isin(list(column.isin)))
    if column.dtype.is_float():
        checks.append(pa.Check(_is_finite, name="finite"))
    return checks


def _validated(column: Column) -> pa.Column:
    return pa.Column(column.dtype, checks=_checks(column), nullable=column.nullable,
                     unique=column.unique, description=column.description)


def _delivered(column: Column) -> pa.Column:
    """As a source delivers it: a transaction's columns unchecked and nullable; the delivery's own,
    set by the pipeline, as they are."""
    if column.kind in ("request", "label"):
        return pa.Column(column.dtype, nullable=True, description=column.description)
    return _validated(column)


def _table(name: str, description: str, kinds: tuple[Kind, ...], view) -> pa.DataFrameSchema:
    return pa.DataFrameSchema({c.name: view(c) for c in columns(*kinds)}, strict=True,
                              coerce=False, name=name, description=description)


RawTransaction = _table(
    "RawTransaction", "One day's transactions as delivered by the simulator or a landing file.",
    ("request", "label", "delivery"), _delivered)
ValidatedTransaction = _table(
    "ValidatedTransaction", "A transaction that passed every row rule: complete, a finite amount"
    " from 0 to MAX_AMOUNT, inside its day.", ("request", "label"), _validated)
QuarantinedTransaction = _table(
    "QuarantinedTransaction", "A raw row that broke at least one row rule, kept with every rule"
    " it broke.", ("request", "label", "delivery", "verdict"), _delivered)
