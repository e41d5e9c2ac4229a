"""The online feature store, on both backends (in memory, and a real Redis on loopback): each
transaction's features are the batch ones of its day, whatever the order states and transactions
arrive in, and nothing is counted twice or missed."""

import datetime as dt
import itertools

import polars as pl
import pytest
import redis

from fraud_dagster.core.labels import delivered_reports
from fraud_dagster.core.features import batch_features, features_for_day
from fraud_dagster.core.schema import REQUIRED_COLUMNS
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.serving.redis_store import RedisStore
from fraud_dagster.serving.store import MemoryStore, Refused

DAY = dt.date(2025, 2, 20)
ONE = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def days():
    """Batch features and states of DAY-1..DAY+2, and each day's transactions."""
    simulator = Simulator(SimulatorConfig(n_customers=300, n_terminals=600))
    transactions = simulator.days(DAY - 40 * ONE, DAY + 2 * ONE)
    features, states = batch_features(transactions, DAY - ONE, DAY + 2 * ONE,
                                      labels=delivered_reports(transactions))
    on = lambda day: pl.col("tx_datetime").dt.date() == day  # noqa: E731
    return {
        "features": {d: features.filter(on(d)) for d in (DAY, DAY + ONE, DAY + 2 * ONE)},
        "state": {d: states.filter(pl.col("state_date") == d)
                  for d in (DAY - ONE, DAY, DAY + ONE)},
        "rows": {d: transactions.filter(on(d)).select(REQUIRED_COLUMNS)
                 for d in (DAY, DAY + ONE, DAY + 2 * ONE)},
    }


@pytest.fixture(params=["memory", "redis"])
def open_store(request):
    """A function that opens a store: on Redis, each call is another worker on the same server."""
    if request.param == "memory":
        yield MemoryStore
        return
    url = request.getfixturevalue("redis_server")
    redis.Redis.from_url(url).flushdb()
    yield lambda: RedisStore(url)


def serve(store, rows: pl.DataFrame, size: int | tuple[int, ...]) -> pl.DataFrame:
    """Score ``rows`` in arrival order, ``size`` rows a call (a cycle of sizes: each call's)."""
    sizes, parts, start = itertools.cycle(size if isinstance(size, tuple) else (size,)), [], 0
    while start < rows.height:
        n = next(sizes)
        parts.append(store.score_features(rows.slice(start, n), feature_rows=16)[0].frame)
        start += n
    return pl.concat(parts)


# Plain Python, polars past 16 rows, and both in turn (a few rows see the batches' before them).
@pytest.mark.parametrize("size", [1, 7, 40, (40, 1, 2, 40, 40, 7)])
def test_transactions_scored_in_arrival_order_get_exactly_their_batch_features(
        days, open_store, size):
    store = open_store()
    assert store.load_state(days["state"][DAY - ONE])
    assert serve(store, days["rows"][DAY], size).equals(days["features"][DAY])
    info = store.info()
    assert info.state_date == DAY - ONE and info.transactions_applied == days["rows"][DAY].height
    assert info.newest_transaction == days["rows"][DAY]["tx_datetime"].max()


def test_two_workers_on_one_redis_see_each_others_transactions(days, redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    workers = [RedisStore(redis_server), RedisStore(redis_server)]
    workers[0].load_state(days["state"][DAY - ONE])
    rows = days["rows"][DAY]
    served = pl.concat([workers[i % 2].score_features(rows.slice(i, 1), 16)[0].frame
                        for i in range(rows.height)])
    assert served.equals(days["features"][DAY])
    assert not workers[1].load_state(days["state"][DAY - ONE])  # already served


def test_a_newer_state_replaces_the_days_it_holds_and_keeps_the_later_transactions(
        days, open_store):
    """The nightly run lands in the morning: the transactions applied since are kept, the ones
    the new state holds are dropped, and the rest of the day gets its batch features."""
    store = open_store()
    store.load_state(days["state"][DAY - ONE])
    serve(store, days["rows"][DAY], 40)
    later = days["rows"][DAY + ONE]
    morning, afternoon = later.head(later.height // 3), later.tail(later.height - later.height // 3)
    early, state_date = store.score_features(morning, 16)
    early = early.frame
    assert state_date == DAY - ONE  # scored a day late: the answers say so
    assert store.load_state(days["state"][DAY])
    assert store.info().transactions_applied == morning.height
    expected = days["features"][DAY + ONE]
    assert serve(store, afternoon, 7).equals(expected.tail(afternoon.height))
    assert early["customer_nb_tx_1h"].equals(expected.head(morning.height)["customer_nb_tx_1h"])


def test_an_older_or_the_same_state_is_not_loaded_again(days, open_store):
    store = open_store()
    assert store.load_state(days["state"][DAY])
    assert not store.load_state(days["state"][DAY - ONE])
    assert not store.load_state(days["state"][DAY])
    assert store.info().state_date == DAY


@pytest.mark.parametrize("feature_rows", [16, 1])  # plain Python, and checked in columns
def test_duplicates_and_transactions_of_the_states_day_are_refused_and_nothing_is_applied(
        days, open_store, feature_rows):
    store = open_store()
    store.load_state(days["state"][DAY - ONE])
    rows = days["rows"][DAY]
    store.score_features(rows.head(3), 16)
    cases = {
        409: pl.concat([rows.slice(3, 1), rows.slice(1, 1)]),  # the second was applied already
        422: pl.concat([rows.slice(3, 1), rows.slice(4, 1).with_columns(
            pl.col("tx_datetime") - ONE)]),
    }
    for status, request in cases.items():
        with pytest.raises(Refused) as refused:
            store.score_features(request, feature_rows)
        assert refused.value.status == status
        field = "transaction_id" if status == 409 else "tx_datetime"
        assert [e["loc"] for e in refused.value.errors] == [["transactions", 1, field]]
        assert store.refusal(request, set()).status == status
    repeated = pl.concat([rows.slice(5, 1), rows.slice(5, 1)])
    assert store.refusal(repeated, set()).errors[0]["loc"] == ["transactions", 1, "transaction_id"]
    assert store.refusal(rows.slice(6, 1), {rows["transaction_id"][6]}).status == 409
    assert store.info().transactions_applied == 3
    assert serve(store, rows.slice(3, rows.height - 3), 7).equals(days["features"][DAY].slice(3))


def test_a_restarted_store_replays_its_journal_and_goes_on_exactly(days, open_store):
    store = open_store()
    store.load_state(days["state"][DAY - ONE])
    rows = days["rows"][DAY]
    half = rows.height // 2
    serve(store, rows.head(half), 7)
    restarted = MemoryStore() if isinstance(store, MemoryStore) else open_store()
    restarted.load_state(days["state"][DAY - ONE])
    journal = pl.concat([rows.head(half), rows.head(10)])  # a log may hold a row twice
    applied = restarted.replay(journal)
    assert applied == (half if isinstance(store, MemoryStore) else 0)  # Redis kept them
    assert restarted.info().newest_transaction == rows.head(half)["tx_datetime"].max()
    assert serve(restarted, rows.tail(rows.height - half), 7).equals(
        days["features"][DAY].tail(rows.height - half))


def test_a_day_past_the_states_next_is_scored_from_it_as_features_for_day_defines(
        days, open_store):
    """The pipeline is a day late: the store goes on from the state it has, and says so."""
    store = open_store()
    store.load_state(days["state"][DAY - ONE])
    rows = days["rows"][DAY + ONE].head(200)
    served, state_date = store.score_features(rows, 16)
    assert state_date == DAY - ONE
    assert served.frame.equals(features_for_day(rows, days["state"][DAY - ONE]))


def test_a_lagging_batch_sees_the_journal_days_it_needs_and_no_other(days, open_store):
    """Transactions of two days after the state's, on top of a journal of the day before them
    and of the day before that: the journal's days that features_for_day never pairs with them
    make no difference."""
    store = open_store()
    store.load_state(days["state"][DAY - ONE])
    serve(store, days["rows"][DAY], 40)
    serve(store, days["rows"][DAY + ONE].head(100), 40)
    rows = days["rows"][DAY + 2 * ONE].head(300)
    served, _ = store.score_features(rows, 16)
    journal = pl.concat([days["rows"][DAY], days["rows"][DAY + ONE].head(100)])
    assert served.frame.equals(features_for_day(rows, days["state"][DAY - ONE], journal))
