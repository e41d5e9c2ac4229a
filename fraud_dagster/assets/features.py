"""Daily point-in-time features and the feature state the online service starts from."""

import datetime as dt

import dagster as dg
import polars as pl

from fraud_dagster import settings
from fraud_dagster.assets.labels import FRAUD_LABELS, read_labels
from fraud_dagster.assets.transactions import VALIDATED
from fraud_dagster.core.features import FEATURE_COLUMNS, FeatureSpec, batch_features
from fraud_dagster.core.schema import POLARS_DTYPES as VALIDATED_DTYPES
from fraud_dagster.io_managers import daily_table
from fraud_dagster.resources import DailyTables
from fraud_dagster.partitions import daily_backfill_policy, daily_partitions, window_days

FEATURES = dg.AssetKey("transaction_features")
FEATURE_STATE = dg.AssetKey("feature_state")
HISTORY_DAYS = FeatureSpec().history_days()


@dg.multi_asset(
    outs={
        "transaction_features": daily_table(
            "tx_datetime", "One row per validated transaction: its point-in-time features.",
            is_required=False),
        "feature_state": daily_table(
            "state_date", "Customer and terminal aggregates at the end of the day: what the online"
            " service needs to compute the next day's features exactly as the batch does.",
            is_required=False),
    },
    # The run's own days only. The history window before them is read through DailyTables:
    # declared as a TimeWindowPartitionMapping(start_offset=-HISTORY_DAYS), it made every UI
    # backfill of a date range extend this asset and drift_report HISTORY_DAYS past the range
    # (Dagster's asset backfill targets every downstream day that reads a targeted upstream day),
    # computing features and a feature_state for days that were never ingested.
    ins={"validated_transactions": dg.AssetIn()},
    # The reports made up to each day: the day's own are read here, the earlier ones (and the
    # history window's transactions) through DailyTables.
    deps=[FRAUD_LABELS],
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    group_name="features",
    # Either may be materialised alone (the other is computed and not stored). Bound together,
    # the UI's backfills of both were refused at random (fraud_dagster_tests/test_ui_backfill.py).
    can_subset=True,
)
def transaction_features(
    context: dg.AssetExecutionContext,
    validated_transactions: pl.DataFrame,
    daily_tables: DailyTables,
):
    """Features for each day from its transactions and the state at the end of the day before.

    Reads the validated days in the run plus the history window before them, not all history;
    history days never ingested (a fresh project, a landing folder with gaps) are reported.
    """
    first, last = window_days(context.partition_time_window)
    window_first = max(first - dt.timedelta(days=HISTORY_DAYS), settings.start_date())
    history_days = [window_first + dt.timedelta(days=i) for i in range((first - window_first).days)]
    history, missing = daily_tables.read_existing_days(VALIDATED, history_days)
    if missing:
        context.log.warning(f"{len(missing)} of the {len(history_days)} history days before"
                            f" {first} were never ingested: {[d.isoformat() for d in missing[:10]]}")
    frames = [frame for frame in (history, validated_transactions) if frame.width]
    validated_transactions = pl.concat(frames) if frames else pl.DataFrame(schema=VALIDATED_DTYPES)
    days_present = validated_transactions["tx_datetime"].dt.date().n_unique()
    labels = read_labels(daily_tables, window_first, last)
    features, state = batch_features(validated_transactions, first, last, labels=labels)
    selected = context.op_execution_context.selected_output_names
    if "transaction_features" in selected:
        yield dg.Output(
            features,
            output_name="transaction_features",
            metadata={
                "history_rows_read": validated_transactions.height,
                "label_reports_read": labels.height,
                "history_days_without_rows": (last - window_first).days + 1 - days_present,
                "features": len(FEATURE_COLUMNS),
            },
        )
    if "feature_state" in selected:
        yield dg.Output(state, output_name="feature_state")
