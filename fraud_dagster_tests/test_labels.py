"""Labels as data: the simulator's report delays, the report rules, what is known when."""

import datetime as dt

import polars as pl
import pytest

from fraud_dagster.core.labels import (
    LABEL_DTYPES,
    LABEL_MATURITY_DAYS,
    LABEL_REPORT_DELAY_DAYS,
    MAX_LABEL_DELAY_DAYS,
    NEVER_REPORTED_SHARE,
    delivered_reports,
    known_labels,
    simulated_reports,
    split_reports,
)
from fraud_dagster.core.simulator import Simulator, SimulatorConfig

R = dt.date(2025, 5, 20)


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour))


@pytest.fixture(scope="module")
def simulated() -> pl.DataFrame:
    return Simulator(SimulatorConfig(n_customers=2_000, n_terminals=3_000)).days(
        dt.date(2025, 1, 1), dt.date(2025, 3, 31))


def test_simulated_frauds_are_reported_late_some_never_genuine_ones_not_at_all(simulated):
    delivered = simulated_reports(simulated, seed=42)
    assert delivered.height == simulated.height
    fraud = pl.col("tx_fraud_scenario") > 0
    assert delivered.filter(~fraud)["tx_fraud"].null_count() == delivered.filter(~fraud).height
    frauds = delivered.filter(fraud)
    never = frauds["tx_fraud"].null_count() / frauds.height
    assert abs(never - NEVER_REPORTED_SHARE) < 0.03
    reported = frauds.filter(pl.col("tx_fraud") == 1)
    delay = (reported["label_reported_at"] - reported["tx_datetime"]).dt.total_seconds() / 86_400
    assert delay.min() >= 0 and delay.max() <= MAX_LABEL_DELAY_DAYS
    assert (delay <= 7).mean() > 0.7  # most within a week
    assert (delay > 30).mean() > 0.03  # and a tail
    # Seeded per day: a day's reports do not depend on the other days simulated with it.
    one_day = simulated.filter(pl.col("tx_datetime").dt.date() == dt.date(2025, 2, 1))
    assert simulated_reports(one_day, seed=42).equals(
        delivered.filter(pl.col("tx_datetime").dt.date() == dt.date(2025, 2, 1)))
    assert not simulated_reports(simulated, seed=7).equals(delivered)


def test_a_delivered_label_without_a_time_is_reported_a_week_after_its_transaction():
    rows = pl.DataFrame({
        "transaction_id": [1, 2, 3], "tx_datetime": [at(R)] * 3, "customer_id": [1, 1, 2],
        "terminal_id": [5, 5, 6], "tx_fraud": [1, 0, None],
        "label_reported_at": [None, at(R + dt.timedelta(days=2)), None],
    }).cast({"tx_fraud": pl.Int8, "tx_datetime": pl.Datetime("us"),
             "label_reported_at": pl.Datetime("us")})
    reports = delivered_reports(rows)
    assert reports["transaction_id"].to_list() == [1, 2]  # 3 carries no label
    assert reports["reported_at"].to_list() == [at(R + dt.timedelta(days=LABEL_REPORT_DELAY_DAYS)),
                                                at(R + dt.timedelta(days=2))]
    assert delivered_reports(rows.drop("label_reported_at"))["reported_at"][1] == at(
        R + dt.timedelta(days=LABEL_REPORT_DELAY_DAYS))


def transactions() -> pl.DataFrame:
    return pl.DataFrame({
        "transaction_id": [10, 11, 12, 13],
        "tx_datetime": [at(R - dt.timedelta(days=3)), at(R - dt.timedelta(days=10)), at(R, 18),
                        at(R - dt.timedelta(days=1))],
        "customer_id": [1, 2, 3, 4], "terminal_id": [7, 7, 8, 9],
    }).cast({"tx_datetime": pl.Datetime("us")})


def reports(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["transaction_id", "tx_fraud", "reported_at", "source"],
                        orient="row").cast({"tx_fraud": pl.Int8, "reported_at": pl.Datetime("us")})


def test_each_bad_report_is_quarantined_with_its_reason_and_none_is_dropped():
    earlier = pl.DataFrame({"transaction_id": [11], "tx_fraud": [1],
                            "reported_at": [at(R - dt.timedelta(days=2))]}).cast(
        {"tx_fraud": pl.Int8, "reported_at": pl.Datetime("us")})
    delivered = reports([
        (10, 1, at(R, 9), "file"),        # good
        (10, 1, at(R, 10), "file"),       # the same report again
        (99, 1, at(R, 9), "file"),        # unknown transaction
        (12, 1, at(R, 9), "file"),        # before its transaction (18:00)
        (11, 0, at(R, 9), "file"),        # contradicts the earlier fraud report
        (13, 2, at(R, 9), "file"),        # not 0 or 1
        (13, None, at(R, 9), "file"),     # no label
        (None, 1, at(R, 9), "file"),      # no id
        (13, 1, at(R + dt.timedelta(days=1)), "file"),  # another day's report
    ])
    split = split_reports(delivered, R, transactions(), earlier)
    assert split.accepted.height + split.quarantined.height == delivered.height
    assert split.accepted["transaction_id"].to_list() == [10]
    assert split.accepted.schema == pl.Schema(LABEL_DTYPES)
    assert split.accepted["customer_id"].to_list() == [1]
    reasons = split.quarantined["quarantine_reason"].to_list()
    assert reasons[0] == "repeats a report of the same day"
    assert reasons[1].startswith("unknown transaction_id")
    assert reasons[2] == "reported before its transaction"
    assert reasons[3] == f"conflicts with the label reported on {R - dt.timedelta(days=2)}"
    assert reasons[4] == reasons[5] == "tx_fraud is not 0 or 1"
    assert reasons[6].startswith("missing transaction_id")
    assert reasons[7] == f"reported_at outside {R}"


def test_conflicting_reports_of_one_day_are_all_quarantined():
    split = split_reports(reports([(10, 1, at(R, 9), "a"), (10, 0, at(R, 10), "b")]), R,
                          transactions(), pl.DataFrame(schema=LABEL_DTYPES))
    assert split.accepted.height == 0
    assert split.quarantined["quarantine_reason"].to_list() == [
        "conflicting labels reported the same day"] * 2


def test_a_label_is_known_from_its_report_and_genuine_only_once_matured():
    tx = pl.DataFrame({"transaction_id": [1, 2, 3],
                       "tx_datetime": [at(R), at(R), at(R)]}).cast({"tx_datetime": pl.Datetime("us")})
    labels = reports([(1, 1, at(R + dt.timedelta(days=3)), "x"),
                      (2, 0, at(R + dt.timedelta(days=1)), "x")])

    def on(days: int) -> list:
        return known_labels(tx, labels, R + dt.timedelta(days=days)).to_list()

    assert on(0) == [None, None, None]
    assert on(1) == [None, 0, None]     # a genuine report counts from its day
    assert on(3) == [1, 0, None]        # the fraud report from its day
    assert on(LABEL_MATURITY_DAYS - 1) == [1, 0, None]
    assert on(LABEL_MATURITY_DAYS) == [1, 0, 0]  # unreported and matured: genuine
