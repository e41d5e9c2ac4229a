"""The whole system in one place: assets, checks, jobs and sensors, with the resources of
``fraud_dagster.resources`` (the environment picks them there)."""

import os

import dagster as dg

import fraud_dagster.known_warnings  # noqa: F401  (first: see there)

# A step that materialises many partitions (a backfill's single run) records their
# materialisations as one batch: on PostgreSQL one INSERT and one index transaction for all of
# them instead of a few commits each (measured in README, Benchmark). Dagster's own opt-in, which
# its cloud deployments use; on SQLite it changes nothing (that storage writes a batch event by
# event). Read by the process that runs the steps each time it stores an event: set here, where
# every such process loads the code; an environment that sets it wins.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")

from fraud_dagster import settings
from fraud_dagster.assets import features, labels, model, monitoring, serving, transactions
from fraud_dagster import checks
from fraud_dagster.jobs import daily_ingest, daily_job, ingest_job, retrain_job
from fraud_dagster.rejections import landing_rejections_job
from fraud_dagster.resources import default_resources
from fraud_dagster.sensors import (
    check_failure_alerts,
    drift_sensor,
    landing_sensor,
    run_failure_alerts,
)


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
