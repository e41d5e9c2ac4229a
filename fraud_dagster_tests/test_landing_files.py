import datetime as dt

import polars as pl
import pytest

from fraud_dagster.core.landing import LandingFileError, read_landing_file
from fraud_dagster.core.schema import POLARS_DTYPES, TRANSACTION_COLUMNS
from fraud_dagster_tests.landing_files import (
    handbook_frame,
    write_empty_file,
    write_garbage_csv,
    write_handbook_csv,
    write_parquet,
    write_truncated_parquet,
)

DAY = dt.date(2025, 2, 3)


def test_reads_the_handbook_layout_as_it_is(tmp_path):
    landed = read_landing_file(write_handbook_csv(tmp_path, DAY))
    assert landed.day == DAY
    assert landed.transactions.columns == [*TRANSACTION_COLUMNS, "parse_errors"]
    assert dict(landed.transactions.schema) == {**POLARS_DTYPES, "parse_errors": pl.Utf8()}
    assert landed.transactions["parse_errors"].null_count() == 200
    assert set(landed.ignored_columns) == {"", "TX_TIME_SECONDS", "TX_TIME_DAYS"}


def test_reads_typed_parquet_and_takes_the_day_from_the_name(tmp_path):
    landed = read_landing_file(write_parquet(tmp_path, DAY))
    assert landed.day == DAY
    assert landed.transactions.height == 200
    assert landed.ignored_columns == ()


def test_takes_the_day_from_the_rows_when_the_name_has_none(tmp_path):
    path = tmp_path / "export.csv"
    handbook_frame(DAY).write_csv(path)
    assert read_landing_file(path).day == DAY


def test_unlabelled_files_load_with_null_labels(tmp_path):
    path = tmp_path / f"{DAY}.csv"
    handbook_frame(DAY).drop("TX_FRAUD", "TX_FRAUD_SCENARIO").write_csv(path)
    transactions = read_landing_file(path).transactions
    assert transactions["tx_fraud"].null_count() == transactions.height


def test_wrong_types_become_parse_errors_not_a_rejected_file(tmp_path):
    frame = handbook_frame(DAY, 5).with_columns(pl.col("TX_AMOUNT").cast(pl.Utf8))
    frame = frame.with_columns(
        TX_AMOUNT=pl.Series(["12.5", "abc", "7", "", "1e400"]),
        CUSTOMER_ID=pl.Series(["1", "2", "x3", "4", "5"]),
    )
    path = tmp_path / f"{DAY}.csv"
    frame.write_csv(path)
    tx = read_landing_file(path).transactions
    assert tx["parse_errors"].to_list() == [
        None,
        "tx_amount=abc",
        "customer_id=x3",
        None,  # an empty cell is a missing value, which validation reports as such
        None,  # 1e400 reads as infinity, which validation quarantines
    ]
    assert tx["tx_amount"][4] == float("inf")


def test_fractional_ids_in_parquet_are_parse_errors(tmp_path):
    path = tmp_path / f"{DAY}.parquet"
    pl.read_csv(write_handbook_csv(tmp_path, DAY, 3)).with_columns(
        pl.Series("CUSTOMER_ID", [1.0, 2.5, 3.0])
    ).write_parquet(path)
    tx = read_landing_file(path).transactions
    assert tx["customer_id"].to_list() == [1, None, 3]
    assert tx["parse_errors"].to_list() == [None, "customer_id=2.5", None]


@pytest.mark.parametrize(
    "write, reason",
    [
        (write_empty_file, "empty"),
        (write_truncated_parquet, "cannot read .parquet"),
        (write_garbage_csv, "cannot read .csv"),
    ],
)
def test_unreadable_files_raise_a_reason(tmp_path, write, reason):
    with pytest.raises(LandingFileError, match=reason):
        read_landing_file(write(tmp_path, DAY))


def test_text_that_is_not_a_transaction_table_is_rejected(tmp_path):
    path = tmp_path / f"notes_{DAY}.csv"
    path.write_text("dear team,\nplease find the numbers attached\n")
    with pytest.raises(LandingFileError, match="missing required column"):
        read_landing_file(path)


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / f"{DAY}.csv"
    handbook_frame(DAY).drop("TX_AMOUNT", "TERMINAL_ID").write_csv(path)
    with pytest.raises(LandingFileError, match="terminal_id, tx_amount"):
        read_landing_file(path)


def test_a_header_without_rows_is_rejected(tmp_path):
    path = tmp_path / f"{DAY}.csv"
    handbook_frame(DAY).head(0).write_csv(path)
    with pytest.raises(LandingFileError, match="no rows"):
        read_landing_file(path)
