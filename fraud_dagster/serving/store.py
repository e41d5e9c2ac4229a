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

import polars as pl

from fraud_dagster.core.features import (
    CUSTOMER_STATE,
    EVENT_COLUMNS,
    FEATURE_COLUMNS,
    KEY_COLUMNS,
    TERMINAL_STATE,
    cents,
    features_for_day,
    online_features,
)

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


def check_days(transactions: pl.DataFrame, state_date: dt.date | None) -> None:
    """Refuse transactions of the state's day or before (their day is in the state already)."""
    if state_date is None:
        return
    days = transactions.get_column("tx_datetime").dt.date()
    stale = (days <= state_date).arg_true().to_list()
    if stale:
        raise Refused(422, [{
            "loc": ["transactions", i, "tx_datetime"], "type": "before_feature_state",
            "msg": f"transaction {transactions['transaction_id'][i]} is of"
                   f" {days[i].isoformat()}, on or before the day of the served feature state"
                   f" ({state_date.isoformat()}): its features can no longer be computed",
        } for i in stale])


def duplicate_errors(transactions: pl.DataFrame, seen) -> list[dict]:
    """409 errors for ids already applied (``seen(ids) -> set``) or repeated in the request."""
    ids = transactions.get_column("transaction_id").to_list()
    known = seen(ids)
    errors, first = [], set()
    for i, transaction_id in enumerate(ids):
        if transaction_id in known or transaction_id in first:
            errors.append({
                "loc": ["transactions", i, "transaction_id"], "type": "duplicate_transaction",
                "msg": f"transaction {transaction_id} was already scored: it is not applied twice",
            })
        first.add(transaction_id)
    return errors


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
                       ) -> tuple[pl.DataFrame, dt.date | None]:
        """Features of ``transactions`` (``REQUIRED_COLUMNS``, in request order) with the
        customers' earlier transactions, then apply them; and the state's day. Up to
        ``feature_rows`` rows are computed one by one in plain Python (``online_features``),
        more as one polars query (``features_for_day``): the same values. Raises ``Refused``."""

    @abc.abstractmethod
    def info(self) -> StoreInfo: ...


_FEATURE_SCHEMA = {name: pl.Float64 for name in FEATURE_COLUMNS}


def _features_frame(rows: list[list[float]], transactions: pl.DataFrame) -> pl.DataFrame:
    values = pl.DataFrame(rows, schema=_FEATURE_SCHEMA, orient="row")
    return transactions.select(KEY_COLUMNS).hstack(values)


class MemoryStore(FeatureStore):
    """The store in this process's memory: one BentoML worker only. Thread-safe."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state_date: dt.date | None = None
        self._state = pl.DataFrame()
        self._customers: dict = {}
        self._terminals: dict = {}
        self._events: dict[int, list[tuple[int, int, int]]] = {}
        self._journal: list[pl.DataFrame] = []  # EVENT_COLUMNS, days after state_date
        self._ids: set[int] = set()
        self._newest: int | None = None

    def load_state(self, state: pl.DataFrame) -> bool:
        day = state_day(state)
        if self.state_date is not None and day <= self.state_date:
            return False
        customers, terminals, state_events = state_rows(state)
        with self._lock:
            journal = (pl.concat(self._journal) if self._journal
                       else pl.DataFrame(schema=state_events.schema))
            journal = journal.filter(pl.col("tx_datetime").dt.date() > day)
            events: dict[int, list] = {}
            for frame in (state_events, journal):
                for _, micros, customer, terminal, amount in frame.with_columns(
                        pl.col("tx_datetime").dt.epoch("us")).iter_rows():
                    events.setdefault(customer, []).append((micros, amount, terminal))
            self.state_date, self._state = day, state
            self._customers, self._terminals, self._events = customers, terminals, events
            self._journal = [journal] if journal.height else []
            self._ids = set(journal.get_column("transaction_id").to_list())
        return True

    def _apply(self, transactions: pl.DataFrame) -> None:
        events = as_events(transactions)
        self._journal.append(events)
        self._ids.update(events.get_column("transaction_id").to_list())
        for _, micros, customer, terminal, amount in events.with_columns(
                pl.col("tx_datetime").dt.epoch("us")).iter_rows():
            self._events.setdefault(customer, []).append((micros, amount, terminal))
            if self._newest is None or micros > self._newest:
                self._newest = micros

    def replay(self, journal: pl.DataFrame) -> int:
        with self._lock:
            fresh = journal.unique("transaction_id", keep="first", maintain_order=True).filter(
                ~pl.col("transaction_id").is_in(list(self._ids)))
            if self.state_date is not None:
                fresh = fresh.filter(pl.col("tx_datetime").dt.date() > self.state_date)
            if fresh.height:
                self._apply(fresh)
            return fresh.height

    def _refuse(self, transactions: pl.DataFrame, pending: set[int]) -> None:
        check_days(transactions, self.state_date)
        errors = duplicate_errors(
            transactions, lambda ids: {i for i in ids if i in self._ids or i in pending})
        if errors:
            raise Refused(409, errors)

    def refusal(self, transactions: pl.DataFrame, pending: set[int]) -> Refused | None:
        with self._lock:
            try:
                self._refuse(transactions, pending)
            except Refused as refused:
                return refused
        return None

    def score_features(self, transactions: pl.DataFrame, feature_rows: int
                       ) -> tuple[pl.DataFrame, dt.date | None]:
        with self._lock:
            self._refuse(transactions, set())
            if transactions.height > feature_rows:
                features = self._frame_features(transactions)
                self._apply(transactions)
                return features, self.state_date
            self._apply(transactions)
            rows = [
                online_features(when, amount, self._customers.get(customer),
                                self._terminals.get(terminal), self._events.get(customer, ()))
                for _, when, customer, terminal, amount in transactions.iter_rows()
            ]
            state_date = self.state_date
        return _features_frame(rows, transactions), state_date

    def _frame_features(self, transactions: pl.DataFrame) -> pl.DataFrame:
        customers = transactions.get_column("customer_id").unique().implode()
        terminals = transactions.get_column("terminal_id").unique().implode()
        entity = pl.col("entity")
        state = self._state.filter(
            ((entity == "terminal") & pl.col("terminal_id").is_in(terminals))
            | ((entity != "terminal") & pl.col("customer_id").is_in(customers)))
        if len(self._journal) > 1:
            self._journal = [pl.concat(self._journal)]
        earlier = (self._journal[0].filter(pl.col("customer_id").is_in(customers))
                   if self._journal else None)
        return features_for_day(transactions, state, earlier)

    def info(self) -> StoreInfo:
        with self._lock:
            newest = (None if self._newest is None
                      else dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=self._newest))
            return StoreInfo(self.backend, self.state_date, newest, len(self._ids))


STORES = ("memory", "redis")


def open_store(backend: str, redis_url: str | None = None) -> FeatureStore:
    """``FRAUD_ONLINE_STORE``'s store: ``memory`` or ``redis`` (at ``FRAUD_REDIS_URL``)."""
    if backend == "memory":
        return MemoryStore()
    if backend == "redis":
        if not redis_url:
            raise ValueError("FRAUD_ONLINE_STORE=redis needs FRAUD_REDIS_URL"
                             " (redis://host:port/db)")
        from fraud_dagster.serving.redis_store import RedisStore

        return RedisStore(redis_url)
    raise ValueError(f"FRAUD_ONLINE_STORE must be one of {', '.join(STORES)}, not {backend!r}")
