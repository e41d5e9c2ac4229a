"""Point-in-time transaction features, the same code for the batch asset and the online service.

A transaction on day D is described by its own fields and by aggregates of history up to the end of
day D-1 (labels only for days at least ``label_delay`` old). Those aggregates are the *feature
state as of D-1*: one row per customer and one per terminal seen lately.
``features_for_day(transactions, state)`` turns raw transactions and a state into features; the
batch path builds every day's state from history (``states_for_days``) and runs the same code on all
days at once, each transaction joined with the state of its own previous day; the online path loads
the state that the batch path stored. Nothing here knows about Dagster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
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


def feature_matrix(frame: pl.DataFrame, columns=FEATURE_COLUMNS) -> np.ndarray:
    """The model's input: ``columns`` of ``frame`` as a float64 matrix, in that order."""
    return frame.select(columns).to_numpy().astype(np.float64)
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
    """The feature state at the end of each day ``first``..``last``, in ``state_date`` order.

    The state at the end of day X is what features for day X+1 may use: one ``customer`` row per
    customer active in the last ``history_days`` (the ``c_*`` window sums, known frauds counted only
    for days at least ``label_delay`` old) and one ``terminal`` row per active terminal (the ``t_*``
    sums over windows ending ``label_delay`` days before X). Each entity's daily sums are laid on a
    dense grid of days, so every window is a fixed number of grid rows (counts as differences of
    running totals, amounts as polars rolling sums) and a backfill of months costs about as much as
    a few single days. Within a day come the customers by id, then the terminals by id, so each
    day's state is one contiguous block of rows.
    """
    history = spec.history_days()
    grid_days = pl.date_range(first - dt.timedelta(days=history), last, "1d", eager=True)
    n_grid, n_out = grid_days.len(), (last - first).days + 1
    known_shift = spec.label_delay

    def rolled(key: str, windows: dict[str, tuple[str, int, int]]) -> pl.DataFrame:
        keys = daily.get_column(key).unique().sort()
        n_keys = keys.len()

        def on_grid(frame: pl.DataFrame, columns: list[str], add: bool) -> dict[str, np.ndarray]:
            """``frame``'s columns summed onto the grid: one row per grid day and key, day by day
            (row = day_index * n_keys + key_index); 0 where a key has no transactions."""
            day = frame.select((pl.col("day") - grid_days[0]).dt.total_days()).to_series()
            day = day.to_numpy()
            inside = (day >= 0) & (day < n_grid)
            key_index = frame.get_column(key).replace_strict(
                keys, pl.int_range(0, n_keys, eager=True), return_dtype=pl.Int64
            )
            rows = day[inside] * n_keys + key_index.to_numpy()[inside]
            grids = {}
            for c in columns:
                values = frame.get_column(c).to_numpy()[inside]
                grids[c] = np.zeros(n_grid * n_keys, dtype=values.dtype)
                if add:
                    np.add.at(grids[c], rows, values)
                else:  # one row per (key, day)
                    grids[c][rows] = values
                grids[c] = grids[c].reshape(n_grid, n_keys)
            return grids

        used = {column for column, _, _ in windows.values()} | {"n"}
        floats = [c for c in _DAILY_SUMS if c in used and daily.schema[c].is_float()]
        # Integer sums are exact in any order: summed straight onto the grid, and their windows
        # are differences of running totals along each key's days.
        ints = [c for c in _DAILY_SUMS if c in used and c not in floats]
        totals = {}
        for c, grid in on_grid(daily, ints, add=True).items():
            running = grid.cumsum(axis=0)
            totals[c] = np.concatenate([np.zeros((1, n_keys), running.dtype), running])
        ends = np.arange(n_grid - n_out, n_grid)  # the grid days first..last

        def window(c: str, w: int, shift: int) -> np.ndarray:
            """Sums over the w days ending ``shift`` days before each output day, day by day."""
            last_day = ends - shift
            return (totals[c][last_day + 1] - totals[c][np.maximum(last_day + 1 - w, 0)]).ravel()

        out = pl.int_range(0, n_keys * n_out, eager=True)
        columns = {key: keys.gather(out % n_keys)}
        if floats:
            # Float sums keep polars' grouped sums and its (compensated) rolling sums, over a
            # key-by-key copy of the grid.
            per_day = daily.group_by(key, "day").agg(pl.col(c).sum() for c in floats)
            grid = pl.DataFrame(
                {key: keys.gather(pl.int_range(0, n_keys * n_grid, eager=True) // n_grid)}
                | {c: g.T.ravel() for c, g in on_grid(per_day, floats, add=False).items()}
            )
            rolled_floats = grid.select(
                pl.col(column).rolling_sum(w, min_samples=1).shift(shift).over(key).alias(name)
                for name, (column, w, shift) in windows.items()
                if column in floats
            ).gather((out % n_keys) * n_grid + (n_grid - n_out) + out // n_keys)
        for name, (column, w, shift) in windows.items():
            columns[name] = (
                rolled_floats.get_column(name) if column in floats else window(column, w, shift)
            )
        active = window("n", history, 0) > 0
        return (
            pl.DataFrame(columns)
            .with_columns(state_date=grid_days.gather(n_grid - n_out + out // n_keys))
            .filter(active)
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
    customers = rolled("customer_id", customer_windows).with_columns(entity=pl.lit("customer"))
    terminals = rolled("terminal_id", terminal_windows).with_columns(entity=pl.lit("terminal"))
    # Interleave the two day by day: slices of both, concatenated without copying.
    days = grid_days[n_grid - n_out:]
    blocks = []
    for part in (customers, terminals):
        counts = part.get_column("state_date").value_counts(sort=False)
        rows_of = dict(zip(counts["state_date"], counts["count"], strict=True))
        offsets, start = {}, 0
        for day in days:
            offsets[day] = (start, rows_of.get(day, 0))
            start += rows_of.get(day, 0)
        blocks.append((part, offsets))
    slices = [frame.slice(*offsets[day]) for day in days for frame, offsets in blocks]
    return pl.concat(slices or [customers, terminals], how="diagonal_relaxed")


def _std(n: pl.Expr, total: pl.Expr, total_sq: pl.Expr) -> pl.Expr:
    variance = (total_sq - total * total / n) / n
    return pl.when(n > 0).then(variance.clip(lower_bound=0).sqrt()).otherwise(0.0)


def features_for_day(transactions: pl.DataFrame, state: pl.DataFrame) -> pl.DataFrame:
    """Features of raw transactions given the state as of the end of the previous day.

    Unknown customers and terminals get counts of 0, means and risks of 0, and
    ``amount_to_customer_mean_30d`` of 0: the same for the batch and the online path.
    """
    return _features(transactions, state)


def _features(
    transactions: pl.DataFrame, state: pl.DataFrame, on: tuple[str, ...] = ()
) -> pl.DataFrame:
    """``features_for_day``, the state joined on each entity's id and on the columns ``on`` too (the
    batch path joins every transaction with the state of its own previous day in one go). Rows keep
    the order of ``transactions``."""
    customers = state.filter(pl.col("entity") == "customer").select(
        "customer_id", *on, pl.selectors.starts_with("c_")
    )
    terminals = state.filter(pl.col("entity") == "terminal").select(
        "terminal_id", *on, pl.selectors.starts_with("t_")
    )
    frame = (
        transactions.select(*KEY_COLUMNS, "tx_amount", *on)
        .join(customers, on=["customer_id", *on], how="left", maintain_order="left")
        .join(terminals, on=["terminal_id", *on], how="left", maintain_order="left")
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
    day's features see only the state as of the day before, as the online service does: the same
    computation as ``features_for_day`` for each day, done for all days at once. Rows come day by
    day, in their order in ``history`` within a day; states in ``state_date`` order.
    """
    states = states_for_days(daily_aggregates(history), first - dt.timedelta(days=1), last, spec)
    day = pl.col("tx_datetime").dt.date()
    transactions = history.filter(day.is_between(first, last))
    if not transactions.get_column("tx_datetime").dt.date().is_sorted():
        transactions = transactions.sort(day, maintain_order=True)
    features = _features(
        transactions.with_columns(_state_date=day - dt.timedelta(days=1)),
        states.rename({"state_date": "_state_date"}),
        on=("_state_date",),
    )
    # states is in state_date order: the day before ``first`` is its first rows.
    before = (states.get_column("state_date") < first).sum()
    return features, states.slice(before)
