"""Daily transactions: raw from the configured source, then validated or quarantined."""

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type

from fraud_dagster.core.reporting import markdown_table
from fraud_dagster.core.schema import QuarantinedTransaction, RawTransaction, ValidatedTransaction
from fraud_dagster.core.validation import split_transactions
from fraud_dagster.partitions import daily_partitions, window_days
from fraud_dagster.resources import TransactionSource

GROUP = "transactions"
DAILY = dict(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
)


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
    first, last = window_days(context.partition_time_window)
    raw = transaction_source.read_days(first, last)
    context.add_output_metadata(
        {
            "days": (last - first).days + 1,
            "fraud_rate": float(raw["tx_fraud"].mean() or 0.0),
            "source": type(transaction_source).__name__,
        }
    )
    return raw


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
    **DAILY,
)
def validated_transactions(raw_transactions: pl.DataFrame):
    """Split raw rows by the row rules; raw rows = validated + quarantined, always."""
    split = split_transactions(raw_transactions)
    valid, quarantined = split.validated, split.quarantined
    if valid.height + quarantined.height != raw_transactions.height:
        raise dg.DagsterInvariantViolationError("validation lost or duplicated rows")

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
