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

DAYS_PER_RUN_AT_SCALE_1 = 183
"""The longest backfill run at the simulator's own size: all of its 183 days in one, as measured
(README, "Benchmark figures")."""


def backfill_policy_for(scale: int) -> dg.BackfillPolicy:
    """How a UI backfill of the daily transactions and features is cut into runs, from the data
    size (``FRAUD_SIMULATOR_SCALE``): one run at the simulator's own size; at ``scale`` times
    the transactions a day, runs of at most ``DAYS_PER_RUN_AT_SCALE_1 // scale`` days, so a run
    holds about as many rows, and as much memory, whatever the scale (each features run also
    reads its 37 days of history)."""
    if scale <= 1:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=max(1, DAYS_PER_RUN_AT_SCALE_1 // scale))


daily_backfill_policy = backfill_policy_for(settings.simulator_scale())


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
