"""The daily partitions every daily asset shares."""

import datetime as dt

import dagster as dg

from fraud_dagster import settings


def daily_partitions_definition() -> dg.DailyPartitionsDefinition:
    end = settings.end_date()
    return dg.DailyPartitionsDefinition(
        start_date=settings.start_date().isoformat(),
        end_date=(end + dt.timedelta(days=1)).isoformat() if end else None,
    )


daily_partitions = daily_partitions_definition()


def window_days(window: dg.TimeWindow) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of a run's daily partition window."""
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def partition_range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    """Run tags that make one run materialise every day from ``first`` to ``last`` inclusive,
    as a single-run backfill does."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
