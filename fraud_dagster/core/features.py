"""Point-in-time transaction features: one definition for the batch asset and the online service.

A transaction at time t on day D of customer c at terminal T is described by

- its own fields: amount, hour of day, night, weekend;
- **customer windows that end at t**: all of c's transactions strictly before t count (equal
  timestamps do not see each other). ``customer_*_{w}d`` covers the w calendar days ending with D:
  the w-1 whole days before D and D from midnight up to t (so ``_1d`` is "since midnight");
  ``customer_*_1h`` covers [t - 1 h, t), ``customer_nb_terminals_24h`` [t - 24 h, t);
  ``customer_seconds_since_previous`` is t minus c's latest earlier transaction, at most 30 days;
- **known frauds, as of the end of D-1** (labels are reports, ``core.labels``): c's transactions
  of the 30 days ending D-1 reported as fraud by the end of D-1; terminal T's counts over 1, 7 and
  30 days ending ``label_delay`` (``LABEL_MATURITY_DAYS``) days before D-1, and the share of
  them reported as fraud by the end of D-1: the windows end that far back so that every
  transaction in them has matured (an unreported one counts as genuine).

Amounts are aggregated in whole cents, as integers, so every sum is exact whatever the order it
is added in: the batch path and the online path, which add differently, give the same bits.

The *feature state* at the end of day S (``feature_states``) holds what features for day S+1
need besides that day's own earlier transactions: a ``customer`` row per recently active customer
(whole-day window sums, known frauds, latest transaction), a ``terminal`` row per terminal, and a
``transaction`` row per transaction of day S (the 1 h and 24 h windows reach back into it).
``features_for_day(transactions, state, earlier)`` gives features for transactions of day S+1
from the state and the day's earlier transactions; ``online_features`` computes one
transaction's features from the same inputs in plain Python (the service's single rows) and is
tested equal to it value by value. Nothing here knows about Dagster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

from fraud_dagster.core.labels import LABEL_DTYPES, LABEL_MATURITY_DAYS

CUSTOMER_WINDOWS = (1, 7, 30)
TERMINAL_WINDOWS = (1, 7, 30)
KNOWN_FRAUD_WINDOW = 30
MAX_SECONDS_SINCE_PREVIOUS = 30 * 86_400
"""``customer_seconds_since_previous`` when the customer has no transaction in the 30 days before."""
HOUR_US, DAY_US = 3_600 * 10**6, 86_400 * 10**6
_EPOCH = dt.datetime(1970, 1, 1)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    label_delay: int = LABEL_MATURITY_DAYS

    def history_days(self) -> int:
        """How many days up to S the state at the end of S is computed from."""
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
    "customer_amount_1d",
    "customer_nb_tx_1h",
    "customer_amount_1h",
    "customer_nb_terminals_24h",
    "customer_seconds_since_previous",
    "customer_frauds_known_30d",
    *(f"terminal_nb_tx_{w}d_delayed" for w in TERMINAL_WINDOWS),
    *(f"terminal_risk_{w}d_delayed" for w in TERMINAL_WINDOWS),
)
KEY_COLUMNS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id")
VELOCITY_COLUMNS = ("customer_amount_1d", "customer_nb_tx_1h", "customer_amount_1h",
                    "customer_nb_terminals_24h", "customer_seconds_since_previous")
"""The features that only exist because windows end at the transaction (the ablation's)."""

# The state's columns. Customer windows of w days take w-1 whole days from the state.
_PRIOR_DAYS = tuple(w - 1 for w in CUSTOMER_WINDOWS if w > 1)
CUSTOMER_STATE = (
    *(f"c_{s}_{d}d" for d in _PRIOR_DAYS for s in ("n", "cents", "cents_sq")),
    "c_frauds_known_30d",
    "c_last_tx",
)
TERMINAL_STATE = tuple(f"t_{s}_{w}d" for w in TERMINAL_WINDOWS for s in ("n", "frauds"))
EVENT_COLUMNS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_cents")
ENTITIES = ("customer", "terminal", "transaction")


def feature_matrix(frame: pl.DataFrame, columns=FEATURE_COLUMNS) -> np.ndarray:
    """The model's input: ``columns`` of ``frame`` as a float64 matrix, in that order."""
    return frame.select(columns).to_numpy().astype(np.float64)


def cents(amount: pl.Expr) -> pl.Expr:
    """An amount in whole cents, half a cent rounded up (``amount_cents`` in plain Python)."""
    return (amount * 100 + 0.5).floor().cast(pl.Int64)


def amount_cents(amount: float) -> int:
    return math.floor(amount * 100 + 0.5)


def _with_cents(transactions: pl.DataFrame) -> pl.DataFrame:
    return transactions.with_columns(tx_cents=cents(pl.col("tx_amount")))


# The state ------------------------------------------------------------------------------------


def daily_aggregates(transactions: pl.DataFrame) -> pl.DataFrame:
    """Per (customer, terminal, day): count, cents and cents squared, latest time.

    Every state column is a window sum (or the latest time) over days of these.
    """
    return (
        _with_cents(transactions).lazy()
        .group_by("customer_id", "terminal_id", pl.col("tx_datetime").dt.date().alias("day"))
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("tx_cents").sum().alias("cents"),
            (pl.col("tx_cents") * pl.col("tx_cents")).sum().alias("cents_sq"),
            pl.col("tx_datetime").max().alias("last_tx"),
        )
        .collect()
    )


def _windows(spec: FeatureSpec) -> dict[str, dict[str, tuple[str, int, int]]]:
    """Each state column as (daily sum, days, days before the state's day the window ends).
    ``frauds`` counts the window's transactions reported as fraud by the end of the state's day."""
    customer = {f"c_{s}_{d}d": (s, d, 0) for d in _PRIOR_DAYS for s in ("n", "cents", "cents_sq")}
    customer["c_frauds_known_30d"] = ("frauds", KNOWN_FRAUD_WINDOW, 0)
    terminal = {f"t_{s}_{w}d": (s, w, spec.label_delay)
                for w in TERMINAL_WINDOWS for s in ("n", "frauds")}
    return {"customer": customer, "terminal": terminal}


def fraud_reports(labels: pl.DataFrame | None) -> pl.DataFrame:
    """The fraud reports among accepted ``labels`` (``LABEL_DTYPES``; None: none reported), with
    their transaction's day and the day they were made."""
    if labels is None:
        labels = pl.DataFrame(schema=LABEL_DTYPES)
    return labels.filter(pl.col("tx_fraud") == 1).select(
        "customer_id", "terminal_id", tx_day=pl.col("tx_datetime").dt.date(),
        report_day=pl.col("reported_at").dt.date())


def state_as_of(transactions: pl.DataFrame, day: dt.date, spec: FeatureSpec = FeatureSpec(), *,
                labels: pl.DataFrame | None) -> pl.DataFrame:
    """The feature state at the end of ``day``, written plainly: the definition that the
    vectorised ``feature_states`` is tested against.

    A customer or terminal is in it when it has a transaction in the ``history_days`` ending
    ``day``; ``c_last_tx`` is the customer's latest transaction in the 30 days ending ``day``
    (null if none). ``frauds`` windows count the window's transactions with a fraud report in
    ``labels`` made by the end of ``day``.
    """
    daily = daily_aggregates(transactions)
    reports = fraud_reports(labels).filter(pl.col("report_day") <= day)
    one = dt.timedelta(days=1)

    def inside(days: int, shift: int, column: str = "day") -> pl.Expr:
        last = day - shift * one
        return pl.col(column).is_between(last - (days - 1) * one, last)

    recent = daily.filter(inside(spec.history_days(), 0))
    parts = []
    for entity, windows in _windows(spec).items():
        key = f"{entity}_id"
        aggs = [pl.col(s).filter(inside(d, shift)).sum().alias(name)
                for name, (s, d, shift) in windows.items() if s != "frauds"]
        if entity == "customer":
            aggs.append(pl.col("last_tx").filter(inside(MAX_SECONDS_SINCE_PREVIOUS // 86_400, 0))
                        .max().alias("c_last_tx"))
        rows = recent.group_by(key).agg(aggs)
        for name, (s, d, shift) in windows.items():
            if s == "frauds":
                known = (reports.filter(inside(d, shift, "tx_day")).group_by(key)
                         .agg(pl.len().cast(pl.Int64).alias(name)))
                rows = rows.join(known, on=key, how="left").with_columns(pl.col(name).fill_null(0))
        parts.append(rows.select(key, *windows, *(["c_last_tx"] if entity == "customer" else []))
                     .with_columns(entity=pl.lit(entity)))
    events = _with_cents(transactions).filter(pl.col("tx_datetime").dt.date() == day)
    parts.append(events.select(EVENT_COLUMNS).with_columns(entity=pl.lit("transaction")))
    return pl.concat(parts, how="diagonal_relaxed").with_columns(state_date=pl.lit(day))


def _entity_states(daily: pl.DataFrame, reports: pl.DataFrame, first: dt.date, last: dt.date,
                   spec: FeatureSpec) -> dict[str, pl.DataFrame]:
    """The customer and terminal rows of the states at the end of ``first``..``last``.

    Each entity's daily sums are laid on a dense grid of days (row = day, column = entity), so a
    window is a difference of two rows of running totals and a backfill of months costs about
    as much as a few single days. A fraud report (``fraud_reports``) counts in the state of day
    S from the later of its report day and the day its transaction enters the window, to the day
    it leaves it: a +1 and a -1 on the grid, summed up the days. Rows come day by day, by id
    within a day.
    """
    history = spec.history_days()
    grid_first = first - dt.timedelta(days=history)
    n_grid, n_out = (last - grid_first).days + 1, (last - first).days + 1
    ends = np.arange(n_grid - n_out, n_grid)  # the grid rows of first..last
    out_days = pl.date_range(first, last, "1d", eager=True)
    def index(frame: pl.DataFrame, column: str) -> np.ndarray:
        return frame.select((pl.col(column) - grid_first).dt.total_days()).to_series().to_numpy()

    day_index = index(daily, "day")
    inside = (day_index >= 0) & (day_index < n_grid)
    tx_index, report_index = index(reports, "tx_day"), index(reports, "report_day")
    states = {}
    for entity, windows in _windows(spec).items():
        key = f"{entity}_id"
        keys = daily.get_column(key).unique().sort()
        n_keys = keys.len()
        column = daily.get_column(key).replace_strict(
            keys, pl.int_range(0, n_keys, eager=True), return_dtype=pl.Int64).to_numpy()
        cells = day_index[inside] * n_keys + column[inside]

        def totals(values: np.ndarray) -> np.ndarray:
            grid = np.zeros(n_grid * n_keys, dtype=np.int64)
            np.add.at(grid, cells, values[inside])
            running = grid.reshape(n_grid, n_keys).cumsum(axis=0)
            return np.concatenate([np.zeros((1, n_keys), np.int64), running])

        sums = {s: totals(daily.get_column(s).to_numpy())
                for s in {s for s, _, _ in windows.values() if s != "frauds"} | {"n"}}

        def window(s: str, days: int, shift: int) -> np.ndarray:
            end = ends - shift
            return (sums[s][end + 1] - sums[s][np.maximum(end + 1 - days, 0)]).ravel()

        report_column = reports.get_column(key).replace_strict(
            keys, pl.int_range(0, n_keys, eager=True), default=-1, return_dtype=pl.Int64).to_numpy()

        def known(days: int, shift: int) -> np.ndarray:
            start = np.maximum(report_index, tx_index + shift)
            stop = tx_index + shift + days
            counted = (report_column >= 0) & (start < stop) & (stop > 0) & (start < n_grid)
            delta = np.zeros((n_grid + 1) * n_keys, dtype=np.int64)
            np.add.at(delta, np.maximum(start[counted], 0) * n_keys + report_column[counted], 1)
            np.add.at(delta, np.minimum(stop[counted], n_grid) * n_keys + report_column[counted], -1)
            return delta.reshape(n_grid + 1, n_keys).cumsum(axis=0)[ends].ravel()

        columns = {key: np.tile(keys.to_numpy(), n_out)}
        columns |= {name: known(d, shift) if s == "frauds" else window(s, d, shift)
                    for name, (s, d, shift) in windows.items()}
        frame = pl.DataFrame(columns).with_columns(
            state_date=out_days.gather(pl.int_range(0, n_keys * n_out, eager=True) // n_keys))
        if entity == "customer":
            latest = np.full(n_grid * n_keys, np.iinfo(np.int64).min)
            np.maximum.at(latest, cells,
                          daily.get_column("last_tx").dt.epoch("us").to_numpy()[inside])
            latest = np.maximum.accumulate(latest.reshape(n_grid, n_keys), axis=0)[ends].ravel()
            recent_days = MAX_SECONDS_SINCE_PREVIOUS // 86_400
            oldest = (pl.col("state_date") - dt.timedelta(days=recent_days - 1)).cast(pl.Datetime("us"))
            frame = frame.with_columns(c_last_tx=pl.Series(latest).cast(pl.Datetime("us")))
            frame = frame.with_columns(c_last_tx=pl.when(pl.col("c_last_tx") >= oldest)
                                       .then(pl.col("c_last_tx")))
        states[entity] = frame.filter(pl.Series(window("n", history, 0) > 0))
    return states


def feature_states(transactions: pl.DataFrame, first: dt.date, last: dt.date,
                   spec: FeatureSpec = FeatureSpec(), *, labels: pl.DataFrame | None
                   ) -> pl.DataFrame:
    """The feature state at the end of each day ``first``..``last`` (``transactions`` must hold
    the ``history_days`` before ``first`` too, ``labels`` the reports made up to ``last``), in
    ``state_date`` order; within a day the customers by id, the terminals by id, then the day's
    transactions, so that each day is one contiguous block of rows."""
    parts = _entity_states(daily_aggregates(transactions), fraud_reports(labels), first, last, spec)
    day = pl.col("tx_datetime").dt.date()
    parts["transaction"] = (_with_cents(transactions).filter(day.is_between(first, last))
                            .select(EVENT_COLUMNS, state_date=day))
    frames = {entity: frame.with_columns(entity=pl.lit(entity)).sort("state_date", maintain_order=True)
              for entity, frame in parts.items()}
    # Interleave the three day by day: slices, concatenated without copying.
    blocks = []
    for frame in frames.values():
        counts = dict(frame.get_column("state_date").value_counts(sort=False).iter_rows())
        offsets, start = {}, 0
        for day_ in pl.date_range(first, last, "1d", eager=True):
            offsets[day_] = (start, counts.get(day_, 0))
            start += counts.get(day_, 0)
        blocks.append((frame, offsets))
    slices = [frame.slice(*offsets[d]) for d in pl.date_range(first, last, "1d", eager=True)
              for frame, offsets in blocks]
    return pl.concat(slices, how="diagonal_relaxed")


# Features -------------------------------------------------------------------------------------


class _PolarsOps:
    where = staticmethod(lambda condition, then, otherwise: pl.when(condition).then(then)
                         .otherwise(otherwise))
    sqrt = staticmethod(lambda x: x.sqrt())
    float = staticmethod(lambda x: x.cast(pl.Float64))
    div = staticmethod(lambda a, b: a / b)


class _PythonOps:
    where = staticmethod(lambda condition, then, otherwise: then if condition else otherwise)
    sqrt = staticmethod(math.sqrt)
    float = staticmethod(float)
    # Where polars divides by 0 and throws the result away, plain Python must not divide.
    div = staticmethod(lambda a, b: a / b if b else 0.0)


def _derive(v: dict, ops) -> dict:
    """The features from their integer aggregates, written once for polars expressions and for
    plain numbers: the same operations in the same order give the same bits on both paths."""
    features = {
        "tx_amount": v["tx_amount"],
        "tx_hour": ops.float(v["second_of_day"]) * (1 / 3600),
        "tx_is_weekend": ops.float(v["weekday"] >= 6),
        "tx_is_night": ops.float(v["second_of_day"] < 6 * 3600),
    }
    for w in CUSTOMER_WINDOWS:
        n, total, sq = ops.float(v[f"n_{w}d"]), ops.float(v[f"cents_{w}d"]), ops.float(v[f"sq_{w}d"])
        mean_cents = ops.div(total, n)
        variance = ops.div(sq, n) - mean_cents * mean_cents
        std_cents = ops.sqrt(ops.where(variance > 0, variance, 0.0))
        features[f"customer_nb_tx_{w}d"] = n
        features[f"customer_mean_amount_{w}d"] = ops.where(v[f"n_{w}d"] > 0, mean_cents * 0.01, 0.0)
        features[f"customer_std_amount_{w}d"] = ops.where(v[f"n_{w}d"] > 0, std_cents * 0.01, 0.0)
    mean30, std30 = features["customer_mean_amount_30d"], features["customer_std_amount_30d"]
    features["amount_to_customer_mean_30d"] = ops.where(mean30 > 0, ops.div(v["tx_amount"], mean30), 0.0)
    features["amount_zscore_30d"] = ops.where(std30 > 0, ops.div(v["tx_amount"] - mean30, std30),
                                              0.0)
    features["customer_amount_1d"] = ops.float(v["cents_1d"]) * 0.01
    features["customer_nb_tx_1h"] = ops.float(v["n_1h"])
    features["customer_amount_1h"] = ops.float(v["cents_1h"]) * 0.01
    features["customer_nb_terminals_24h"] = ops.float(v["terminals_24h"])
    features["customer_seconds_since_previous"] = ops.float(v["since_previous"])
    features["customer_frauds_known_30d"] = ops.float(v["c_frauds_known_30d"])
    for w in TERMINAL_WINDOWS:
        n, frauds = v[f"t_n_{w}d"], v[f"t_frauds_{w}d"]
        features[f"terminal_nb_tx_{w}d_delayed"] = ops.float(n)
        features[f"terminal_risk_{w}d_delayed"] = ops.where(n > 0, ops.div(ops.float(frauds), ops.float(n)),
                                                           0.0)
    return features


def _recent_aggregates(queries: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """For each query (``_q``, customer, time): its customer's events in the 24 h before it, as
    the day's counts and cents so far, the last hour's, distinct terminals and the latest time.
    Events are matched on their own day and the day before, so only near pairs are formed."""
    q = queries.select("_q", "customer_id", "tx_datetime", _day=pl.col("tx_datetime").dt.date())
    e = events.select("customer_id", _ts=pl.col("tx_datetime"), _terminal=pl.col("terminal_id"),
                      _cents=pl.col("tx_cents"), _day=pl.col("tx_datetime").dt.date())
    pairs = pl.concat([
        q.join(e, on=["customer_id", "_day"]).with_columns(_today=pl.lit(True)),
        q.join(e.with_columns(pl.col("_day") + dt.timedelta(days=1)), on=["customer_id", "_day"])
        .with_columns(_today=pl.lit(False)),
    ])
    t = pl.col("tx_datetime")
    pairs = pairs.filter(pl.col("_ts") < t, pl.col("_ts") >= t - dt.timedelta(hours=24))
    hour = pl.col("_ts") >= t - dt.timedelta(hours=1)
    today = pl.col("_today")
    return pairs.group_by("_q").agg(
        r_n_today=today.sum().cast(pl.Int64),
        r_cents_today=pl.col("_cents").filter(today).sum(),
        r_sq_today=(pl.col("_cents") * pl.col("_cents")).filter(today).sum(),
        n_1h=hour.sum().cast(pl.Int64),
        cents_1h=pl.col("_cents").filter(hour).sum(),
        terminals_24h=pl.col("_terminal").n_unique().cast(pl.Int64),
        r_previous=pl.col("_ts").max(),
    )


def _features(queries: pl.DataFrame, customers: pl.DataFrame, terminals: pl.DataFrame,
              events: pl.DataFrame, on: tuple[str, ...] = ()) -> pl.DataFrame:
    """Features of ``queries`` (``KEY_COLUMNS``, ``tx_amount``), with the state rows of each
    entity joined on its id and the columns ``on`` (the batch joins every day with the state
    of its day before in one go), and ``events`` (``EVENT_COLUMNS`` of the queries' day and the
    day before). Rows keep the order of ``queries``."""
    queries = queries.with_row_index("_q")
    frame = (
        queries.select("_q", *KEY_COLUMNS, "tx_amount", *on)
        .join(customers.select("customer_id", *on, *CUSTOMER_STATE), on=["customer_id", *on],
              how="left", maintain_order="left")
        .join(terminals.select("terminal_id", *on, *TERMINAL_STATE), on=["terminal_id", *on],
              how="left", maintain_order="left")
        .join(_recent_aggregates(queries, events), on="_q", how="left", maintain_order="left")
    )
    counts = [c for c in (*CUSTOMER_STATE, *TERMINAL_STATE, "r_n_today", "r_cents_today",
                          "r_sq_today", "n_1h", "cents_1h", "terminals_24h") if c != "c_last_tx"]
    frame = frame.with_columns(pl.col(counts).fill_null(0))
    t = pl.col("tx_datetime")
    previous = pl.max_horizontal("r_previous", "c_last_tx")
    v = {
        "tx_amount": pl.col("tx_amount"),
        "second_of_day": (t - t.dt.truncate("1d")).dt.total_seconds(),
        "weekday": t.dt.weekday(),
        "n_1d": pl.col("r_n_today"), "cents_1d": pl.col("r_cents_today"),
        "sq_1d": pl.col("r_sq_today"),
        **{c: pl.col(c) for c in ("n_1h", "cents_1h", "terminals_24h", "c_frauds_known_30d",
                                  *TERMINAL_STATE)},
        "since_previous": pl.when(previous.is_null()).then(MAX_SECONDS_SINCE_PREVIOUS)
        .otherwise(pl.min_horizontal((t - previous).dt.total_seconds(),
                                     MAX_SECONDS_SINCE_PREVIOUS)),
    }
    for w, d in zip(CUSTOMER_WINDOWS[1:], _PRIOR_DAYS):
        v[f"n_{w}d"] = pl.col("r_n_today") + pl.col(f"c_n_{d}d")
        v[f"cents_{w}d"] = pl.col("r_cents_today") + pl.col(f"c_cents_{d}d")
        v[f"sq_{w}d"] = pl.col("r_sq_today") + pl.col(f"c_cents_sq_{d}d")
    features = _derive(v, _PolarsOps)
    return frame.select(*KEY_COLUMNS, *(features[name].alias(name) for name in FEATURE_COLUMNS))


class SplitState(NamedTuple):
    """A ``feature_state`` day's rows by entity."""

    customers: pl.DataFrame
    terminals: pl.DataFrame
    transactions: pl.DataFrame


def split_state(state: pl.DataFrame) -> SplitState:
    entity = pl.col("entity")
    return SplitState(state.filter(entity == "customer"), state.filter(entity == "terminal"),
                      state.filter(entity == "transaction"))


def features_for_day(transactions: pl.DataFrame, state: pl.DataFrame | SplitState,
                     earlier: pl.DataFrame | None = None) -> pl.DataFrame:
    """Features of raw transactions of the day after the ``state``'s, given the state (or its
    ``split_state``) and ``earlier``, the transactions of that day already known
    (``EVENT_COLUMNS`` or raw). The transactions count for each other too: each sees every one
    strictly before it.

    Unknown customers and terminals get counts, means and risks of 0: the same on every path.
    """
    customers, terminals, state_events = (state if isinstance(state, SplitState)
                                          else split_state(state))
    known = [state_events.select(EVENT_COLUMNS), _with_cents(transactions).select(EVENT_COLUMNS)]
    if earlier is not None and earlier.height:
        known.append(earlier.select(EVENT_COLUMNS) if "tx_cents" in earlier.columns
                     else _with_cents(earlier).select(EVENT_COLUMNS))
    return _features(transactions, customers, terminals, pl.concat(known, how="vertical_relaxed"))


def batch_features(
    history: pl.DataFrame, first: dt.date, last: dt.date, spec: FeatureSpec = FeatureSpec(), *,
    labels: pl.DataFrame | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Features for every transaction of days ``first``..``last`` and the state at the end of each.

    ``history`` holds validated transactions from ``first - spec.history_days()`` to ``last``,
    ``labels`` the accepted reports (``fraud_labels`` rows) made up to ``last`` (None: no report
    at all, so every known-fraud count is 0: say so explicitly);
    each day's features are ``features_for_day`` with the state of the day before and the day's
    own transactions, computed for all days at once. Rows come day by day, in their order in
    ``history`` within a day; states in ``state_date`` order.
    """
    one = dt.timedelta(days=1)
    states = feature_states(history, first - one, last, spec, labels=labels)
    day = pl.col("tx_datetime").dt.date()
    transactions = history.filter(day.is_between(first, last))
    if not transactions.get_column("tx_datetime").dt.date().is_sorted():
        transactions = transactions.sort(day, maintain_order=True)
    customers, terminals, _ = split_state(states.rename({"state_date": "_state_date"}))
    events = _with_cents(history.filter(day.is_between(first - one, last))).select(EVENT_COLUMNS)
    features = _features(transactions.with_columns(_state_date=day - one), customers, terminals,
                         events, on=("_state_date",))
    # states is in state_date order: the day before ``first`` is its first rows.
    before = (states.get_column("state_date") < first).sum()
    return features, states.slice(before)


# One transaction, in plain Python -------------------------------------------------------------


def microseconds(timestamp: dt.datetime) -> int:
    """A naive timestamp as microseconds since 1970, as polars stores ``Datetime("us")``."""
    return (timestamp - _EPOCH) // dt.timedelta(microseconds=1)


def online_features(
    tx_datetime: dt.datetime, tx_amount: float, customer: Sequence | None,
    terminal: Sequence | None, events: Iterable[tuple[int, int, int]],
) -> list[float]:
    """``features_for_day`` for one transaction, in ``FEATURE_COLUMNS`` order, from its
    customer's state row (``CUSTOMER_STATE`` values, ``c_last_tx`` in microseconds, or None),
    its terminal's (``TERMINAL_STATE``, or None) and its customer's known transactions as
    (microseconds, cents, terminal id): any of the state's day and later; those not strictly
    before it (itself included) are skipped."""
    t = microseconds(tx_datetime)
    midnight = t - t % DAY_US
    n_today = cents_today = sq_today = n_1h = cents_1h = 0
    terminals, previous = set(), None
    for ts, amount, terminal_id in events:
        if ts >= t or ts < t - DAY_US:
            continue
        if ts >= midnight:
            n_today += 1
            cents_today += amount
            sq_today += amount * amount
        if ts >= t - HOUR_US:
            n_1h += 1
            cents_1h += amount
        terminals.add(terminal_id)
        if previous is None or ts > previous:
            previous = ts
    c = dict(zip(CUSTOMER_STATE, customer)) if customer is not None else {}
    if c.get("c_last_tx") is not None and (previous is None or c["c_last_tx"] > previous):
        previous = c["c_last_tx"]
    second = (t - midnight) // 10**6
    v = {
        "tx_amount": tx_amount, "second_of_day": second, "weekday": tx_datetime.isoweekday(),
        "n_1d": n_today, "cents_1d": cents_today, "sq_1d": sq_today,
        "n_1h": n_1h, "cents_1h": cents_1h, "terminals_24h": len(terminals),
        "c_frauds_known_30d": c.get("c_frauds_known_30d", 0),
        "since_previous": (MAX_SECONDS_SINCE_PREVIOUS if previous is None
                           else min((t - previous) // 10**6, MAX_SECONDS_SINCE_PREVIOUS)),
        **dict(zip(TERMINAL_STATE, terminal if terminal is not None else [0] * len(TERMINAL_STATE))),
    }
    for w, d in zip(CUSTOMER_WINDOWS[1:], _PRIOR_DAYS):
        v[f"n_{w}d"] = n_today + c.get(f"c_n_{d}d", 0)
        v[f"cents_{w}d"] = cents_today + c.get(f"c_cents_{d}d", 0)
        v[f"sq_{w}d"] = sq_today + c.get(f"c_cents_sq_{d}d", 0)
    features = _derive(v, _PythonOps)
    return [features[name] for name in FEATURE_COLUMNS]
