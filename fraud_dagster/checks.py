"""Blocking checks on the validated days as they were stored.

They read the partitions back through the IO manager, so they judge what downstream assets will
read (not the frame the validation step held), and they can be re-run from the UI on any days.
Being blocking, a failure stops `transaction_features` in the same run.
"""

import dagster as dg
import polars as pl
from pandera.errors import SchemaErrors
from pydantic import Field

from fraud_dagster.assets.transactions import VALIDATED
from fraud_dagster.core.schema import ValidatedTransaction
from fraud_dagster.core.validation import quarantine_rate_by_day
from fraud_dagster.partitions import daily_partitions, window_days
from fraud_dagster.metadata import as_table

STORED_DAYS = dict(asset=VALIDATED, blocking=True, partitions_def=daily_partitions)


class QuarantineRateConfig(dg.Config):
    max_quarantine_rate: float = Field(
        default=0.05, description="A day with a larger share of quarantined rows fails the check.")


@dg.asset_check(**STORED_DAYS, description="Stored rows satisfy the ValidatedTransaction schema.")
def schema_valid(validated_transactions: pl.DataFrame) -> dg.AssetCheckResult:
    try:
        ValidatedTransaction.validate(validated_transactions, lazy=True)
    except SchemaErrors as exc:
        return dg.AssetCheckResult(
            passed=False,
            metadata={
                "failures": len(exc.failure_cases),
                "failure_cases": as_table(exc.failure_cases.head(20)),
            },
        )
    return dg.AssetCheckResult(passed=True, metadata={"failures": 0})


@dg.asset_check(
    **STORED_DAYS,
    additional_ins={"quarantined_transactions": dg.AssetIn()},
    description="Each day's quarantined share of its raw rows is under the configured limit.",
)
def quarantine_rate_below_threshold(
    config: QuarantineRateConfig,
    validated_transactions: pl.DataFrame,
    quarantined_transactions: pl.DataFrame,
) -> dg.AssetCheckResult:
    per_day = quarantine_rate_by_day(validated_transactions, quarantined_transactions)
    too_many = per_day.filter(pl.col("quarantine_rate") > config.max_quarantine_rate)
    return dg.AssetCheckResult(
        passed=too_many.height == 0,
        metadata={
            "max_quarantine_rate": config.max_quarantine_rate,
            "worst_rate": float(per_day["quarantine_rate"].max() or 0.0),
            "days_over_limit": as_table(too_many),
        },
    )


@dg.asset_check(**STORED_DAYS, description="No transaction id appears twice in the checked days.")
def transaction_ids_unique(validated_transactions: pl.DataFrame) -> dg.AssetCheckResult:
    repeated = (
        validated_transactions.group_by("transaction_id").len().filter(pl.col("len") > 1)
    )
    return dg.AssetCheckResult(
        passed=repeated.height == 0,
        metadata={
            "repeated_ids": repeated.height,
            "examples": repeated["transaction_id"].head(10).to_list(),
        },
    )


@dg.asset_check(**STORED_DAYS, description="Every stored transaction falls inside the checked days.")
def timestamps_inside_day(
    context: dg.AssetCheckExecutionContext, validated_transactions: pl.DataFrame
) -> dg.AssetCheckResult:
    first, last = window_days(context.op_execution_context.partition_time_window)
    days = validated_transactions["tx_datetime"].dt.date()
    outside = int((~days.is_between(first, last)).sum())
    return dg.AssetCheckResult(passed=outside == 0, metadata={"rows_outside_their_day": outside})
