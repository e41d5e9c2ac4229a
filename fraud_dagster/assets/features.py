"""Daily point-in-time features and the feature state the online service starts from."""

import datetime as dt

import dagster as dg
import polars as pl

from fraud_dagster import settings
from fraud_dagster.core.features import (
    DEFAULT_LABEL_DELAY,
    FEATURE_COLUMNS,
    FeatureSpec,
    batch_features,
)
from fraud_dagster.core.schema import POLARS_DTYPES as VALIDATED_DTYPES
from fraud_dagster.partitions import daily_partitions, window_days

HISTORY_DAYS = FeatureSpec(label_delay=DEFAULT_LABEL_DELAY).history_days()


class FeaturesConfig(dg.Config):
    label_delay_days: int = DEFAULT_LABEL_DELAY
    """A transaction's label is known this many days after the end of its day."""


@dg.multi_asset(
    outs={
        "transaction_features": dg.AssetOut(
            metadata={"partition_expr": "tx_datetime"},
            kinds={"polars", "parquet"},
            description="One row per validated transaction: its point-in-time features.",
        ),
        "feature_state": dg.AssetOut(
            metadata={"partition_expr": "state_date"},
            kinds={"polars", "parquet"},
            description="Customer and terminal aggregates at the end of the day: what the online"
            " service needs to compute the next day's features exactly as the batch does.",
        ),
    },
    ins={
        "validated_transactions": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-HISTORY_DAYS, allow_nonexistent_upstream_partitions=True
            ),
            metadata={"allow_missing_partitions": True},
        )
    },
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="features",
)
def transaction_features(
    context: dg.AssetExecutionContext, config: FeaturesConfig, validated_transactions: pl.DataFrame
):
    """Features for each day from its transactions and the state at the end of the day before.

    Reads the validated days in the run plus the history window before them, not all history.
    """
    first, last = window_days(context.partition_time_window)
    spec = FeatureSpec(label_delay=config.label_delay_days)
    if spec.history_days() > HISTORY_DAYS:
        raise dg.Failure(
            f"label_delay_days={config.label_delay_days} needs {spec.history_days()} days of"
            f" history; this asset reads {HISTORY_DAYS}"
        )
    if validated_transactions.width == 0:
        validated_transactions = pl.DataFrame(schema=VALIDATED_DTYPES)
    window_first = max(first - dt.timedelta(days=HISTORY_DAYS), settings.start_date())
    days_present = validated_transactions["tx_datetime"].dt.date().n_unique()
    features, state = batch_features(validated_transactions, first, last, spec)
    yield dg.Output(
        features,
        output_name="transaction_features",
        metadata={
            "history_rows_read": validated_transactions.height,
            "history_days_without_rows": (last - window_first).days + 1 - days_present,
            "features": len(FEATURE_COLUMNS),
        },
    )
    yield dg.Output(state, output_name="feature_state")
