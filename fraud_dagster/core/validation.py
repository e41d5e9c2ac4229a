"""Row rules that split raw transactions into validated and quarantined ones.

Every raw row ends in exactly one of the two outputs; a quarantined row carries every rule it broke.
"""

from __future__ import annotations

import dataclasses

import polars as pl

from fraud_dagster.core.labels import MAX_LABEL_DELAY_DAYS
from fraud_dagster.core.schema import (
    LABEL_COLUMNS,
    POLARS_DTYPES,
    REQUIRED_COLUMNS,
    TRANSACTION_COLUMNS,
    Column,
    columns,
)

REASON = "quarantine_reason"
DUPLICATE_ID = "duplicate transaction_id"


def _floats_first(column: Column) -> bool:
    # The amount's reasons came first before they were derived: a quarantine_reason keeps its order.
    return not column.dtype.is_float()


def _bound_rules(column: Column) -> list[pl.Expr]:
    """The column's bounds in ``COLUMNS``, and for a float being finite, as row rules."""
    value, name = pl.col(column.name), column.name
    rules = []
    if column.dtype.is_float():
        rules += [pl.when(value.is_nan()).then(pl.lit(f"{name} is NaN")),
                  pl.when(value.is_infinite()).then(pl.lit(f"{name} is infinite"))]
    if column.ge is not None:
        below = "is negative" if column.ge == 0 else f"under {column.ge}"
        rules.append(pl.when(value < column.ge).then(pl.lit(f"{name} {below}")))
    if column.le is not None:  # NaN and infinities have their own reasons
        rules.append(pl.when(value.is_finite() & (value > column.le)).then(
            pl.lit(f"{name} over {column.le:,.2f}")))
    if column.isin is not None:
        allowed = " or ".join(map(str, column.isin))
        rules.append(pl.when(~value.is_in(list(column.isin))).then(
            pl.lit(f"{name} is not {allowed}")))
    return rules


def _row_rules() -> list[pl.Expr]:
    """One expression per rule, each the reason string where the rule is broken, else null."""
    rules = [
        pl.when(pl.col("parse_errors").is_not_null()).then(
            pl.lit("unreadable value: ") + pl.col("parse_errors")
        )
    ]
    rules += [
        pl.when(pl.col(name).is_null() & pl.col("parse_errors").is_null()).then(
            pl.lit(f"missing {name}")
        )
        for name in REQUIRED_COLUMNS
    ]
    rules += [rule for column in sorted(columns("request", "label"), key=_floats_first)
              for rule in _bound_rules(column)]
    rules += [
        pl.when(pl.col("label_reported_at").is_not_null() & pl.col("tx_fraud").is_null()).then(
            pl.lit("label_reported_at without tx_fraud")),
        pl.when(pl.col("label_reported_at") < pl.col("tx_datetime")).then(
            pl.lit("label_reported_at before tx_datetime")),
        pl.when(pl.col("label_reported_at") - pl.col("tx_datetime")
                > pl.duration(days=MAX_LABEL_DELAY_DAYS)).then(
            pl.lit(f"label_reported_at more than {MAX_LABEL_DELAY_DAYS} days after tx_datetime")),
        pl.when(pl.col("tx_datetime").dt.date() != pl.col("partition_date")).then(
            pl.lit("tx_datetime outside ") + pl.col("partition_date").cast(pl.Utf8)
        ),
    ]
    return rules


@dataclasses.dataclass(frozen=True)
class Split:
    validated: pl.DataFrame
    quarantined: pl.DataFrame


def split_transactions(raw: pl.DataFrame, validated_elsewhere: pl.DataFrame | None = None) -> Split:
    """Apply the row rules; of rows sharing an id, the first one that is otherwise valid is kept.
    Label columns a delivery does not have are null.

    ``validated_elsewhere`` (``transaction_id``, ``day``) holds the ids already validated on other
    days: a row with one of them is a duplicate too, whatever else it broke, and says which day.
    """
    raw = raw.with_columns(pl.lit(None, dtype=POLARS_DTYPES[name]).alias(name)
                           for name in LABEL_COLUMNS if name not in raw.columns)
    reasons = raw.with_columns(
        pl.concat_str(_row_rules(), separator="; ", ignore_nulls=True).alias(REASON)
    ).with_columns(
        pl.when(pl.col(REASON) != "").then(pl.col(REASON)).alias(REASON),
    )
    if validated_elsewhere is not None and validated_elsewhere.height:
        ids = raw["transaction_id"].drop_nulls().unique()
        first_day = (
            validated_elsewhere.filter(pl.col("transaction_id").is_in(ids.implode()))
            .group_by("transaction_id").agg(pl.col("day").min().alias("__day"))
        )
        reasons = reasons.join(
            first_day, on="transaction_id", how="left", maintain_order="left"
        ).with_columns(
            pl.concat_str(
                [pl.col(REASON),
                 pl.when(pl.col("__day").is_not_null()).then(
                     pl.lit(f"{DUPLICATE_ID} (validated on ") + pl.col("__day").cast(pl.Utf8)
                     + pl.lit(")"))],
                separator="; ", ignore_nulls=True,
            ).alias(REASON)
        ).with_columns(pl.when(pl.col(REASON) != "").then(pl.col(REASON)).alias(REASON)).drop("__day")
    otherwise_valid = pl.col(REASON).is_null()
    reasons = reasons.with_columns(
        pl.when(otherwise_valid & ~pl.col("transaction_id").is_first_distinct().over(otherwise_valid))
        .then(pl.lit(DUPLICATE_ID))
        .otherwise(pl.col(REASON))
        .alias(REASON)
    )
    is_valid = pl.col(REASON).is_null()
    return Split(
        validated=reasons.filter(is_valid).select(TRANSACTION_COLUMNS),
        quarantined=reasons.filter(~is_valid),
    )


def quarantine_rate_by_day(validated: pl.DataFrame, quarantined: pl.DataFrame) -> pl.DataFrame:
    """Raw rows (validated + quarantined), quarantined rows and their share for each day."""
    good = validated.group_by(pl.col("tx_datetime").dt.date().alias("partition_date")).agg(
        pl.len().alias("validated")
    )
    bad = quarantined.group_by("partition_date").agg(pl.len().alias("quarantined"))
    return (
        good.join(bad, on="partition_date", how="full", coalesce=True)
        .with_columns(pl.col("validated", "quarantined").fill_null(0))
        .with_columns(
            (pl.col("quarantined") / (pl.col("validated") + pl.col("quarantined")))
            .alias("quarantine_rate")
        )
        .sort("partition_date")
    )
