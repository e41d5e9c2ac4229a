"""Landing files as users produce them, including broken ones."""

import datetime as dt
from pathlib import Path

import polars as pl

from fraud_dagster.core.simulator import Simulator

HANDBOOK_HEADER = (
    ",TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,"
    "TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO"
)


def handbook_frame(day: dt.date, n: int = 200) -> pl.DataFrame:
    """A day in the Fraud Detection Handbook's layout (upper case, its extra columns)."""
    tx = Simulator().day(day).head(n)
    return pl.DataFrame(
        {
            "": range(tx.height),
            "TRANSACTION_ID": tx["transaction_id"],
            "TX_DATETIME": tx["tx_datetime"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "CUSTOMER_ID": tx["customer_id"],
            "TERMINAL_ID": tx["terminal_id"],
            "TX_AMOUNT": tx["tx_amount"],
            "TX_TIME_SECONDS": tx["tx_datetime"].dt.second(),
            "TX_TIME_DAYS": [0] * tx.height,
            "TX_FRAUD": tx["tx_fraud"],
            "TX_FRAUD_SCENARIO": tx["tx_fraud_scenario"],
        }
    )


def write_handbook_csv(folder: Path, day: dt.date, n: int = 200, name: str | None = None) -> Path:
    path = folder / (name or f"{day.isoformat()}.csv")
    handbook_frame(day, n).write_csv(path)
    return path


def write_parquet(folder: Path, day: dt.date, n: int = 200) -> Path:
    path = folder / f"transactions_{day.isoformat()}.parquet"
    Simulator().day(day).head(n).write_parquet(path)
    return path


def write_truncated_parquet(folder: Path, day: dt.date) -> Path:
    whole = write_parquet(folder, day)
    data = whole.read_bytes()
    whole.unlink()
    path = folder / f"truncated_{day.isoformat()}.parquet"
    path.write_bytes(data[: len(data) // 2])
    return path


def write_garbage_csv(folder: Path, day: dt.date) -> Path:
    path = folder / f"garbage_{day.isoformat()}.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe garbage; not, a csv\n\x00\x01")
    return path


def write_empty_file(folder: Path, day: dt.date) -> Path:
    path = folder / f"empty_{day.isoformat()}.csv"
    path.touch()
    return path


def settle(*paths: Path, seconds: float = 3600) -> None:
    """Make files look untouched for ``seconds``: what a finished delivery looks like to the
    sensor's settle time. Symlinks are aged themselves, not their targets."""
    import os
    import time

    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then), follow_symlinks=False)


def write_list_column_parquet(folder: Path, day: dt.date, column: str = "tx_amount") -> Path:
    """A parquet file whose ``column`` holds lists (pyarrow writes them, polars cannot cast them)."""
    path = folder / f"lists_{column}_{day.isoformat()}.parquet"
    frame = Simulator().day(day).head(20)
    frame.with_columns(pl.concat_list(pl.col(column), pl.col(column)).alias(column)).write_parquet(path)
    return path


def land_accepted(landing_dir, day: dt.date, frame: pl.DataFrame) -> None:
    """``frame`` as the file that makes ``day`` in ``landing/_accepted/`` (what an ingest reads)."""
    folder = landing_dir / "_accepted" / day.isoformat()
    folder.mkdir(parents=True)
    frame.write_csv(folder / f"{day}.csv")


def corrupt_amounts(frame: pl.DataFrame, rows: int) -> pl.DataFrame:
    """A handbook frame whose first ``rows`` amounts are negative (quarantined)."""
    amounts = frame["TX_AMOUNT"].to_list()
    for i in range(rows):
        amounts[i] = -1.0
    return frame.with_columns(pl.Series("TX_AMOUNT", amounts))
