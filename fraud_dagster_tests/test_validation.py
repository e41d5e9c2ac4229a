import datetime as dt

import polars as pl
import pytest

from fraud_dagster.core.schema import QuarantinedTransaction, RawTransaction, ValidatedTransaction
from fraud_dagster.core.simulator import Simulator
from fraud_dagster.core.validation import DUPLICATE_ID, quarantine_rate_by_day, split_transactions

DAY = dt.date(2025, 1, 15)


def raw_day(n: int = 50) -> pl.DataFrame:
    return (
        Simulator().day(DAY).head(n)
        .with_columns(
            partition_date=pl.lit(DAY),
            source=pl.lit("test"),
            parse_errors=pl.lit(None, dtype=pl.Utf8),
            label_reported_at=pl.lit(None, dtype=pl.Datetime("us")),
        )
    )


def with_value(frame: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))


def reasons(frame: pl.DataFrame) -> dict[int, str]:
    split = split_transactions(frame)
    return dict(split.quarantined.select("transaction_id", "quarantine_reason").iter_rows())


@pytest.mark.parametrize(
    "amount, reason",
    [
        (-3.5, "tx_amount is negative"),
        (1_000_000.01, "tx_amount over 1,000,000.00"),
        (3.5e38, "tx_amount over 1,000,000.00"),
        (float("nan"), "tx_amount is NaN"),
        (float("inf"), "tx_amount is infinite"),
        (float("-inf"), "tx_amount is infinite; tx_amount is negative"),
        (None, "missing tx_amount"),
    ],
)
def test_quarantines_rows_with_bad_amounts(amount, reason):
    raw = with_value(raw_day(), 3, "tx_amount", amount)
    assert reasons(raw) == {raw["transaction_id"][3]: reason}


def test_a_zero_amount_card_verification_is_a_valid_transaction():
    raw = with_value(raw_day(), 3, "tx_amount", 0.0)
    assert reasons(raw) == {}


def test_quarantines_timestamps_outside_the_partition_day():
    raw = with_value(raw_day(), 0, "tx_datetime", dt.datetime(2025, 1, 16, 0, 0, 1))
    assert reasons(raw) == {raw["transaction_id"][0]: "tx_datetime outside 2025-01-15"}


def test_keeps_the_first_of_duplicate_ids_and_quarantines_the_rest():
    raw = raw_day()
    raw = with_value(raw, 5, "transaction_id", raw["transaction_id"][4])
    split = split_transactions(raw)
    assert split.quarantined["quarantine_reason"].to_list() == [DUPLICATE_ID]
    assert split.quarantined["customer_id"][0] == raw["customer_id"][5]
    assert split.validated["transaction_id"].n_unique() == split.validated.height


def test_a_valid_row_wins_over_an_invalid_duplicate():
    raw = raw_day()
    raw = with_value(raw, 5, "transaction_id", raw["transaction_id"][4])
    raw = with_value(raw, 4, "tx_amount", -1.0)
    split = split_transactions(raw)
    assert split.quarantined["quarantine_reason"].to_list() == ["tx_amount is negative"]
    assert raw["transaction_id"][4] in split.validated["transaction_id"].to_list()


def test_unreadable_values_and_bad_labels_are_quarantined_with_every_reason():
    raw = with_value(raw_day(), 1, "parse_errors", "tx_amount=abc")
    raw = with_value(raw, 1, "tx_amount", None)
    raw = with_value(raw, 2, "tx_fraud", 3)
    raw = with_value(raw, 2, "customer_id", -1)
    got = reasons(raw)
    assert got[raw["transaction_id"][1]] == "unreadable value: tx_amount=abc"
    assert got[raw["transaction_id"][2]] == "customer_id is negative; tx_fraud is not 0 or 1"


def test_a_delivered_label_reported_before_its_transaction_or_past_the_horizon_is_quarantined():
    raw = raw_day()
    t = raw["tx_datetime"]
    raw = with_value(raw, 1, "label_reported_at", t[1] - dt.timedelta(seconds=1))
    raw = with_value(raw, 2, "label_reported_at", t[2] + dt.timedelta(days=61))
    raw = with_value(raw, 3, "label_reported_at", t[3] + dt.timedelta(days=60))  # the horizon: fine
    raw = with_value(raw, 4, "tx_fraud", None)
    raw = with_value(raw, 4, "label_reported_at", t[4] + dt.timedelta(days=1))
    got = reasons(raw)
    ids = raw["transaction_id"]
    assert got[ids[1]] == "label_reported_at before tx_datetime"
    assert got[ids[2]] == "label_reported_at more than 60 days after tx_datetime"
    assert ids[3] not in got
    assert got[ids[4]] == "label_reported_at without tx_fraud"


def test_raw_rows_equal_validated_plus_quarantined_and_both_fit_their_schemas():
    raw = raw_day(500)
    for row, (column, value) in enumerate(
        [("tx_amount", -1.0), ("tx_amount", float("nan")), ("customer_id", None),
         ("tx_datetime", dt.datetime(2024, 1, 1)), ("terminal_id", -4), ("tx_fraud", 9)]
    ):
        raw = with_value(raw, row * 7, column, value)
    RawTransaction.validate(raw)
    split = split_transactions(raw)
    assert split.validated.height + split.quarantined.height == raw.height
    assert split.quarantined.height == 6
    ValidatedTransaction.validate(split.validated)
    QuarantinedTransaction.validate(split.quarantined)
    assert sorted(
        split.validated["transaction_id"].to_list() + split.quarantined["transaction_id"].to_list()
    ) == sorted(raw["transaction_id"].to_list())


def test_unlabelled_rows_are_valid():
    raw = raw_day().with_columns(
        tx_fraud=pl.lit(None, dtype=pl.Int8), tx_fraud_scenario=pl.lit(None, dtype=pl.Int8)
    )
    split = split_transactions(raw)
    assert split.quarantined.height == 0
    ValidatedTransaction.validate(split.validated)


def test_quarantine_rate_counts_days_that_lost_every_row():
    day2 = DAY + dt.timedelta(days=1)
    raw = pl.concat([raw_day(8), raw_day(4).with_columns(partition_date=pl.lit(day2))])
    raw = with_value(raw, 0, "tx_amount", -1.0)  # day 1: 1 of 8 quarantined
    split = split_transactions(raw)  # day 2: all 4 outside their day
    rates = quarantine_rate_by_day(split.validated, split.quarantined)
    assert rates.select("partition_date", "validated", "quarantined", "quarantine_rate").rows() == [
        (DAY, 7, 1, 1 / 8),
        (day2, 0, 4, 1.0),
    ]


def test_an_id_already_validated_on_another_day_is_quarantined_as_a_duplicate():
    raw = raw_day(10)
    earlier = pl.DataFrame(
        {"transaction_id": [raw["transaction_id"][2], 99], "day": [dt.date(2025, 1, 3)] * 2}
    )
    split = split_transactions(raw, validated_elsewhere=earlier)
    assert reasons_of(split) == {
        raw["transaction_id"][2]: f"{DUPLICATE_ID} (validated on 2025-01-03)"
    }
    assert split.validated.height + split.quarantined.height == raw.height
    QuarantinedTransaction.validate(split.quarantined)


def test_an_otherwise_invalid_row_keeps_its_own_reasons_too():
    raw = with_value(raw_day(10), 2, "tx_amount", -1.0)
    earlier = pl.DataFrame({"transaction_id": [raw["transaction_id"][2]], "day": [dt.date(2025, 1, 3)]})
    got = reasons_of(split_transactions(raw, validated_elsewhere=earlier))
    assert got == {
        raw["transaction_id"][2]:
            f"tx_amount is negative; {DUPLICATE_ID} (validated on 2025-01-03)"
    }


def reasons_of(split) -> dict[int, str]:
    return dict(split.quarantined.select("transaction_id", "quarantine_reason").iter_rows())
