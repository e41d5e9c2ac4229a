"""Daily transactions: raw from the configured source, then validated or quarantined."""


import datetime as dt

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type
from pandera.errors import SchemaErrors

from fraud_dagster.core.reporting import markdown_table
from fraud_dagster.core.schema import QuarantinedTransaction, RawTransaction, ValidatedTransaction
from fraud_dagster.core.validation import quarantine_rate_by_day, split_transactions
from fraud_dagster.partitions import daily_partitions
from fraud_dagster.resources import TransactionSource

GROUP = "transactions"
DAILY = dict(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
)


def partition_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of the partitions this run materialises."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


@dg.asset(
    dagster_type=pandera_schema_to_dagster_type(RawTransaction),
    metadata={"partition_expr": "partition_date"},
    kinds={"polars", "parquet"},
    **DAILY,
)
def raw_transactions(
    context: dg.AssetExecutionContext, transaction_source: TransactionSource
) -> pl.DataFrame:
    """One day of card transactions, as delivered by the simulator or the landing folder."""
    first, last = partition_days(context)
    raw = transaction_source.read_days(first, last)
    context.add_output_metadata(
        {
            "days": (last - first).days + 1,
            "fraud_rate": float(raw["tx_fraud"].mean() or 0.0),
            "source": type(transaction_source).__name__,
        }
    )
    return raw


class ValidationConfig(dg.Config):
    max_quarantine_rate: float = 0.05
    """A day with a larger share of quarantined rows fails its blocking check."""


_CHECKS = {
    "schema_valid": "validated rows satisfy the ValidatedTransaction schema",
    "quarantine_rate_below_threshold": "each day's quarantined share is under the configured limit",
    "transaction_ids_unique": "no transaction id appears twice in the validated days",
    "timestamps_inside_day": "every validated transaction falls inside its partition's day",
}


@dg.multi_asset(
    outs={
        "validated_transactions": dg.AssetOut(
            dagster_type=pandera_schema_to_dagster_type(ValidatedTransaction),
            metadata={"partition_expr": "tx_datetime"},
            kinds={"polars", "pandera", "parquet"},
            description="Transactions that passed every row rule.",
        ),
        "quarantined_transactions": dg.AssetOut(
            dagster_type=pandera_schema_to_dagster_type(QuarantinedTransaction),
            metadata={"partition_expr": "partition_date"},
            kinds={"polars", "pandera", "parquet"},
            description="Raw rows that broke a row rule, each with every reason.",
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(name, asset="validated_transactions", blocking=True, description=text)
        for name, text in _CHECKS.items()
    ],
    **DAILY,
)
def validated_transactions(
    context: dg.AssetExecutionContext, config: ValidationConfig, raw_transactions: pl.DataFrame
):
    """Split raw rows by the row rules; raw rows = validated + quarantined, always."""
    split = split_transactions(raw_transactions)
    valid, quarantined = split.validated, split.quarantined
    if valid.height + quarantined.height != raw_transactions.height:
        raise dg.DagsterInvariantViolationError("validation lost or duplicated rows")

    per_day = quarantine_rate_by_day(raw_transactions, quarantined)
    reasons = quarantined.group_by("quarantine_reason").agg(pl.len().alias("rows")).sort(
        "rows", descending=True
    )
    yield dg.Output(
        valid,
        output_name="validated_transactions",
        metadata={
            "raw_rows": raw_transactions.height,
            "quarantined_rows": quarantined.height,
            "fraud_rate": float(valid["tx_fraud"].mean() or 0.0),
        },
    )
    yield dg.Output(
        quarantined,
        output_name="quarantined_transactions",
        metadata={"reasons": dg.MetadataValue.md(markdown_table(reasons.head(20)))},
    )
    yield from _validation_checks(valid, per_day, config.max_quarantine_rate, context)


def _validation_checks(valid: pl.DataFrame, per_day: pl.DataFrame, max_rate: float, context):
    try:
        ValidatedTransaction.validate(valid, lazy=True)
        failures, detail = 0, "ok"
    except SchemaErrors as exc:
        failures, detail = len(exc.failure_cases), str(exc)[:2000]
    yield dg.AssetCheckResult(
        check_name="schema_valid",
        asset_key="validated_transactions",
        passed=failures == 0,
        metadata={"failures": failures, "detail": detail},
    )

    too_many = per_day.filter(pl.col("quarantine_rate") > max_rate)
    yield dg.AssetCheckResult(
        check_name="quarantine_rate_below_threshold",
        asset_key="validated_transactions",
        passed=too_many.height == 0,
        metadata={
            "max_quarantine_rate": max_rate,
            "worst_rate": float(per_day["quarantine_rate"].max() or 0.0),
            "days_over_limit": [d.isoformat() for d in too_many["partition_date"]],
        },
    )

    duplicates = valid.height - valid["transaction_id"].n_unique()
    yield dg.AssetCheckResult(
        check_name="transaction_ids_unique",
        asset_key="validated_transactions",
        passed=duplicates == 0,
        metadata={"duplicate_ids": duplicates},
    )

    first, last = partition_days(context)
    days = valid["tx_datetime"].dt.date()
    outside = int(((days < first) | (days > last)).sum())
    yield dg.AssetCheckResult(
        check_name="timestamps_inside_day",
        asset_key="validated_transactions",
        passed=outside == 0,
        metadata={"rows_outside_their_day": outside},
    )
