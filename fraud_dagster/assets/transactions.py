"""Daily transactions: raw from the configured source, then validated or quarantined."""

import datetime as dt

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type
from pydantic import Field

from fraud_dagster.core.schema import QuarantinedTransaction, RawTransaction, ValidatedTransaction
from fraud_dagster.core.validation import split_transactions
from fraud_dagster.partitions import daily_backfill_policy, daily_partitions, window_days
from fraud_dagster.io_managers import daily_table
from fraud_dagster.resources import DailyTables, LandingSource, TransactionSource
from fraud_dagster.metadata import as_table

GROUP = "transactions"
VALIDATED = dg.AssetKey("validated_transactions")
"""The validated table's key, for the assets and checks that read it."""
DAILY = dict(
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    group_name=GROUP,
)


class LandingFileToTake(dg.Config):
    name: str = Field(description="File name at the top of the landing folder.")
    sha256: str = Field(description="SHA-256 of its content when the sensor decided to take it.")
    day: str = Field(description="The day (ISO date) it holds.")


class RawTransactionsConfig(dg.Config):
    landing_files: list[LandingFileToTake] = Field(
        default=[],
        description="Set by `landing_sensor`: new top-level landing files to ingest, by name and"
        " content. Empty (a backfill from the UI) reads what is already accepted.")


@dg.asset(
    dagster_type=pandera_schema_to_dagster_type(RawTransaction),
    metadata={"partition_expr": "partition_date"},
    kinds={"polars", "parquet"},
    **DAILY,
)
def raw_transactions(
    context: dg.AssetExecutionContext,
    config: RawTransactionsConfig,
    transaction_source: TransactionSource,
):
    """One day of card transactions, as delivered by the simulator or the landing folder.

    Landing files named in the config are moved into `_accepted/<day>/` only after the rows are
    stored (the code after `yield` runs once the IO manager has written them), so a failed run
    leaves them where they were, for a re-execution."""
    first, last = window_days(context.partition_time_window)
    delivery = None
    if config.landing_files:
        if not isinstance(transaction_source, LandingSource):
            raise dg.Failure("landing_files are given but FRAUD_SOURCE is not 'landing'")
        take = [(f.name, f.sha256, dt.date.fromisoformat(f.day)) for f in config.landing_files]
        delivery = transaction_source.read_delivery(first, last, take)
        raw = delivery.transactions
        for name, why in delivery.skipped:
            context.log.warning(f"landing file {name} not taken: {why}")
    else:
        raw = transaction_source.read_days(first, last)
    metadata = {
        "days": (last - first).days + 1,
        "labelled_rows": int(raw["tx_fraud"].is_not_null().sum()),
        "source": type(transaction_source).__name__,
    }
    if delivery is not None:
        metadata["landing_files_taken"] = [t.name for t in delivery.taken]
        metadata["landing_files_skipped"] = [f"{n}: {why}" for n, why in delivery.skipped]
    yield dg.Output(raw, metadata=metadata)
    if delivery is not None:
        moved, left = transaction_source.commit(delivery)
        for path in moved:
            context.log.info(f"accepted {path}")
        for name, why in left:
            context.log.warning(f"landing file {name} left at the top: {why}")


@dg.multi_asset(
    outs={
        "validated_transactions": daily_table(
            "tx_datetime", "Transactions that passed every row rule.", kinds=("pandera",),
            dagster_type=pandera_schema_to_dagster_type(ValidatedTransaction)),
        "quarantined_transactions": daily_table(
            "partition_date", "Raw rows that broke a row rule, each with every reason.",
            kinds=("pandera",), dagster_type=pandera_schema_to_dagster_type(QuarantinedTransaction)),
    },
    **DAILY,
)
def validated_transactions(
    context: dg.AssetExecutionContext, raw_transactions: pl.DataFrame, daily_tables: DailyTables
):
    """Split raw rows by the row rules; raw rows = validated + quarantined, always. An id already
    validated on a day outside this run is a duplicate (reads that column of every other stored
    day)."""
    first, last = window_days(context.partition_time_window)
    elsewhere = daily_tables.read_column_of_other_days(VALIDATED, "transaction_id", first, last)
    split = split_transactions(raw_transactions, validated_elsewhere=elsewhere)
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
            "ids_checked_from_other_days": elsewhere.height,
            "labelled_rows": int(valid["tx_fraud"].is_not_null().sum()),
        },
    )
    yield dg.Output(
        quarantined,
        output_name="quarantined_transactions",
        metadata={"reasons": as_table(reasons.head(20))},
    )
