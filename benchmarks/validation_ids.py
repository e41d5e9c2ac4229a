"""What the cross-day duplicate check costs: a year of validated days (the simulator's size), the
ids of 364 other days read, then one day split against them.

    python3 -m uv run --locked python benchmarks/validation_ids.py
"""
import datetime as dt, time, tempfile
from pathlib import Path
import numpy as np, polars as pl, dagster as dg
from fraud_dagster.core.simulator import Simulator
from fraud_dagster.io_managers import write_parquet_atomically
from fraud_dagster.resources import DailyTables
from upath import UPath
n = Simulator().day(dt.date(2025, 3, 1)).height
print("simulator rows a day (default 5,000 customers):", n)
root = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
first = dt.date(2025, 1, 1)
for i in range(365):
    day = first + dt.timedelta(days=i)
    f = pl.DataFrame({"transaction_id": i * 1_000_000 + np.arange(n), "tx_datetime": [dt.datetime(2025,1,1)] * n,
        "customer_id": rng.integers(0, 5000, n), "terminal_id": rng.integers(0, 10000, n),
        "tx_amount": rng.random(n) * 100, "tx_fraud": np.zeros(n, np.int8), "tx_fraud_scenario": np.zeros(n, np.int8)})
    write_parquet_atomically(f, UPath(root / "validated_transactions" / f"{day}.parquet"))
tables = DailyTables(base_path=str(root))
last = first + dt.timedelta(days=364)
for _ in range(3):
    t = time.perf_counter()
    other = tables.read_column_of_other_days(dg.AssetKey("validated_transactions"), "transaction_id", last, last)
    t1 = time.perf_counter() - t
print(f"read ids of {other['day'].n_unique()} other days ({other.height:,} ids, {other.estimated_size('mb'):.1f} MB): {t1:.2f} s")
from fraud_dagster.core.validation import split_transactions
raw = Simulator().day(last).with_columns(partition_date=pl.lit(last), source=pl.lit("x"), parse_errors=pl.lit(None, dtype=pl.Utf8))
t = time.perf_counter(); split_transactions(raw); a = time.perf_counter() - t
t = time.perf_counter(); split_transactions(raw, validated_elsewhere=other); b = time.perf_counter() - t
print(f"split one day: {a:.3f} s alone, {b:.3f} s against {other.height:,} ids")
