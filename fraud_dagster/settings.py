"""Where things live and which days exist, read from the environment with fixed defaults.

Nothing here looks at the clock: the partition range is the configured start date and, optionally,
a configured end date (otherwise Dagster's own partitions definition extends to the last full day
when it is evaluated, not when this module is imported).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

DEFAULT_START_DATE = "2025-01-01"
SOURCES = ("simulator", "landing")
SIMULATORS = ("fraud_dagster", "handbook")


def data_dir() -> Path:
    return Path(os.environ.get("FRAUD_DATA_DIR", "data")).resolve()


def start_date() -> dt.date:
    return dt.date.fromisoformat(os.environ.get("FRAUD_START_DATE", DEFAULT_START_DATE))


def end_date() -> dt.date | None:
    """Last partition (inclusive) if ``FRAUD_END_DATE`` is set."""
    value = os.environ.get("FRAUD_END_DATE")
    return dt.date.fromisoformat(value) if value else None


def source() -> str:
    value = os.environ.get("FRAUD_SOURCE", "simulator")
    if value not in SOURCES:
        raise ValueError(f"FRAUD_SOURCE must be one of {', '.join(SOURCES)}, not {value!r}")
    return value


def simulator() -> str:
    """``FRAUD_SIMULATOR``: ``fraud_dagster`` (default: five fraud scenarios and a drift) or
    ``handbook`` (the Fraud Detection Handbook's three scenarios, no drift)."""
    value = os.environ.get("FRAUD_SIMULATOR", "fraud_dagster")
    if value not in SIMULATORS:
        raise ValueError(f"FRAUD_SIMULATOR must be one of {', '.join(SIMULATORS)}, not {value!r}")
    return value


def landing_dir() -> Path:
    value = os.environ.get("FRAUD_LANDING_DIR")
    return Path(value).resolve() if value else data_dir() / "landing"


def landing_settle_seconds() -> float:
    """``FRAUD_LANDING_SETTLE_SECONDS`` (default 5): how long a landing file must go unmodified
    before the sensor reads it."""
    return float(os.environ.get("FRAUD_LANDING_SETTLE_SECONDS", "5"))


def drift_start() -> dt.date:
    """The simulator's drift begins here: ``FRAUD_DRIFT_START``, else 120 days after the start."""
    value = os.environ.get("FRAUD_DRIFT_START")
    return dt.date.fromisoformat(value) if value else start_date() + dt.timedelta(days=120)



def mlflow_tracking_uri() -> str | None:
    """MLflow's own ``MLFLOW_TRACKING_URI``, when set, moves tracking and registry off the local
    SQLite file under the data root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def alert_webhook_url() -> str | None:
    """``FRAUD_ALERT_WEBHOOK_URL``: alerts are also POSTed there as JSON when set."""
    return os.environ.get("FRAUD_ALERT_WEBHOOK_URL") or None
