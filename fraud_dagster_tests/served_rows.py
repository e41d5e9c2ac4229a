"""Rows as the prediction log holds them, for test_prediction_log.py and the processes it starts."""

import datetime as dt

import polars as pl

DAY = dt.date(2025, 2, 20)


def served_rows(day: dt.date, n: int, start: int = 0) -> pl.DataFrame:
    """What the service logs, reduced to the columns the online store replays, and a score."""
    return pl.DataFrame({
        "transaction_id": list(range(start, start + n)),
        "tx_datetime": [dt.datetime.combine(day, dt.time(12, 30))] * n,
        "customer_id": [7] * n,
        "terminal_id": [11] * n,
        "tx_amount": [42.5] * n,
        "fraud_probability": [0.5] * n,
    })
