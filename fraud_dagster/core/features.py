"""Point-in-time transaction features, the same code for the batch asset and the online service.

A transaction on day D is described by its own fields and by aggregates of history up to the end of
day D-1 (labels only for days at least ``label_delay`` old). Those aggregates are the *feature
state as of D-1*: one row per customer and one per terminal seen lately.
``features_for_day(transactions, state)`` is the one function that turns raw transactions and a state
into features; the batch path builds every day's state from history (``states_for_days``), the online
path loads the state that the batch path stored. Nothing here knows about Dagster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

CUSTOMER_WINDOWS = (1, 7, 30)
TERMINAL_WINDOWS = (1, 7, 30)
KNOWN_FRAUD_WINDOW = 30
DEFAULT_LABEL_DELAY = 7


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    label_delay: int = DEFAULT_LABEL_DELAY

    def history_days(self) -> int:
        """How many days before D the state for D needs."""
        return max(max(CUSTOMER_WINDOWS), KNOWN_FRAUD_WINDOW, self.label_delay + max(TERMINAL_WINDOWS))


FEATURE_COLUMNS = (
    "tx_amount",
    "tx_hour",
    "tx_is_weekend",
    "tx_is_night",
    *(f"customer_nb_tx_{w}d" for w in CUSTOMER_WINDOWS),
    *(f"customer_mean_amount_{w}d" for w in CUSTOMER_WINDOWS),
    *(f"customer_std_amount_{w}d" for w in CUSTOMER_WINDOWS),
    "amount_to_customer_mean_30d",
    "amount_zscore_30d",
    "customer_frauds_known_30d",
    *(f"terminal_nb_tx_{w}d_delayed" for w in TERMINAL_WINDOWS),
    *(f"terminal_risk_{w}d_delayed" for w in TERMINAL_WINDOWS),
)
KEY_COLUMNS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id")
_DAILY_SUMS = ("n", "amount", "amount_sq", "frauds")


def daily_aggregates(transactions: pl.DataFrame) -> pl.DataFrame:
    """Per (customer, terminal, day): count, amount sum and sum of squares, known frauds.

    Everything the state needs is a sum over days of these, so a state for any day is cheap.
    """
    return (
        transactions.lazy()
        .group_by("customer_id", "terminal_id", pl.col("tx_datetime").dt.date().alias("day"))
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("tx_amount").sum().alias("amount"),
            (pl.col("tx_amount") ** 2).sum().alias("amount_sq"),
            pl.col("tx_fraud").fill_null(0).cast(pl.Int64).sum().alias("frauds"),
        )
        .collect()
    )


def states_for_days(
    daily: pl.DataFrame, first: dt.date, last: dt.date, spec: FeatureSpec = FeatureSpec()
) -> pl.DataFrame:
    """The feature state at the end of each day ``first``..``last``.

    The state at the end of day X is what features for day X+1 may use: one ``customer`` row per
    customer active in the last ``history_days`` (the ``c_*`` window sums, known frauds counted only
    for days at least ``label_delay`` old) and one ``terminal`` row per active terminal (the ``t_*``
    sums over windows ending ``label_delay`` days before X). Each entity's daily sums are laid on a
    dense day grid, so every window is a rolling sum over a fixed number of rows and a backfill of
    months costs about as much as a few single days.
    """
    history = spec.history_days()
    grid_days = pl.date_range(first - dt.timedelta(days=history), last, "1d", eager=True).alias("day")
    known_shift = spec.label_delay

    def rolled(key: str, windows: dict[str, tuple[str, int, int]]) -> pl.DataFrame:
        per_day = daily.group_by(key, "day").agg(pl.col(c).sum() for c in _DAILY_SUMS)
        grid = (
            per_day.select(key).unique().join(grid_days.to_frame(), how="cross")
            .join(per_day, on=[key, "day"], how="left")
            .with_columns(pl.col(c).fill_null(0) for c in _DAILY_SUMS)
            .sort(key, "day")
        )
        exprs = [
            pl.col(column).rolling_sum(w, min_samples=1).shift(shift).over(key).alias(name)
            for name, (column, w, shift) in windows.items()
        ]
        active = pl.col("n").rolling_sum(history, min_samples=1).over(key) > 0
        return (
            grid.with_columns(*exprs, active.alias("_active"))
            .filter(pl.col("day").is_between(first, last) & pl.col("_active"))
            .select(key, *windows, pl.col("day").alias("state_date"))
        )

    customer_windows = {}
    for w in CUSTOMER_WINDOWS:
        customer_windows |= {
            f"c_n_{w}d": ("n", w, 0),
            f"c_amount_{w}d": ("amount", w, 0),
            f"c_amount_sq_{w}d": ("amount_sq", w, 0),
        }
    customer_windows["c_frauds_known_30d"] = ("frauds", KNOWN_FRAUD_WINDOW, known_shift)
    terminal_windows = {}
    for w in TERMINAL_WINDOWS:
        terminal_windows |= {
            f"t_n_{w}d": ("n", w, known_shift),
            f"t_frauds_{w}d": ("frauds", w, known_shift),
        }
    customers = rolled("customer_id", customer_windows)
    terminals = rolled("terminal_id", terminal_windows)
    return pl.concat(
        [
            customers.with_columns(entity=pl.lit("customer")),
            terminals.with_columns(entity=pl.lit("terminal")),
        ],
        how="diagonal_relaxed",
    )


def _std(n: pl.Expr, total: pl.Expr, total_sq: pl.Expr) -> pl.Expr:
    variance = (total_sq - total * total / n) / n
    return pl.when(n > 0).then(variance.clip(lower_bound=0).sqrt()).otherwise(0.0)


def features_for_day(transactions: pl.DataFrame, state: pl.DataFrame) -> pl.DataFrame:
    """Features of raw transactions given the state as of the end of the previous day.

    Unknown customers and terminals get counts of 0, means and risks of 0, and
    ``amount_to_customer_mean_30d`` of 0: the same for the batch and the online path.
    """
    customers = state.filter(pl.col("entity") == "customer").select(
        "customer_id", pl.selectors.starts_with("c_")
    )
    terminals = state.filter(pl.col("entity") == "terminal").select(
        "terminal_id", pl.selectors.starts_with("t_")
    )
    frame = (
        transactions.select(*KEY_COLUMNS, "tx_amount")
        .join(customers, on="customer_id", how="left")
        .join(terminals, on="terminal_id", how="left")
    )
    frame = frame.with_columns(pl.selectors.starts_with("c_", "t_").fill_null(0))
    seconds = (
        pl.col("tx_datetime").dt.hour().cast(pl.Float64) * 3600
        # Int8 minutes would wrap at 3 * 60 > 127: widen before multiplying.
        + pl.col("tx_datetime").dt.minute().cast(pl.Float64) * 60
        + pl.col("tx_datetime").dt.second()
    )
    exprs = [
        (seconds / 3600).alias("tx_hour"),
        (pl.col("tx_datetime").dt.weekday() >= 6).cast(pl.Float64).alias("tx_is_weekend"),
        (pl.col("tx_datetime").dt.hour() < 6).cast(pl.Float64).alias("tx_is_night"),
    ]
    for w in CUSTOMER_WINDOWS:
        n, total, sq = pl.col(f"c_n_{w}d"), pl.col(f"c_amount_{w}d"), pl.col(f"c_amount_sq_{w}d")
        exprs += [
            n.cast(pl.Float64).alias(f"customer_nb_tx_{w}d"),
            pl.when(n > 0).then(total / n).otherwise(0.0).alias(f"customer_mean_amount_{w}d"),
            _std(n, total, sq).alias(f"customer_std_amount_{w}d"),
        ]
    for w in TERMINAL_WINDOWS:
        n, frauds = pl.col(f"t_n_{w}d"), pl.col(f"t_frauds_{w}d")
        exprs += [
            n.cast(pl.Float64).alias(f"terminal_nb_tx_{w}d_delayed"),
            pl.when(n > 0).then(frauds / n).otherwise(0.0).alias(f"terminal_risk_{w}d_delayed"),
        ]
    exprs.append(pl.col("c_frauds_known_30d").cast(pl.Float64).alias("customer_frauds_known_30d"))
    frame = frame.with_columns(exprs)
    mean30, std30 = pl.col("customer_mean_amount_30d"), pl.col("customer_std_amount_30d")
    frame = frame.with_columns(
        pl.when(mean30 > 0).then(pl.col("tx_amount") / mean30).otherwise(0.0)
        .alias("amount_to_customer_mean_30d"),
        pl.when(std30 > 0).then((pl.col("tx_amount") - mean30) / std30).otherwise(0.0)
        .alias("amount_zscore_30d"),
    )
    return frame.select(*KEY_COLUMNS, *FEATURE_COLUMNS)


def batch_features(
    history: pl.DataFrame, first: dt.date, last: dt.date, spec: FeatureSpec = FeatureSpec()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Features for every transaction of days ``first``..``last`` and the state at the end of each.

    ``history`` holds validated transactions from ``first - spec.history_days()`` to ``last``; each
    day's features see only the state as of the day before, as the online service does.
    """
    states = states_for_days(daily_aggregates(history), first - dt.timedelta(days=1), last, spec)
    states_by_day = states.partition_by("state_date", as_dict=True)
    by_day = history.with_columns(_day=pl.col("tx_datetime").dt.date()).partition_by(
        "_day", as_dict=True, include_key=False
    )
    features = []
    day = first
    while day <= last:
        previous = states_by_day.get((day - dt.timedelta(days=1),), states.clear())
        features.append(features_for_day(by_day.get((day,), history.clear()), previous))
        day += dt.timedelta(days=1)
    return pl.concat(features), states.filter(pl.col("state_date") >= first)
