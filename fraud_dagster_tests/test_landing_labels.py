"""Labels delivered late, as files: transactions without labels land first, label files later;
features and what training sees change exactly when the reports are made, not before."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from fraud_dagster.assets.model import labelled_features
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.core.training import Window
from fraud_dagster.resources import DailyTables
from fraud_dagster_tests.pipeline import read_days, read_partition
from fraud_dagster_tests.landing_files import settle
from fraud_dagster_tests.landing_daemon import Daemon

D = dt.date(2025, 3, 3)
LAST = D + dt.timedelta(days=13)
REPORTED = D + dt.timedelta(days=5)


def day(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


@pytest.mark.slow  # ingests two weeks, then their labels, in several runs
def test_label_files_arrive_later_and_count_from_the_day_they_report(
        landing_defs, instance, landing_dir, assets_dir):
    simulator = Simulator(SimulatorConfig(n_customers=60, n_terminals=120))
    transactions = simulator.days(D, LAST).drop("tx_fraud", "tx_fraud_scenario")
    for i in range(14):
        rows = transactions.filter(pl.col("tx_datetime").dt.date() == day(i))
        path = landing_dir / f"transactions_{day(i)}.parquet"
        rows.write_parquet(path)
        settle(path)
    daemon = Daemon(landing_defs, instance, landing_dir)
    [ingest] = daemon.tick()
    assert daemon.results[-1].success
    assert read_days(assets_dir, "fraud_labels", D, LAST).height == 0
    before = read_days(assets_dir, "transaction_features", D, LAST)
    assert before["customer_frauds_known_30d"].sum() == 0

    # A transaction of day 1 whose customer comes back on days 5 and 6, reported on day 5.
    day1 = transactions.filter(pl.col("tx_datetime").dt.date() == day(1))
    customers = set(transactions.filter(pl.col("tx_datetime").dt.date() == day(5))["customer_id"]) & set(
        transactions.filter(pl.col("tx_datetime").dt.date() == day(6))["customer_id"])
    fraud = day1.filter(pl.col("customer_id").is_in(sorted(customers))).row(0, named=True)
    other = day1.filter(pl.col("customer_id") != fraud["customer_id"]).row(0, named=True)
    at = dt.datetime.combine(REPORTED, dt.time(10))
    (landing_dir / "labels").mkdir()
    label_file = landing_dir / "labels" / f"chargebacks_{REPORTED}.csv"
    pl.DataFrame({
        "transaction_id": [fraud["transaction_id"], 999_999_999_999, other["transaction_id"],
                           other["transaction_id"]],
        "tx_fraud": [1, 1, 1, 0],
        "reported_at": [at] * 4,
    }).write_csv(label_file)
    settle(label_file)
    [labels_run] = daemon.tick()
    assert daemon.results[-1].success
    assert labels_run.tags["dagster/asset_partition_range_start"] == REPORTED.isoformat()
    assert labels_run.tags["dagster/asset_partition_range_end"] == LAST.isoformat()
    assert (landing_dir / "labels" / "_accepted" / REPORTED.isoformat() / label_file.name).exists()

    accepted = read_partition(assets_dir, "fraud_labels", REPORTED)
    assert accepted["transaction_id"].to_list() == [fraud["transaction_id"]]
    assert accepted["customer_id"].to_list() == [fraud["customer_id"]]
    quarantined = read_partition(assets_dir, "quarantined_labels", REPORTED)
    reasons = dict(zip(quarantined["transaction_id"], quarantined["quarantine_reason"]))
    assert reasons[999_999_999_999].startswith("unknown transaction_id")
    assert quarantined.filter(pl.col("transaction_id") == other["transaction_id"])[
        "quarantine_reason"].to_list() == ["conflicting labels reported the same day"] * 2
    assert accepted.height + quarantined.height == 4  # nothing dropped

    # The customer's known frauds: 0 up to the report's day, 1 from the next day on.
    after = read_days(assets_dir, "transaction_features", D, LAST)
    of_customer = after.filter(pl.col("customer_id") == fraud["customer_id"]).with_columns(
        _day=pl.col("tx_datetime").dt.date())
    known = dict(of_customer.group_by("_day").agg(pl.col("customer_frauds_known_30d").max()).iter_rows())
    assert known[day(5)] == 0 and known[day(6)] == 1
    assert all(v == (1 if d > REPORTED else 0) for d, v in known.items())
    # Nothing else moved: every other customer's features are as before.
    unchanged = pl.col("customer_id") != fraud["customer_id"]
    columns = [c for c in before.columns if not c.startswith("terminal_risk")]
    assert after.filter(unchanged).select(columns).sort("transaction_id").equals(
        before.filter(unchanged).select(columns).sort("transaction_id"))

    # What training sees of day 1: the fraud from its report on, the rest once matured.
    tables = DailyTables(base_path=str(assets_dir))
    window = Window(day(1), day(1))
    seen = {as_of: labelled_features(tables, window, day(as_of))[0] for as_of in (4, 5, 8)}
    assert seen[4].height == 0
    assert seen[5]["transaction_id"].to_list() == [fraud["transaction_id"]]
    assert seen[5]["tx_fraud"].to_list() == [1]
    assert seen[8].height == day1.height
    assert seen[8]["tx_fraud"].sum() == 1
    partitions = instance.get_materialized_partitions(dg.AssetKey("fraud_labels"))
    assert {day(i).isoformat() for i in range(14)} <= partitions
