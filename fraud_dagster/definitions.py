"""The whole system in one place: assets, checks, jobs, sensors and resources."""

import warnings
from pathlib import Path

import dagster as dg

# Dagster warns, at import, about every beta or preview API it is asked for (single-run backfill
# policies, partitioned asset checks, dagster-pandera, dagster-mlflow): eight blocks before the
# first line of a run. They are known and chosen (README, Design choices); other warnings still
# show. Set here, before the modules below define anything, for every process that loads `defs`
# (fraud-dagster run, dagster dev, its code server and run workers).
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from fraud_dagster import settings
from fraud_dagster.alerts import AlertSink
from fraud_dagster.assets.monitoring import ModelRegistry, PredictionLogStore
from fraud_dagster.assets import features, labels, model, monitoring, serving, transactions
from fraud_dagster import checks
from fraud_dagster.io_managers import DailyTables, PickleIOManager, PolarsParquetIOManager
from fraud_dagster.jobs import daily_ingest, daily_job, ingest_job, retrain_job
from fraud_dagster.rejections import landing_rejections_job
from fraud_dagster.resources import (
    LandingSource,
    SimulatorSource,
    TransactionSource,
    mlflow_tracking,
)
from fraud_dagster.sensors import (
    DriftPolicy,
    check_failure_alerts,
    drift_sensor,
    landing_sensor,
    run_failure_alerts,
)


def transaction_source():
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
    tracking_uri = mlflow_tracking_uri or f"sqlite:///{mlflow_dir / 'mlflow.db'}"
    return {
        "io_manager": PolarsParquetIOManager(base_path=assets),
        "daily_tables": DailyTables(base_path=assets),
        "model_io_manager": PickleIOManager(base_path=str(data_dir / "models")),
        "bento_store": serving.BentoStore(home=str(bentoml_home or data_dir / "bentoml")),
        "transaction_source": source,
        "model_registry": ModelRegistry(tracking_uri=tracking_uri,
                                        monitoring_dir=str(data_dir / "monitoring")),
        "prediction_logs": PredictionLogStore(folder=str(data_dir / "predictions")),
        "drift_policy": DriftPolicy(),
        "alerts": AlertSink(alerts_file=str(data_dir / "alerts" / "alerts.jsonl"),
                            webhook_url=settings.alert_webhook_url()),
        "mlflow": mlflow_tracking.configured({
            "experiment_name": "fraud_dagster",
            "mlflow_tracking_uri": tracking_uri,
            "artifact_location": str(mlflow_dir / "artifacts"),
        }),
    }


def default_resources() -> dict:
    """The embedded local defaults; the environment variables in README override them."""
    return local_resources(settings.data_dir(), transaction_source(), settings.mlflow_tracking_uri(),
                           serving.bentoml_home_from_env())


def executor() -> dg.ExecutorDefinition:
    """``FRAUD_EXECUTOR``. In process by default: steps here are short and polars already uses
    every core, so a process per step mostly adds start-up time. ``multiprocess`` runs
    independent steps (the four validation checks of a day) at once,
    at most ``FRAUD_MAX_CONCURRENT_STEPS``. A deployment swaps in the Kubernetes or Celery
    executor here (README, Scaling out)."""
    if settings.executor() == "multiprocess":
        return dg.multiprocess_executor.configured(
            {"max_concurrent": settings.max_concurrent_steps()})
    return dg.in_process_executor


def make_definitions(resources: dict) -> dg.Definitions:
    return dg.Definitions(
        # prediction_log is an AssetSpec (written by the BentoML service, not by Dagster):
        # load_assets_from_modules does not collect specs, and a spec only named as a dep shows
        # nowhere in the catalog.
        assets=[*dg.load_assets_from_modules([transactions, labels, features, model, serving,
                                              monitoring]),
                monitoring.prediction_log],
        asset_checks=dg.load_asset_checks_from_modules([checks]),
        jobs=[ingest_job, daily_job, retrain_job, landing_rejections_job],
        schedules=[daily_ingest],
        sensors=[landing_sensor, drift_sensor, run_failure_alerts, check_failure_alerts],
        resources=resources,
        executor=executor(),
    )


defs = make_definitions(default_resources())
