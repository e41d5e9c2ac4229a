"""The feature state written the plain way, one day at a time: the reference that the vectorised
``states_for_days`` is tested against."""

import datetime as dt

import polars as pl

from fraud_dagster.core.features import (
    CUSTOMER_WINDOWS,
    KNOWN_FRAUD_WINDOW,
    TERMINAL_WINDOWS,
    FeatureSpec,
)


def _days_between(first: dt.date, last: dt.date) -> pl.Expr:
    return pl.col("day").is_between(first, last)


def state_as_of(daily: pl.DataFrame, as_of: dt.date, spec: FeatureSpec = FeatureSpec()) -> pl.DataFrame:
    """The feature state at the end of ``as_of``: what features for ``as_of + 1`` may use.

    One frame, ``entity`` saying what a row describes: ``customer`` rows (keyed by customer_id, the
    ``c_*`` sums) and ``terminal`` rows (keyed by terminal_id, the ``t_*`` sums).
    """
    one = dt.timedelta(days=1)
    customer_aggs = []
    for w in CUSTOMER_WINDOWS:
        inside = _days_between(as_of - (w - 1) * one, as_of)
        customer_aggs += [
            pl.col("n").filter(inside).sum().alias(f"c_n_{w}d"),
            pl.col("amount").filter(inside).sum().alias(f"c_amount_{w}d"),
            pl.col("amount_sq").filter(inside).sum().alias(f"c_amount_sq_{w}d"),
        ]
    # A transaction of day X has its label from the end of day X + label_delay on.
    known_last = as_of - spec.label_delay * one
    customer_aggs.append(
        pl.col("frauds").filter(_days_between(known_last - (KNOWN_FRAUD_WINDOW - 1) * one, known_last))
        .sum()
        .alias("c_frauds_known_30d")
    )
    recent = daily.filter(_days_between(as_of - (spec.history_days() - 1) * one, as_of))
    customers = recent.group_by("customer_id").agg(customer_aggs)

    terminal_aggs = []
    for w in TERMINAL_WINDOWS:
        inside = _days_between(known_last - (w - 1) * one, known_last)
        terminal_aggs += [
            pl.col("n").filter(inside).sum().alias(f"t_n_{w}d"),
            pl.col("frauds").filter(inside).sum().alias(f"t_frauds_{w}d"),
        ]
    terminals = recent.group_by("terminal_id").agg(terminal_aggs)
    return pl.concat(
        [
            customers.with_columns(entity=pl.lit("customer")),
            terminals.with_columns(entity=pl.lit("terminal")),
        ],
        how="diagonal_relaxed",
    ).with_columns(state_date=pl.lit(as_of))
