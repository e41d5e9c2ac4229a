"""Every resource, and the sets of them the definitions run with, chosen in one place.

``local_resources``: everything under one data root. ``default_resources``: that, with the
environment variables of the README's table deciding the root, the transaction source
(``transaction_source``), MLflow's store and BentoML's home. A deployment that needs another kind
of resource builds its set here, under the same keys: assets, sensors and checks ask for
resources by key only.
"""

from pathlib import Path

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
    bentoml_home: Path | None = None,
) -> dict:
    """Everything under one data root: parquet per asset and day, the trained model, MLflow's
    tracking and registry (SQLite) and artifacts, drift reports, alerts, and the folder the
    BentoML service logs its predictions to."""
    assets = str(data_dir / "assets")
    mlflow_dir = data_dir / "mlflow"
    model_registry = ModelRegistry(
        tracking_uri=mlflow_tracking_uri or f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        monitoring_dir=str(data_dir / "monitoring"),
        artifact_location=str(mlflow_dir / "artifacts"),
    )
    return {
        "io_manager": PolarsParquetIOManager(base_path=assets),
        "daily_tables": DailyTables(base_path=assets),
        "model_io_manager": PickleIOManager(base_path=str(data_dir / "models")),
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


def default_resources() -> dict:
    """The embedded local defaults; the environment variables in README override them."""
    return local_resources(settings.data_dir(), transaction_source(),
                           settings.mlflow_tracking_uri(), settings.bentoml_home())
