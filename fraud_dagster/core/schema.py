"""The tables' schemas: one pandera ``DataFrameModel`` (polars) per table, their single statement.

``RawTransaction`` is what any source delivers: the canonical columns, typed but not yet trusted
(nulls allowed), with ``parse_errors`` keeping what could not be read and ``partition_date`` the day the
row was delivered for. ``ValidatedTransaction`` is what passed every row rule; ``QuarantinedTransaction``
is a raw row that did not, with the reason.
"""

from __future__ import annotations

import polars as pl
import pandera.polars as pa

# Column order of every transaction table; labels may be absent (null) for unlabelled sources.
TRANSACTION_COLUMNS = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_fraud",
    "tx_fraud_scenario",
    "label_reported_at",
)
REQUIRED_COLUMNS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount")
MAX_AMOUNT = 1_000_000.0
"""The largest amount a transaction may carry, in validation and in the API alike; the smallest
is 0 (a card verification). Past it, XGBoost's float32 inputs would overflow near 3.4e38, and
squared cents would overflow the features' int64 sums long before."""
LABEL_COLUMNS = ("tx_fraud", "tx_fraud_scenario", "label_reported_at")
"""Optional: a delivery's labels. Only ``fraud_labels`` reads them, as reports made at
``label_reported_at`` (see ``core.labels``); ``tx_fraud_scenario`` is the simulator's truth."""

POLARS_DTYPES: dict[str, pl.DataType] = {
    "transaction_id": pl.Int64(),
    "tx_datetime": pl.Datetime("us"),
    "customer_id": pl.Int64(),
    "terminal_id": pl.Int64(),
    "tx_amount": pl.Float64(),
    "tx_fraud": pl.Int8(),
    "tx_fraud_scenario": pl.Int8(),
    "label_reported_at": pl.Datetime("us"),
}
REQUEST_DTYPES = {name: POLARS_DTYPES[name] for name in REQUIRED_COLUMNS}
"""A transaction as it is scored: the required fields, no labels."""
RAW_DTYPES: dict[str, pl.DataType] = {
    **POLARS_DTYPES,
    "partition_date": pl.Date(),
    "source": pl.Utf8(),
    "parse_errors": pl.Utf8(),
}


class RawTransaction(pa.DataFrameModel):
    """One day's transactions as delivered by the simulator or a landing file."""

    transaction_id: pl.Int64 = pa.Field(nullable=True)
    tx_datetime: pl.Datetime = pa.Field(nullable=True)
    customer_id: pl.Int64 = pa.Field(nullable=True)
    terminal_id: pl.Int64 = pa.Field(nullable=True)
    tx_amount: pl.Float64 = pa.Field(nullable=True)
    tx_fraud: pl.Int8 = pa.Field(nullable=True)
    tx_fraud_scenario: pl.Int8 = pa.Field(nullable=True)
    label_reported_at: pl.Datetime = pa.Field(nullable=True)
    partition_date: pl.Date = pa.Field(description="The day this row was delivered for.")
    source: pl.Utf8 = pa.Field(description="'simulator' or the landing file the row came from.")
    parse_errors: pl.Utf8 = pa.Field(
        nullable=True, description="Values that could not be read as their column's type."
    )

    class Config:
        strict = True
        coerce = False


class ValidatedTransaction(pa.DataFrameModel):
    """A transaction that passed every row rule: complete, a finite amount from 0 to
    ``MAX_AMOUNT``, inside its day."""

    transaction_id: pl.Int64 = pa.Field(ge=0, unique=True)
    tx_datetime: pl.Datetime = pa.Field()
    customer_id: pl.Int64 = pa.Field(ge=0)
    terminal_id: pl.Int64 = pa.Field(ge=0)
    tx_amount: pl.Float64 = pa.Field(ge=0, le=MAX_AMOUNT, description="From 0 to MAX_AMOUNT.")
    tx_fraud: pl.Int8 = pa.Field(isin=[0, 1], nullable=True,
                                 description="The delivery's label, if any: read only by fraud_labels.")
    tx_fraud_scenario: pl.Int8 = pa.Field(ge=0, nullable=True)
    label_reported_at: pl.Datetime = pa.Field(
        nullable=True, description="When tx_fraud was reported (null: LABEL_REPORT_DELAY_DAYS after"
        " the transaction).")

    @pa.check("tx_amount", name="finite")
    @classmethod
    def amount_is_finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        # polars orders NaN above every number: keep the check explicit.
        return data.lazyframe.select(pl.col(data.key).is_finite())

    class Config:
        strict = True
        coerce = False


class QuarantinedTransaction(RawTransaction):
    """A raw row that broke at least one row rule, kept with every rule it broke."""

    quarantine_reason: pl.Utf8 = pa.Field(description="Every rule the row broke, '; '-separated.")
