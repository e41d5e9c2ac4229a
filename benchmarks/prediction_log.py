"""What the synchronous prediction log costs a request: ``PredictionLog.append`` timed.

    python3 -m uv run python benchmarks/prediction_log.py [--dir data] [--repeat 5]

Rows are what the service logs (a simulated day's features, probability, decision, model version,
time scored: 30 columns). Appends of 1 row (a single ``/predict``) and of 10,000 rows (a full
``/predict_batch``), to one open file as in the service, without and with ``fsync``, in a
temporary folder under ``--dir`` (put it on the disk the log goes to: a tmpfs syncs nothing).
Prints one JSON line per case: the best and the median of ``--repeat`` timeit rounds, per append.
"""

import argparse
import datetime as dt
import json
import tempfile
import timeit
from pathlib import Path

import numpy as np
import polars as pl

from fraud_dagster.core.labels import delivered_reports
from fraud_dagster.core.features import batch_features
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.serving.prediction_log import PredictionLog

DAY = dt.date(2025, 2, 20)


def logged_rows() -> pl.DataFrame:
    """A simulated day's rows as the service logs them (bento/service.py, ``_log``)."""
    transactions = Simulator(SimulatorConfig()).days(DAY - dt.timedelta(days=40), DAY)
    features, _ = batch_features(transactions, DAY, DAY, labels=delivered_reports(transactions))
    n = features.height
    return features.drop("tx_fraud", "tx_fraud_scenario", strict=False).hstack([
        pl.Series("fraud_probability", np.random.default_rng(0).random(n, dtype=np.float32)),
        pl.Series("is_fraud", np.random.default_rng(1).random(n) > 0.99),
        pl.repeat("3", n, eager=True).alias("model_version"),
        pl.repeat(dt.datetime.now(dt.timezone.utc), n, eager=True).alias("scored_at"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=Path("data"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = logged_rows()
    cases = {"1 row": (rows.head(1), 2_000), "10,000 rows": (
        pl.concat([rows] * (10_000 // rows.height + 1)).head(10_000), 50)}
    for fsync in (False, True):
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="prediction_log_") as folder:
            log = PredictionLog(Path(folder), fsync=fsync)
            log.append(rows.head(1))  # the day's file opened, as in a running service
            for name, (frame, number) in cases.items():
                number = number // 10 if fsync else number
                rounds = timeit.repeat(lambda: log.append(frame), number=number,
                                       repeat=args.repeat)
                per_append = sorted(seconds / number * 1e3 for seconds in rounds)
                print(json.dumps({"append": name, "columns": frame.width, "fsync": fsync,
                                  "best_ms": round(per_append[0], 3),
                                  "median_ms": round(per_append[len(per_append) // 2], 3)}))
            log.close()


if __name__ == "__main__":
    main()
