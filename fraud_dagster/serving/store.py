"""The online feature store: the newest ``feature_state`` and every transaction scored since.

The service scores a transaction of day D from the state at the end of the day before and the
customer's transactions so far (``online_features`` / ``features_for_day``). The store holds
exactly that: the state of day S the pipeline materialised last, and each transaction it was
asked to score since, in arrival order, so the customer's next transaction sees it. When the
pipeline materialises a newer state S', the store swaps it in and drops the transactions of days
up to S' (they are in it now) and keeps the later ones: nothing counted twice, nothing missed.

What it refuses, before anything is applied (``Refused``):

- a ``transaction_id`` it has already applied (409): a retry must not count twice;
- a transaction of day S or earlier (422): the state already holds that day, whose features
  can no longer be computed as the batch did.

Transactions of a day after S + 1 (the pipeline is late) are scored from state S and flagged by
``state_lag_days``. Two backends behind one interface: ``MemoryStore`` (in the process; one
worker) and ``RedisStore`` (``fraud_dagster.serving.redis_store``; several workers or replicas
share one state). Nothing here knows about BentoML.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import threading
from collections.abc import Collection

import numpy as np
import polars as pl

from fraud_dagster.core.features import (
    CUSTOMER_STATE,
    EVENT_COLUMNS,
    FEATURE_COLUMNS,
    KEY_COLUMNS,
    TERMINAL_STATE,
    SplitState,
    amount_cents,
    cents,
    features_for_day,
    microseconds,
    online_features,
    split_state,
)
from fraud_dagster.core.days import split_by_day
from fraud_dagster.core.schema import REQUIRED_COLUMNS

_EVENT_SCHEMA = {"transaction_id": pl.Int64, "tx_datetime": pl.Datetime("us"),
                 "customer_id": pl.Int64, "terminal_id": pl.Int64, "tx_cents": pl.Int64}

_EPOCH_DAY = dt.date(1970, 1, 1)
_DAY_US = 86_400 * 10**6


@dataclasses.dataclass
class Refused(Exception):
    """Transactions the store will not apply; nothing of the request was applied."""

    status: int
    errors: list[dict]
    """pydantic-style: ``{"loc": [...], "msg": ..., "type": ...}`` per refused transaction."""

    def __str__(self) -> str:
        return "; ".join(e["msg"] for e in self.errors)


def as_events(transactions: pl.DataFrame) -> pl.DataFrame:
    """Raw transactions as the store keeps them (``EVENT_COLUMNS``: amounts in cents)."""
    return transactions.with_columns(tx_cents=cents(pl.col("tx_amount"))).select(EVENT_COLUMNS)


def state_rows(state: pl.DataFrame) -> tuple[dict, dict, pl.DataFrame]:
    """A ``feature_state`` day as (customer id -> ``CUSTOMER_STATE`` values with ``c_last_tx`` in
    microseconds, terminal id -> ``TERMINAL_STATE`` values, the day's transactions)."""
    entity = pl.col("entity")
    customers = state.filter(entity == "customer").select(
        "customer_id", *CUSTOMER_STATE).with_columns(pl.col("c_last_tx").dt.epoch("us"))
    terminals = state.filter(entity == "terminal").select("terminal_id", *TERMINAL_STATE)
    return ({row[0]: row[1:] for row in customers.iter_rows()},
            {row[0]: row[1:] for row in terminals.iter_rows()},
            state.filter(entity == "transaction").select(EVENT_COLUMNS))


def state_day(state: pl.DataFrame) -> dt.date:
    days = state.get_column("state_date").unique()
    if days.len() != 1:
        raise ValueError(f"a feature state is one day's, got {days.len()}: {days.to_list()[:5]}")
    return days[0]


def refusal_of(rows: list[tuple], state_date: dt.date | None, seen) -> Refused | None:
    """Why transactions (rows of ``REQUIRED_COLUMNS``) cannot be applied, or None: one of the
    state's day or before (422), else an id already applied (``seen(id)``) or repeated (409)."""
    stale, duplicates, first = [], [], set()
    for i, (transaction_id, when, *_) in enumerate(rows):
        if state_date is not None and when.date() <= state_date:
            stale.append({
                "loc": ["transactions", i, "tx_datetime"], "type": "before_feature_state",
                "msg": f"transaction {transaction_id} is of {when.date().isoformat()}, on or"
                       f" before the day of the served feature state ({state_date.isoformat()}):"
                       " its features can no longer be computed",
            })
        elif seen(transaction_id) or transaction_id in first:
            duplicates.append({
                "loc": ["transactions", i, "transaction_id"], "type": "duplicate_transaction",
                "msg": f"transaction {transaction_id} was already scored: it is not applied twice",
            })
        first.add(transaction_id)
    if stale:
        return Refused(422, stale)
    return Refused(409, duplicates) if duplicates else None


@dataclasses.dataclass
class Features:
    """Transactions' features as the store computed them, row for row in request order."""

    transactions: pl.DataFrame
    """``REQUIRED_COLUMNS`` of the scored transactions."""
    values: np.ndarray
    """rows x ``FEATURE_COLUMNS``, float64."""
    _frame: pl.DataFrame | None = None

    @property
    def height(self) -> int:
        return self.transactions.height

    @property
    def frame(self) -> pl.DataFrame:
        """``KEY_COLUMNS`` and ``FEATURE_COLUMNS`` as a frame (built when first asked for: a
        request of a few rows is scored in less time than polars takes to build it)."""
        if self._frame is None:
            values = pl.DataFrame(self.values, schema=list(FEATURE_COLUMNS), orient="row")
            self._frame = self.transactions.select(KEY_COLUMNS).hstack(values)
        return self._frame

    @classmethod
    def from_frame(cls, transactions: pl.DataFrame, frame: pl.DataFrame) -> Features:
        return cls(transactions, frame.select(FEATURE_COLUMNS).to_numpy(), frame)


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    backend: str
    state_date: dt.date | None
    newest_transaction: dt.datetime | None
    """The latest ``tx_datetime`` applied: how fresh the customer windows are."""
    transactions_applied: int
    """Since the state's day."""


class FeatureStore(abc.ABC):
    """``score_features(transactions)``: validate, compute features, apply, all or nothing."""

    backend: str

    @abc.abstractmethod
    def load_state(self, state: pl.DataFrame) -> bool:
        """Serve ``state`` (one day of ``feature_state``) if it is newer than the one served;
        returns whether it was swapped in."""

    @abc.abstractmethod
    def replay(self, journal: pl.DataFrame) -> int:
        """Apply logged transactions (start-up), skipping those already applied or too old;
        returns how many were applied."""

    @abc.abstractmethod
    def refusal(self, transactions: pl.DataFrame, pending: set[int]) -> Refused | None:
        """Why ``transactions`` would be refused (``pending``: ids about to be applied with
        them), or None; applies nothing."""

    @abc.abstractmethod
    def score_features(self, transactions: pl.DataFrame, feature_rows: int
                       ) -> tuple[Features, dt.date | None]:
        """Features of ``transactions`` (``REQUIRED_COLUMNS``, in request order) with the
        customers' earlier transactions, then apply them; and the state's day. Up to
        ``feature_rows`` rows are computed one by one in plain Python (``online_features``),
        more as one polars query (``features_for_day``): the same values. Raises ``Refused``."""

    @abc.abstractmethod
    def info(self) -> StoreInfo: ...


class MemoryStore(FeatureStore):
    """The store in this process's memory: one BentoML worker only. Thread-safe."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state_date: dt.date | None = None
        self._state: SplitState | None = None
        self._customers: dict = {}
        self._terminals: dict = {}
        self._events: dict[int, list[tuple[int, int, int]]] = {}
        """Per customer, (microseconds, cents, terminal) of its transactions of the state's day
        and since, in arrival order: what a few rows are computed from (``online_features``)."""
        self._unindexed: list[pl.DataFrame] = []
        """Those not in ``_events`` yet (``EVENT_COLUMNS`` frames, in arrival order): indexed
        when a request of a few rows needs ``_events`` (``_index``), so that batches, computed
        from frames, do not pay for it (an append per row was a tenth of a day's batch)."""
        # The transactions applied since the state's day, by day (a batch reads its days' and
        # the days before them, whatever the journal holds) in arrival order within each, and
        # the rows applied one by one since they were last added (a frame per request would
        # cost more than scoring the request).
        self._journal: dict[dt.date, list[pl.DataFrame]] = {}
        self._pending: list[tuple] = []
        self._ids: set[int] = set()
        self._newest: int | None = None

    def _journal_add(self, events: pl.DataFrame) -> None:
        for day, part in split_by_day(events, "tx_datetime").items():
            self._journal.setdefault(day, []).append(part)

    def _add_pending(self) -> None:
        if self._pending:
            rows, self._pending = self._pending, []
            self._journal_add(pl.DataFrame(
                rows, schema=_EVENT_SCHEMA | {"tx_datetime": pl.Int64}, orient="row"
            ).with_columns(pl.col("tx_datetime").cast(pl.Datetime("us"))))

    def _journal_frame(self, days: Collection[dt.date] | None = None) -> pl.DataFrame:
        """The journal's transactions (of ``days`` only, if given)."""
        self._add_pending()
        frames = [frame for day, frames in self._journal.items() if days is None or day in days
                  for frame in frames]
        return pl.concat(frames) if frames else pl.DataFrame(schema=_EVENT_SCHEMA)

    def load_state(self, state: pl.DataFrame) -> bool:
        day = state_day(state)
        if self.state_date is not None and day <= self.state_date:
            return False
        customers, terminals, state_events = state_rows(state)
        with self._lock:
            self._add_pending()
            self._journal = {d: frames for d, frames in self._journal.items() if d > day}
            journal = self._journal_frame()
            self.state_date, self._state = day, split_state(state)
            self._customers, self._terminals = customers, terminals
            self._events, self._unindexed = {}, [state_events, journal]
            self._ids = set(journal.get_column("transaction_id").to_list())
        return True

    def _index(self) -> None:
        for frame in self._unindexed:
            for customer, when, amount, terminal in zip(
                    frame.get_column("customer_id").to_list(),
                    frame.get_column("tx_datetime").dt.epoch("us").to_list(),
                    frame.get_column("tx_cents").to_list(), frame.get_column("terminal_id").to_list()):
                self._events.setdefault(customer, []).append((when, amount, terminal))
        self._unindexed = []

    def _apply(self, rows: list[tuple]) -> None:
        """Apply transactions given as rows of ``REQUIRED_COLUMNS``."""
        self._index()  # their events go after those of the batches before them
        for transaction_id, when, customer, terminal, amount in rows:
            micros, amount_in_cents = microseconds(when), amount_cents(amount)
            self._pending.append((transaction_id, micros, customer, terminal, amount_in_cents))
            self._ids.add(transaction_id)
            self._events.setdefault(customer, []).append((micros, amount_in_cents, terminal))
            if self._newest is None or micros > self._newest:
                self._newest = micros

    def replay(self, journal: pl.DataFrame) -> int:
        with self._lock:
            fresh = journal.unique("transaction_id", keep="first", maintain_order=True).filter(
                ~pl.col("transaction_id").is_in(list(self._ids)))
            if self.state_date is not None:
                fresh = fresh.filter(pl.col("tx_datetime").dt.date() > self.state_date)
            self._apply(list(fresh.select(REQUIRED_COLUMNS).iter_rows()))
            return fresh.height

    def refusal(self, transactions: pl.DataFrame, pending: set[int]) -> Refused | None:
        rows = list(transactions.iter_rows())
        with self._lock:
            return refusal_of(rows, self.state_date,
                              lambda i: i in self._ids or i in pending)

    def score_features(self, transactions: pl.DataFrame, feature_rows: int
                       ) -> tuple[Features, dt.date | None]:
        if transactions.height > feature_rows:
            return self._score_frame(transactions)
        rows = list(transactions.iter_rows())
        with self._lock:
            refused = refusal_of(rows, self.state_date, self._ids.__contains__)
            if refused is not None:
                raise refused
            self._apply(rows)
            values = [
                online_features(when, amount, self._customers.get(customer),
                                self._terminals.get(terminal), self._events.get(customer, ()))
                for _, when, customer, terminal, amount in rows
            ]
            state_date = self.state_date
        return Features(transactions, np.array(values, dtype=np.float64)), state_date

    def _score_frame(self, transactions: pl.DataFrame) -> tuple[Features, dt.date | None]:
        """``score_features`` for many rows: checked, computed and applied in whole columns (a
        loop over a 10,000-row batch's rows cost as much as its features)."""
        ids = transactions.get_column("transaction_id")
        events = as_events(transactions).cast(_EVENT_SCHEMA)
        with self._lock:
            stale = (self.state_date is not None and bool(
                (transactions.get_column("tx_datetime").dt.date() <= self.state_date).any()))
            if stale or ids.is_duplicated().any() or not self._ids.isdisjoint(ids.to_list()):
                refused = refusal_of(list(transactions.iter_rows()), self.state_date,
                                     self._ids.__contains__)
                if refused is not None:
                    raise refused
            features = Features.from_frame(transactions, self._frame_features(transactions))
            self._apply_events(events)
            return features, self.state_date

    def _apply_events(self, events: pl.DataFrame) -> None:
        """``_apply`` for transactions given as ``as_events`` rows."""
        self._add_pending()  # before the batch's
        self._journal_add(events)
        self._unindexed.append(events)
        self._ids.update(events.get_column("transaction_id").to_list())
        newest = events.get_column("tx_datetime").dt.epoch("us").max()
        if newest is not None and (self._newest is None or newest > self._newest):
            self._newest = newest

    def _frame_features(self, transactions: pl.DataFrame) -> pl.DataFrame:
        customers = transactions.get_column("customer_id").unique().implode()
        terminals = transactions.get_column("terminal_id").unique().implode()
        of_customers = pl.col("customer_id").is_in(customers)
        state = SplitState(self._state.customers.filter(of_customers),
                           self._state.terminals.filter(pl.col("terminal_id").is_in(terminals)),
                           self._state.transactions.filter(of_customers))
        # features_for_day only pairs a transaction with its customer's of the same day and the
        # day before: the journal's other days (a pipeline days late) would only be joined away.
        days = set(transactions.get_column("tx_datetime").dt.date().unique().to_list())
        days |= {day - dt.timedelta(days=1) for day in days}
        earlier = self._journal_frame(days).filter(pl.col("customer_id").is_in(customers))
        return features_for_day(transactions, state, earlier)

    def info(self) -> StoreInfo:
        with self._lock:
            newest = (None if self._newest is None
                      else dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=self._newest))
            return StoreInfo(self.backend, self.state_date, newest, len(self._ids))


STORES = ("memory", "redis")


def store_settings_error(backend: str, redis_url: str | None, workers: int) -> str | None:
    """Why ``FRAUD_ONLINE_STORE``, ``FRAUD_REDIS_URL`` and ``FRAUD_WORKERS`` cannot work, or None."""
    if backend not in STORES:
        return f"FRAUD_ONLINE_STORE must be one of {', '.join(STORES)}, not {backend!r}"
    if backend == "redis" and not redis_url:
        return "FRAUD_ONLINE_STORE=redis needs FRAUD_REDIS_URL (redis://host:port/db)"
    if backend == "memory" and workers > 1:
        return (f"FRAUD_WORKERS={workers} with FRAUD_ONLINE_STORE=memory: each worker would keep"
                " its own feature state and miss the transactions the others score. Serve one"
                " worker, or set FRAUD_ONLINE_STORE=redis and FRAUD_REDIS_URL for workers to share"
                " one state")
    return None


def open_store(backend: str, redis_url: str | None = None) -> FeatureStore:
    """``FRAUD_ONLINE_STORE``'s store: ``memory`` or ``redis`` (at ``FRAUD_REDIS_URL``)."""
    error = store_settings_error(backend, redis_url, workers=1)
    if error is not None:
        raise ValueError(error)
    if backend == "memory":
        return MemoryStore()
    from fraud_dagster.serving.redis_store import RedisStore

    return RedisStore(redis_url)
