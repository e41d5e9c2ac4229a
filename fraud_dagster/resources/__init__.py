"""Every resource, and the sets of them the definitions run with, side by side in one place.

``local_resources``: everything embedded under one data root. ``production_resources``: the same
resources with nothing embedded: asset files, trained models and MLflow's artifacts on
``FRAUD_STORAGE_URL`` (object storage), MLflow's tracking store and registry on PostgreSQL or an
MLflow server. ``default_resources``: the set ``FRAUD_DEPLOYMENT`` names, with the environment
variables of the README's table deciding the rest (``transaction_source``: where transactions
come from). Assets, sensors and checks ask for resources by key only, so a set is all a
deployment changes.
"""

from pathlib import Path

from upath import UPath

import fraud_dagster.known_warnings  # noqa: F401  (before dagster-mlflow: see there)
from fraud_dagster import settings
from fraud_dagster.io_managers import PickleIOManager, PolarsParquetIOManager
from fraud_dagster.resources.alert_sink import AlertSink
from fraud_dagster.resources.drift_policy import DriftPolicy
from fraud_dagster.resources.model_registry import ModelRegistry, mlflow_tracking
from fraud_dagster.resources.sources import LandingSource, SimulatorSource, TransactionSource
from fraud_dagster.resources.stores import BentoStore, DailyTables, PredictionLogStore

__all__ = [
    "AlertSink",
    "BentoStore",
    "DailyTables",
    "DriftPolicy",
    "LandingSource",
    "ModelRegistry",
    "PredictionLogStore",
    "SimulatorSource",
    "TransactionSource",
    "default_resources",
    "local_resources",
    "mlflow_tracking",
    "production_resources",
    "transaction_source",
]


def transaction_source() -> TransactionSource:
    """`FRAUD_SOURCE` picks where raw transactions come from."""
    if settings.source() == "landing":
        return LandingSource(landing_dir=str(settings.landing_dir()),
                             settle_seconds=settings.landing_settle_seconds())
    if settings.simulator() == "handbook":
        return SimulatorSource.handbook(scale=settings.simulator_scale())
    return SimulatorSource(drift_start=settings.drift_start().isoformat(),
                           scale=settings.simulator_scale())


def local_resources(
    data_dir: Path, source: TransactionSource, mlflow_tracking_uri: str | None = None,
    bentoml_home: Path | None = None, storage: str | None = None,
) -> dict:
    """Everything under one data root: parquet per asset and day, the trained model, MLflow's
    tracking and registry (SQLite) and artifacts, drift reports, alerts, and the folder the
    BentoML service logs its predictions to. ``storage`` (a URL) moves the asset files, the
    trained models and MLflow's artifacts there instead."""
    files = UPath(storage) if storage else UPath(data_dir)
    assets = str(files / "assets")
    model_registry = ModelRegistry(
        tracking_uri=mlflow_tracking_uri or f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}",
        monitoring_dir=str(data_dir / "monitoring"),
        artifact_location=str(files / "mlflow" / "artifacts"),
    )
    return {
        "io_manager": PolarsParquetIOManager(base_path=assets),
        "daily_tables": DailyTables(base_path=assets),
        "model_io_manager": PickleIOManager(base_path=str(files / "models")),
        "bento_store": BentoStore(home=str(bentoml_home or data_dir / "bentoml")),
        "transaction_source": source,
        "model_registry": model_registry,
        "prediction_logs": PredictionLogStore(folder=str(data_dir / "predictions")),
        "drift_policy": DriftPolicy(),
        "alerts": AlertSink(alerts_file=str(data_dir / "alerts" / "alerts.jsonl"),
                            webhook_url=settings.alert_webhook_url()),
        # The MLflow run of a Dagster run, on the registry's store and experiment.
        "mlflow": model_registry.mlflow_resource(),
    }


def production_resources(source: TransactionSource | None = None) -> dict:
    """The deployment set (``FRAUD_DEPLOYMENT=production``): ``local_resources``' resources with
    nothing embedded (``settings.PRODUCTION_SETTINGS``); ``source`` defaults to
    ``transaction_source()``. Refuses, naming each setting, when one is missing: a deployment
    must not fall back to files on one machine's disk."""
    missing = settings.production_missing()
    if missing:
        raise ValueError("FRAUD_DEPLOYMENT=production needs " + "; ".join(
            f"{name} ({settings.PRODUCTION_SETTINGS[name]})" for name in missing))
    return local_resources(settings.data_dir(), source or transaction_source(),
                           settings.mlflow_tracking_uri(), settings.bentoml_home(),
                           storage=settings.storage_url())


def default_resources() -> dict:
    """The set ``FRAUD_DEPLOYMENT`` names: the embedded local defaults, or the production set;
    the environment variables in README override either's locations."""
    if settings.deployment() == "production":
        return production_resources()
    # FRAUD_STORAGE_URL moves the files here too: the BentoML service reads the feature states
    # wherever it points, whichever set the pipeline runs with.
    return local_resources(settings.data_dir(), transaction_source(),
                           settings.mlflow_tracking_uri(), settings.bentoml_home(),
                           storage=settings.storage_url())
