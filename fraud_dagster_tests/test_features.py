import datetime as dt

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_dagster.core.features import (
    CUSTOMER_STATE,
    EVENT_COLUMNS,
    FEATURE_COLUMNS,
    KEY_COLUMNS,
    MAX_SECONDS_SINCE_PREVIOUS,
    TERMINAL_STATE,
    FeatureSpec,
    batch_features,
    cents,
    feature_states,
    features_for_day,
    online_features,
    state_as_of,
)
from fraud_dagster.core.labels import LABEL_DTYPES, delivered_reports, simulated_reports
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster_tests.pipeline import read_days, read_partition, run_ingest

D = dt.date(2025, 3, 10)
SPEC = FeatureSpec(label_delay=7)


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    simulator = Simulator(SimulatorConfig(n_customers=800, n_terminals=1_500))
    return simulator.days(D - dt.timedelta(days=SPEC.history_days()), D + dt.timedelta(days=5))


@pytest.fixture(scope="module")
def labels(history) -> pl.DataFrame:
    """The simulator's delayed fraud reports of ``history``, as fraud_labels holds them."""
    return delivered_reports(simulated_reports(history, seed=42))


def features_of_day(history: pl.DataFrame, labels: pl.DataFrame, day: dt.date = D) -> pl.DataFrame:
    return batch_features(history, day, day, SPEC, labels=labels)[0].sort("transaction_id")


def on_or_after(day: dt.date) -> pl.Expr:
    return pl.col("tx_datetime").dt.date() >= day


def test_changing_data_from_day_d_on_leaves_day_d_features_unchanged(history, labels):
    before = features_of_day(history, labels)
    assert before["customer_frauds_known_30d"].sum() > 0
    day_d_ids = before["transaction_id"]
    # Everything that is not known before a day-D transaction: reports made on day D or later
    # (here: every transaction of the history reported as fraud on day D), all of the later
    # days, and new transactions at the very end of day D.
    late_reports = history.select(
        "transaction_id", "tx_datetime", "customer_id", "terminal_id",
        tx_fraud=pl.lit(1, pl.Int8), source=pl.lit("test"),
        reported_at=pl.max_horizontal("tx_datetime", pl.lit(dt.datetime.combine(D, dt.time()))),
    ).select(list(LABEL_DTYPES))
    changed = history.with_columns(
        tx_amount=pl.when(on_or_after(D + dt.timedelta(days=1)))
        .then(pl.col("tx_amount") * 10)
        .otherwise(pl.col("tx_amount")),
    )
    extra = history.filter(pl.col("tx_datetime").dt.date() == D).head(50).with_columns(
        transaction_id=pl.col("transaction_id") + 900_000, tx_amount=pl.lit(9_999.0),
        tx_datetime=pl.lit(dt.datetime.combine(D, dt.time(23, 59, 59, 500_000)), pl.Datetime("us")),
    )
    after = features_of_day(pl.concat([changed, extra]), pl.concat([labels, late_reports]))
    assert_frame_equal(after.filter(pl.col("transaction_id").is_in(day_d_ids.implode())), before)


def reported(transactions: pl.DataFrame, on: dt.date) -> pl.DataFrame:
    """Each of ``transactions`` reported as fraud at noon on ``on``."""
    return transactions.select(
        "transaction_id", "tx_datetime", "customer_id", "terminal_id",
        tx_fraud=pl.lit(1, pl.Int8), source=pl.lit("test"),
        reported_at=pl.lit(dt.datetime.combine(on, dt.time(12)), pl.Datetime("us")),
    ).select(list(LABEL_DTYPES))


def test_a_report_of_a_young_transaction_counts_for_its_customer_not_for_terminal_risk(history, labels):
    """Terminal windows end LABEL_MATURITY_DAYS back, so that each of their transactions has
    matured; a customer's known frauds count every report made by the end of D-1."""
    before = features_of_day(history, labels)
    young = history.filter(pl.col("tx_datetime").dt.date().is_between(
        D - dt.timedelta(days=SPEC.label_delay), D - dt.timedelta(days=1)))
    after = features_of_day(history, pl.concat([labels, reported(young, D - dt.timedelta(days=1))]))
    for w in (1, 7, 30):
        assert after[f"terminal_risk_{w}d_delayed"].equals(before[f"terminal_risk_{w}d_delayed"])
    assert after["customer_frauds_known_30d"].sum() > before["customer_frauds_known_30d"].sum()


def test_a_report_of_a_mature_transaction_changes_terminal_risk_from_the_next_day(history, labels):
    """The counterpart of the test above, so that one can fail; and a report made on day D
    itself changes nothing on D."""
    before = features_of_day(history, labels)
    old = history.filter(pl.col("tx_datetime").dt.date() == D - dt.timedelta(days=SPEC.label_delay + 1))
    same_day = features_of_day(history, pl.concat([labels, reported(old, D)]))
    assert_frame_equal(same_day, before)
    after = features_of_day(history, pl.concat([labels, reported(old, D - dt.timedelta(days=1))]))
    assert not after["terminal_risk_1d_delayed"].equals(before["terminal_risk_1d_delayed"])


def tx(day: dt.date, hour: int, customer: int, terminal: int, amount: float, fraud: int, tid: int,
       minute: int = 0):
    return {
        "transaction_id": tid,
        "tx_datetime": dt.datetime.combine(day, dt.time(hour, minute)),
        "customer_id": customer,
        "terminal_id": terminal,
        "tx_amount": amount,
        "tx_fraud": fraud,
        "tx_fraud_scenario": fraud,
    }


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows).with_columns(
        pl.col("tx_datetime").cast(pl.Datetime("us")),
        pl.col("tx_fraud", "tx_fraud_scenario").cast(pl.Int8),
    )


def test_features_match_a_hand_computed_case():
    day = dt.date(2025, 6, 14)  # a Saturday
    ago = lambda n: day - dt.timedelta(days=n)  # noqa: E731
    rows = [
        tx(ago(1), 12, 1, 7, 10.0, 0, 1),
        tx(ago(1), 13, 1, 7, 30.0, 0, 2),
        tx(ago(5), 9, 1, 8, 20.0, 0, 3),
        tx(ago(20), 9, 1, 8, 40.0, 0, 4),
        tx(ago(8), 10, 2, 7, 50.0, 1, 5),  # reported 2 days ago: known
        tx(ago(8), 11, 3, 7, 50.0, 0, 6),
        tx(ago(3), 10, 2, 7, 50.0, 1, 7),  # reported today: not known yet
        tx(day, 3, 1, 7, 60.0, 0, 8),
        tx(day, 15, 9, 99, 5.0, 0, 9),  # unknown customer and terminal
        tx(day, 3, 1, 8, 6.0, 0, 10, minute=30),
        tx(day, 3, 1, 9, 7.0, 0, 11, minute=30),  # the same second as 10: neither sees the other
        tx(day, 16, 2, 99, 5.0, 0, 12),
    ]
    transactions = frame(rows)
    labels = pl.concat([reported(transactions.filter(pl.col("transaction_id") == 5), ago(2)),
                        reported(transactions.filter(pl.col("transaction_id") == 7), day)])
    f = {r["transaction_id"]: r
         for r in batch_features(transactions, day, day, SPEC, labels=labels)[0].to_dicts()}
    first = f[8]
    assert first["customer_nb_tx_1d"] == 0 and first["customer_amount_1d"] == 0
    assert first["customer_nb_tx_7d"] == 3
    assert first["customer_mean_amount_7d"] == 20.0
    assert first["customer_std_amount_7d"] == pytest.approx((200 / 3) ** 0.5)
    assert first["customer_nb_tx_30d"] == 4
    assert first["customer_mean_amount_30d"] == 25.0
    assert first["amount_to_customer_mean_30d"] == pytest.approx(60 / 25)
    assert first["customer_nb_terminals_24h"] == 1  # yesterday's 12:00 and 13:00, terminal 7
    assert first["customer_seconds_since_previous"] == 14 * 3600
    assert first["customer_nb_tx_1h"] == 0
    assert first["tx_hour"] == 3.0 and first["tx_is_night"] == 1 and first["tx_is_weekend"] == 1
    # Terminal 7 on day-8 (the last matured day): 2 transactions, 1 reported fraud.
    assert first["terminal_nb_tx_1d_delayed"] == 2
    assert first["terminal_risk_1d_delayed"] == 0.5
    assert first["terminal_nb_tx_7d_delayed"] == 2
    for later in (f[10], f[11]):  # half an hour after transaction 8, at other terminals
        assert later["customer_nb_tx_1d"] == 1 and later["customer_amount_1d"] == 60.0
        assert later["customer_mean_amount_1d"] == 60.0 and later["customer_std_amount_1d"] == 0
        assert later["customer_nb_tx_1h"] == 1 and later["customer_amount_1h"] == 60.0
        assert later["customer_nb_tx_7d"] == 4 and later["customer_nb_tx_30d"] == 5
        assert later["customer_seconds_since_previous"] == 1800
        assert later["customer_nb_terminals_24h"] == 1
    assert f[12]["customer_frauds_known_30d"] == 1  # transaction 5; 7 is reported today
    assert first["customer_frauds_known_30d"] == 0
    unknown = f[9]
    assert all(unknown[c] == 0 for c in FEATURE_COLUMNS
               if c.startswith(("customer_", "terminal_")) and c != "customer_seconds_since_previous")
    assert unknown["customer_seconds_since_previous"] == MAX_SECONDS_SINCE_PREVIOUS
    assert unknown["amount_to_customer_mean_30d"] == 0 and unknown["amount_zscore_30d"] == 0


def test_windows_end_at_the_transaction_an_hour_and_a_day_back_exactly():
    day = dt.date(2025, 6, 14)
    at = dt.datetime(2025, 6, 14, 10)
    earlier = [at - dt.timedelta(hours=1), at - dt.timedelta(hours=1, microseconds=1),
               at - dt.timedelta(hours=24), at - dt.timedelta(hours=24, microseconds=1)]
    rows = [{**tx(day, 0, 1, 10 + i, 1.0, 0, 1 + i), "tx_datetime": when}
            for i, when in enumerate(earlier)] + [tx(day, 10, 1, 99, 2.0, 0, 9)]
    [last] = batch_features(frame(rows), day, day, SPEC, labels=None)[0].filter(
        pl.col("transaction_id") == 9).to_dicts()
    assert last["customer_nb_tx_1h"] == 1  # [t - 1 h, t)
    assert last["customer_nb_terminals_24h"] == 3  # [t - 24 h, t)
    assert last["customer_nb_tx_1d"] == 2  # since midnight
    assert last["customer_seconds_since_previous"] == 3600


def test_the_stored_state_gives_the_batch_features(history, labels):
    """What the online service will do: the state as of D-1 plus raw transactions of D."""
    features, states = batch_features(history, D - dt.timedelta(days=1), D, SPEC, labels=labels)
    state = states.filter(pl.col("state_date") == D - dt.timedelta(days=1))
    day_d = history.filter(pl.col("tx_datetime").dt.date() == D)
    online = features_for_day(day_d, state)
    batch = features.filter(pl.col("tx_datetime").dt.date() == D)
    assert_frame_equal(online.sort("transaction_id"), batch.sort("transaction_id"))


def test_vectorised_states_equal_the_plain_definition_day_by_day(history, labels):
    first = history["tx_datetime"].min().date()
    days = [first, first + dt.timedelta(days=SPEC.label_delay), D - dt.timedelta(days=1), D + dt.timedelta(days=5)]
    states = feature_states(history, days[0], days[-1], SPEC, labels=labels)
    order = ["entity", "customer_id", "terminal_id", "transaction_id"]
    for day in days:
        expected = state_as_of(history, day, SPEC, labels=labels).sort(order)
        got = states.filter(pl.col("state_date") == day).select(expected.columns).sort(order)
        assert set(got["entity"]) == {"customer", "terminal", "transaction"}
        assert_frame_equal(got, expected, check_dtypes=False)


@pytest.mark.slow  # ingests 51 days
def test_features_asset_reads_the_history_window(simulator_defs, instance, assets_dir):
    first, last = dt.date(2025, 1, 1), dt.date(2025, 2, 20)
    assert run_ingest(simulator_defs, instance, first, last).success
    partitions = instance.get_materialized_partitions(dg.AssetKey("transaction_features"))
    assert len(partitions) == (last - first).days + 1
    history = pl.concat(
        read_partition(assets_dir, "validated_transactions", first + dt.timedelta(days=i))
        for i in range((last - first).days + 1)
    )
    expected, _ = batch_features(history, last, last, SPEC, labels=read_days(assets_dir, "fraud_labels", first, last))
    stored = read_partition(assets_dir, "transaction_features", last)
    assert_frame_equal(stored.sort("transaction_id"), expected.sort("transaction_id"))
    state = read_partition(assets_dir, "feature_state", last)
    assert set(state["entity"]) == {"customer", "terminal", "transaction"}

    # A later single day reads its history window, not all history.
    next_day = last + dt.timedelta(days=1)
    result = run_ingest(simulator_defs, instance, next_day, next_day)
    (features_event,) = [
        m for m in result.asset_materializations_for_node("transaction_features")
        if m.asset_key == dg.AssetKey("transaction_features")
    ]
    window = history.filter(
        pl.col("tx_datetime").dt.date() >= next_day - dt.timedelta(days=SPEC.history_days())
    ).height + read_partition(assets_dir, "validated_transactions", next_day).height
    assert features_event.metadata["history_rows_read"].value == window


def test_the_batch_features_are_features_for_day_on_each_day(history, labels):
    """The batch path runs features_for_day's code on all days at once: same rows, same order."""
    one = dt.timedelta(days=1)
    first, last = D - 3 * one, D + 2 * one
    features, states = batch_features(history, first - one, last, SPEC, labels=labels)
    day = pl.col("tx_datetime").dt.date()
    expected = pl.concat(
        features_for_day(
            history.filter(day == first + i * one),
            states.filter(pl.col("state_date") == first + (i - 1) * one),
        )
        for i in range((last - first).days + 1)
    )
    assert_frame_equal(features.filter(day >= first), expected, check_exact=True)


def test_states_come_day_by_day_customers_then_terminals_by_id_then_transactions(history, labels):
    """So the IO manager cuts each day's feature_state file out without regrouping."""
    states = feature_states(history, D - dt.timedelta(days=3), D, SPEC, labels=labels)
    assert states.height > 0
    assert states.equals(states.sort("state_date", "entity", maintain_order=True))
    entities = states.filter(pl.col("entity") != "transaction")
    assert entities.equals(entities.sort("state_date", "entity", "customer_id", "terminal_id",
                                         maintain_order=True))


def test_hour_of_day_counts_minutes_and_seconds():
    transactions = pl.DataFrame({
        "transaction_id": [1, 2],
        "tx_datetime": [dt.datetime(2025, 3, 10, 14, 59, 59), dt.datetime(2025, 3, 10, 0, 3)],
        "customer_id": [1, 2],
        "terminal_id": [1, 2],
        "tx_amount": [10.0, 20.0],
    })
    state = state_as_of(transactions.clear(), D - dt.timedelta(days=1), SPEC, labels=None)
    hours = features_for_day(transactions, state)["tx_hour"].to_list()
    assert hours == pytest.approx([14 + 59 / 60 + 59 / 3600, 3 / 60])


def online_inputs(state: pl.DataFrame, day: pl.DataFrame):
    """What the online store holds for ``online_features``: state rows by id, and each
    customer's known transactions (the state's day and ``day``) as (microseconds, cents, terminal)."""
    entity = pl.col("entity")
    customers = {row[0]: row[1:] for row in state.filter(entity == "customer").select(
        "customer_id", *CUSTOMER_STATE).with_columns(pl.col("c_last_tx").dt.epoch("us")).iter_rows()}
    terminals = {row[0]: row[1:] for row in state.filter(entity == "terminal").select(
        "terminal_id", *TERMINAL_STATE).iter_rows()}
    events: dict[int, list] = {}
    known = pl.concat([state.filter(entity == "transaction").select(EVENT_COLUMNS),
                       day.with_columns(tx_cents=cents(pl.col("tx_amount"))).select(EVENT_COLUMNS)])
    for _, micros, customer, terminal, amount in known.with_columns(
            pl.col("tx_datetime").dt.epoch("us")).iter_rows():
        events.setdefault(customer, []).append((micros, amount, terminal))
    return customers, terminals, events


def test_online_features_of_one_transaction_equal_the_batch_ones_bit_for_bit_every_day(history, labels):
    one = dt.timedelta(days=1)
    features, states = batch_features(history, D - one, D + 3 * one, SPEC, labels=labels)
    day = pl.col("tx_datetime").dt.date()
    for i in range(4):
        on = D + i * one
        state = states.filter(pl.col("state_date") == on - one)
        transactions = history.filter(day == on)
        customers, terminals, events = online_inputs(state, transactions)
        online = pl.DataFrame([
            online_features(when, amount, customers.get(customer), terminals.get(terminal),
                            events.get(customer, ()))
            for _, when, customer, terminal, amount in transactions.select(
                *KEY_COLUMNS, "tx_amount").iter_rows()
        ], schema=list(FEATURE_COLUMNS), orient="row")
        batch = features.filter(day == on).select(FEATURE_COLUMNS)
        assert batch.height > 1000
        assert_frame_equal(online, batch, check_exact=True)


def test_a_day_in_two_halves_gets_the_features_of_the_whole_day(history, labels):
    """What the service does: the earlier transactions of the day count, whenever they came."""
    features, states = batch_features(history, D - dt.timedelta(days=1), D, SPEC, labels=labels)
    state = states.filter(pl.col("state_date") == D - dt.timedelta(days=1))
    day_d = history.filter(pl.col("tx_datetime").dt.date() == D)
    morning, afternoon = day_d.head(day_d.height // 2), day_d.tail(day_d.height - day_d.height // 2)
    later = features_for_day(afternoon, state, earlier=morning)
    assert_frame_equal(later, features.tail(afternoon.height), check_exact=True)


@pytest.mark.slow  # ingests 36 days
def test_the_feature_state_alone_is_materialised_as_with_the_features(simulator_defs, instance,
                                                                       assets_dir):
    """The two outputs may be selected apart (the UI's backfills need it: test_ui_backfill.py):
    the state alone is the same file, and the features' file is left as it was."""
    first, last = dt.date(2025, 1, 1), dt.date(2025, 2, 5)
    assert run_ingest(simulator_defs, instance, first, last).success
    state_file = assets_dir / "feature_state" / f"{last.isoformat()}.parquet"
    features_file = assets_dir / "transaction_features" / f"{last.isoformat()}.parquet"
    state, features_written = pl.read_parquet(state_file), features_file.stat().st_mtime_ns
    state_file.unlink()
    job = simulator_defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey("feature_state")])
    result = job.execute_in_process(instance=instance, partition_key=last.isoformat(),
                                    asset_selection=[dg.AssetKey("feature_state")])
    assert result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [
        dg.AssetKey("feature_state")]
    assert_frame_equal(pl.read_parquet(state_file), state)
    assert features_file.stat().st_mtime_ns == features_written
