"""Where things live and which days exist, read from the environment with fixed defaults.

Nothing here looks at the clock: the partition range is the configured start date and, optionally,
a configured end date (otherwise Dagster's own partitions definition extends to the last full day
when it is evaluated, not when this module is imported).
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from pathlib import Path

DEFAULT_START_DATE = "2025-01-01"
SOURCES = ("simulator", "landing")
EXECUTORS = ("in_process", "multiprocess")
SIMULATORS = ("fraud_dagster", "handbook")
DEPLOYMENTS = ("local", "production")


def data_dir() -> Path:
    return Path(os.environ.get("FRAUD_DATA_DIR", "data")).resolve()


def deployment() -> str:
    """``FRAUD_DEPLOYMENT``: ``local`` (default: everything embedded under the data root) or
    ``production`` (``resources.production_resources``: files and models on
    ``FRAUD_STORAGE_URL``, MLflow on a server; nothing embedded)."""
    value = os.environ.get("FRAUD_DEPLOYMENT", "local")
    if value not in DEPLOYMENTS:
        raise ValueError(f"FRAUD_DEPLOYMENT must be one of {', '.join(DEPLOYMENTS)}, not {value!r}")
    return value


def storage_url() -> str | None:
    """``FRAUD_STORAGE_URL``: where asset files, trained models and MLflow's artifacts are kept
    instead of the data root (a production deployment must set it): an fsspec URL
    (``s3://bucket/prefix`` with ``s3fs`` installed, ``gs://...``, or
    ``file:///a/shared/volume``)."""
    return os.environ.get("FRAUD_STORAGE_URL") or None


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


MLFLOW_POSTGRES_SCHEMA = "mlflow"
"""MLflow's tables in a database of their own schema: Dagster's and MLflow's share table names
(``runs``, ``alembic_version``)."""


POSTGRES_SCHEME = "postgresql+psycopg2"
"""SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, on which dagster-postgres 0.29's
``NOTIFY run_events, %(id)s`` is a syntax error (it relies on psycopg2's client-side binding)."""


def postgres_url() -> str | None:
    """``FRAUD_POSTGRES_URL`` (``postgresql+psycopg2://user:password@host:port/database``): MLflow's
    tracking store and registry move there, and the Dagster instance of
    ``DAGSTER_HOME=deploy/postgres`` reads it."""
    value = os.environ.get("FRAUD_POSTGRES_URL") or None
    if value and urllib.parse.urlsplit(value).scheme != POSTGRES_SCHEME:
        raise ValueError(f"FRAUD_POSTGRES_URL must start with {POSTGRES_SCHEME}:// (dagster-postgres"
                         f" needs the psycopg2 driver), not {value.split('://')[0]}://")
    return value


def with_search_path(url: str, schema: str) -> str:
    """A ``postgresql://`` URL whose connections use ``schema`` (libpq's ``options``)."""
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def mlflow_tracking_uri() -> str | None:
    """Where MLflow's tracking store and registry are, when not the SQLite file under the data
    root: MLflow's own ``MLFLOW_TRACKING_URI`` if set, else schema ``mlflow`` of the database
    ``FRAUD_POSTGRES_URL`` names. The one place the project decides it."""
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    url = postgres_url()
    return with_search_path(url, MLFLOW_POSTGRES_SCHEMA) if url else None


def bentoml_home() -> Path | None:
    """``BENTOML_HOME``, BentoML's own variable, when set (else ``<data root>/bentoml``)."""
    value = os.environ.get("BENTOML_HOME")
    return Path(value).resolve() if value else None


def alert_webhook_url() -> str | None:
    """``FRAUD_ALERT_WEBHOOK_URL``: alerts are also POSTed there as JSON when set."""
    return os.environ.get("FRAUD_ALERT_WEBHOOK_URL") or None


def executor() -> str:
    """``FRAUD_EXECUTOR``: ``in_process`` (default: a run's steps one after another in its
    process) or ``multiprocess`` (independent steps at once, a process each)."""
    value = os.environ.get("FRAUD_EXECUTOR", "in_process")
    if value not in EXECUTORS:
        raise ValueError(f"FRAUD_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {value!r}")
    return value


def max_concurrent_steps() -> int:
    """``FRAUD_MAX_CONCURRENT_STEPS`` (default 2, the cores of a laptop here): how many steps of
    one run the multiprocess executor runs at once."""
    return int(os.environ.get("FRAUD_MAX_CONCURRENT_STEPS", "2"))


def simulator_scale() -> int:
    """``FRAUD_SIMULATOR_SCALE`` (default 1): the simulator's customers, terminals and daily fraud
    counts times this (10: about 100,000 transactions a day)."""
    value = int(os.environ.get("FRAUD_SIMULATOR_SCALE", "1"))
    if value < 1:
        raise ValueError(f"FRAUD_SIMULATOR_SCALE must be a whole number >= 1, not {value}")
    return value


PRODUCTION_SETTINGS = {
    "FRAUD_STORAGE_URL": "asset files, trained models and MLflow's artifacts (e.g. s3://bucket/fraud)",
    "FRAUD_POSTGRES_URL or MLFLOW_TRACKING_URI": "MLflow's tracking store and registry on a server,"
                                                 " not a SQLite file",
    "FRAUD_DATA_DIR": "a volume the BentoML service shares (its prediction log, drift reports,"
                      " alerts)",
    "BENTOML_HOME": "the model store the service reads (a shared volume)",
}
"""What ``resources.production_resources`` needs set, and what for."""


def production_missing() -> list[str]:
    """The ``PRODUCTION_SETTINGS`` the environment leaves unset or embedded."""
    tracking = mlflow_tracking_uri()
    given = {
        "FRAUD_STORAGE_URL": storage_url() is not None,
        "FRAUD_POSTGRES_URL or MLFLOW_TRACKING_URI": tracking is not None and not tracking.startswith(
            ("sqlite:", "file:", "/", ".")),
        "FRAUD_DATA_DIR": bool(os.environ.get("FRAUD_DATA_DIR")),
        "BENTOML_HOME": bentoml_home() is not None,
    }
    return [name for name, ok in given.items() if not ok]
