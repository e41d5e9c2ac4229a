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


# --- Every exception is a reason; CSV and parquet read values the same way -------------------

from fraud_dagster_tests.landing_files import write_list_column_parquet  # noqa: E402


def test_a_list_typed_column_rejects_the_file_with_a_reason(tmp_path):
    """Before: polars' InvalidOperationError escaped and crashed every sensor tick."""
    with pytest.raises(LandingFileError, match="tx_amount"):
        read_landing_file(write_list_column_parquet(tmp_path, DAY, "tx_amount"))


def test_a_list_typed_column_that_is_ignored_does_not_matter(tmp_path):
    path = tmp_path / f"{DAY}.parquet"
    frame = pl.read_csv(write_handbook_csv(tmp_path, DAY, 5))
    frame.with_columns(tags=pl.Series([["a"], [], ["b", "c"], None, ["d"]])).write_parquet(path)
    landed = read_landing_file(path)
    assert landed.transactions.height == 5
    assert "tags" in landed.ignored_columns


def test_a_latin1_byte_in_an_ignored_column_does_not_reject_the_file(tmp_path):
    path = tmp_path / f"{DAY}.csv"
    handbook_frame(DAY, 3).with_columns(merchant=pl.lit("cafe")).write_csv(path)
    path.write_bytes(path.read_bytes().replace(b"cafe", b"caf\xe9"))
    landed = read_landing_file(path)
    assert landed.transactions.height == 3
    assert landed.transactions["parse_errors"].null_count() == 3


def test_a_latin1_byte_in_a_read_column_is_a_parse_error_for_that_row(tmp_path):
    path = tmp_path / f"{DAY}.csv"
    frame = handbook_frame(DAY, 3)
    frame.write_csv(path)
    first_id = str(frame["CUSTOMER_ID"][0]).encode()
    data = path.read_bytes().split(b"\n")
    data[1] = data[1].replace(b"," + first_id + b",", b"," + first_id + b"\xe9,", 1)
    path.write_bytes(b"\n".join(data))
    tx = read_landing_file(path).transactions
    assert tx["customer_id"][0] is None
    assert tx["parse_errors"][0].startswith("customer_id=")
    assert tx["parse_errors"][1:].null_count() == 2


def test_whole_number_ids_read_the_same_from_csv_and_parquet(tmp_path):
    """``1234.0`` is 1234 in both formats; ``2.5`` and ids past int64 are parse errors in both."""
    ids = [1234.0, 2.5, 7.0, 9.3e18, -3.0]
    frame = pl.read_csv(write_handbook_csv(tmp_path, DAY, 5)).with_columns(
        pl.Series("TRANSACTION_ID", ids)
    )
    csv_path, parquet_path = tmp_path / f"a_{DAY}.csv", tmp_path / f"a_{DAY}.parquet"
    frame.write_parquet(parquet_path)
    frame.with_columns(
        pl.Series("TRANSACTION_ID", ["1234.0", "2.5", "7.000", "9300000000000000000.0", "-3.0"])
    ).write_csv(csv_path)
    from_csv = read_landing_file(csv_path).transactions
    from_parquet = read_landing_file(parquet_path).transactions
    assert from_csv["transaction_id"].to_list() == [1234, None, 7, None, -3]
    assert from_parquet["transaction_id"].to_list() == [1234, None, 7, None, -3]
    assert from_csv["parse_errors"].is_null().to_list() == [True, False, True, False, True]
    assert from_parquet["parse_errors"].is_null().to_list() == [True, False, True, False, True]


def test_huge_ids_are_parse_errors_not_wrapped_or_rounded(tmp_path):
    path = tmp_path / f"{DAY}.csv"
    frame = handbook_frame(DAY, 3).with_columns(
        pl.Series("TRANSACTION_ID", ["9223372036854775807", "9223372036854775808", "12345678901234567890"])
    )
    frame.write_csv(path)
    tx = read_landing_file(path).transactions
    assert tx["transaction_id"].to_list() == [9223372036854775807, None, None]


def test_bom_crlf_and_padded_headers_are_read(tmp_path):
    path = tmp_path / f"{DAY}.csv"
    frame = handbook_frame(DAY, 4).rename({"TX_AMOUNT": " Tx_Amount "})
    text = frame.write_csv().replace("\n", "\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    tx = read_landing_file(path).transactions
    assert tx.height == 4
    assert tx["parse_errors"].null_count() == 4
    assert tx["transaction_id"].to_list() == frame["TRANSACTION_ID"].to_list()


def test_gzipped_csv_is_read(tmp_path):
    import gzip

    path = tmp_path / f"{DAY}.csv.gz"
    path.write_bytes(gzip.compress(handbook_frame(DAY, 6).write_csv().encode()))
    landed = read_landing_file(path)
    assert landed.day == DAY
    assert landed.transactions.height == 6


def test_reading_from_bytes_gives_the_same_file(tmp_path):
    """The sensor hashes and parses one read of the bytes, so what it judged is what it hashed."""
    from fraud_dagster.core.landing import parse_landing_bytes

    path = write_handbook_csv(tmp_path, DAY, 7)
    landed = parse_landing_bytes(path.name, path.read_bytes())
    assert landed.transactions.equals(read_landing_file(path).transactions)
