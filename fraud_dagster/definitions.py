"""The whole system in one place: assets, checks, jobs, sensors and resources."""

import dagster as dg

from fraud_dagster import settings
from fraud_dagster.assets import features, transactions
from fraud_dagster.checks import validation_checks
from fraud_dagster.io_managers import PolarsParquetIOManager
from fraud_dagster.jobs import ingest_job
from fraud_dagster.resources import LandingSource, SimulatorSource
from fraud_dagster.sensors import landing_sensor


def transaction_source():
    """``FRAUD_SOURCE`` picks where raw transactions come from."""
    if settings.source() == "landing":
        return LandingSource(landing_dir=str(settings.landing_dir()))
    return SimulatorSource(drift_start=settings.drift_start().isoformat())


def default_resources() -> dict:
    """The embedded local defaults; the environment variables in README override them."""
    return {
        "io_manager": PolarsParquetIOManager(base_path=str(settings.data_dir() / "assets")),
        "transaction_source": transaction_source(),
    }


def make_definitions(resources: dict) -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_modules([transactions, features]),
        asset_checks=validation_checks,
        jobs=[ingest_job],
        sensors=[landing_sensor],
        resources=resources,
        # Steps here are short and polars already uses every core: a process per step would only
        # add start-up time. A deployment swaps in the Kubernetes or Celery executor here.
        executor=dg.in_process_executor,
    )


defs = make_definitions(default_resources())
