"""Fraud labels as data: each day's label reports (``fraud_labels``), partitioned by the day they
were made, and the ones quarantined (``quarantined_labels``). See ``core.labels`` for the rules."""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from fraud_dagster import settings
from fraud_dagster.core.labels import (
    LABEL_DTYPES,
    REPORT_DTYPES,
    delivered_reports,
    report_window,
    split_reports,
)
from fraud_dagster.assets.transactions import VALIDATED, LandingFileToTake
from fraud_dagster.io_managers import daily_table
from fraud_dagster.partitions import daily_backfill_policy, daily_partitions, window_days
from fraud_dagster.resources import DailyTables, LandingSource, TransactionSource
from fraud_dagster.metadata import as_table

FRAUD_LABELS = dg.AssetKey("fraud_labels")


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def read_labels(tables: DailyTables, first: dt.date, last: dt.date) -> pl.DataFrame:
    """The accepted reports made on ``first``..``last`` that are stored (``LABEL_DTYPES``)."""
    first = max(first, settings.start_date())
    frame, _ = tables.read_existing_days(FRAUD_LABELS, _days(first, last)) if first <= last else (
        pl.DataFrame(), [])
    return frame.select(list(LABEL_DTYPES)) if frame.width else pl.DataFrame(schema=LABEL_DTYPES)


class FraudLabelsConfig(dg.Config):
    label_files: list[LandingFileToTake] = Field(
        default=[],
        description="Set by `landing_sensor`: new label files at the top of `<landing>/labels/`"
        " to take, by name and content. Empty (a backfill from the UI) reads what is already"
        " accepted.")


@dg.multi_asset(
    outs={
        "fraud_labels": daily_table(
            "reported_at", "The label reports made on the day (fraud 1 or genuine 0), each with"
            " its transaction's time, customer and terminal. What training, evaluation and the"
            " known-fraud features know, as of any day."),
        "quarantined_labels": daily_table(
            "report_day", "Label reports that broke a rule (unknown transaction, conflicting or"
            " repeated label, bad value), each with every reason."),
    },
    ins={"validated_transactions": dg.AssetIn()},
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    group_name="transactions",
)
def fraud_labels(
    context: dg.AssetExecutionContext, config: FraudLabelsConfig,
    validated_transactions: pl.DataFrame, daily_tables: DailyTables,
    transaction_source: TransactionSource,
):
    """The reports made on each day: the labels that transaction deliveries of the 60 days up
    to it carry and that fall due on it, and (landing folder) the label files of the day in
    ``labels/``. Reads those validated days and the reports accepted on the days before (through
    DailyTables: a declared 60-day mapping would make every UI backfill reach 60 days past its
    range). Label files named in the config move into ``labels/_accepted/<day>/`` only after
    the reports are stored."""
    first, last = window_days(context.partition_time_window)
    delivery = None
    if isinstance(transaction_source, LandingSource):
        take = [(f.name, f.sha256, dt.date.fromisoformat(f.day)) for f in config.label_files]
        delivery = transaction_source.read_label_delivery(first, last, take)
        for name, why in delivery.skipped:
            context.log.warning(f"label file {name} not taken: {why}")
    elif config.label_files:
        raise dg.Failure("label_files are given but FRAUD_SOURCE is not 'landing'")
    window_first, _ = report_window(first)
    window_first = max(window_first, settings.start_date())
    before = [d for d in _days(window_first, first - dt.timedelta(days=1))]
    history, _ = daily_tables.read_existing_days(VALIDATED, before)
    transactions = pl.concat([*([history] if history.width else []), validated_transactions],
                             how="diagonal_relaxed")
    candidates = delivered_reports(transactions).with_columns(
        _day=pl.col("reported_at").dt.date(), parse_errors=pl.lit(None, pl.Utf8))
    if delivery is not None:
        filed = delivery.transactions.rename({"partition_date": "_day"})
        candidates = pl.concat([candidates, filed], how="diagonal_relaxed")
    earlier = read_labels(daily_tables, window_first, first - dt.timedelta(days=1))
    accepted, quarantined = [], []
    for day in _days(first, last):
        due = candidates.filter(pl.col("_day") == day)
        window = report_window(day)
        split = split_reports(
            due.select(*REPORT_DTYPES, "parse_errors"), day,
            transactions.filter(pl.col("tx_datetime").dt.date().is_between(*window)),
            earlier,
        )
        accepted.append(split.accepted)
        quarantined.append(split.quarantined)
        earlier = pl.concat([earlier, split.accepted])
    accepted, quarantined = pl.concat(accepted), pl.concat(quarantined)
    reasons = quarantined.group_by("quarantine_reason").agg(pl.len().alias("reports")).sort(
        "reports", descending=True)
    yield dg.Output(
        accepted, output_name="fraud_labels",
        metadata={"reports": accepted.height,
                  "frauds": int((accepted["tx_fraud"] == 1).sum()),
                  "quarantined_reports": quarantined.height},
    )
    yield dg.Output(
        quarantined, output_name="quarantined_labels",
        metadata={"reasons": as_table(reasons.head(20))},
    )
    if delivery is not None and delivery.taken:
        moved, left = transaction_source.commit_labels(delivery)
        for path in moved:
            context.log.info(f"accepted {path}")
        for name, why in left:
            context.log.warning(f"label file {name} left at the top: {why}")
