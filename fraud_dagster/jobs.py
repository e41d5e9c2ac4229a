"""Jobs and the schedule. Each job selects assets of one partitioning only: daily (ingest, daily)
or unpartitioned (retrain)."""

import dagster as dg

import fraud_dagster.known_warnings  # noqa: F401  (first: see there)
from dagster_mlflow import end_mlflow_on_run_finished

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("transactions", "features"),
    description="Raw, validated and quarantined transactions and their features for the selected"
    " days, in one run.",
)

RETRAIN_POOL = "retrain"
"""The concurrency pool of the model group's assets. dagster.yaml counts pools per run (run
granularity, limit 1): one run holding any of them at a time, retrain_job or a Materialize of
those assets from the UI (whose runs do not carry RETRAIN_TAGS)."""

RETRAIN_TAGS = {
    # dagster.yaml's tag_concurrency_limits: one retrain at a time (queued runs).
    "fraud/exclusive": "retrain",
    # run_retries retries a crashed or killed retrain, never one whose step failed: that one
    # fails the same way again (a refused challenger is a successful run, not a failure).
    "dagster/retry_on_asset_or_op_failure": "false",
}

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.groups("model"),
    description="Train fraud_model on its window of days, evaluate it against the champion and"
    " promote it when it wins.",
    # Marks the MLflow run FAILED when a step fails (the resource ends it either way).
    hooks={end_mlflow_on_run_finished},
    tags=RETRAIN_TAGS,
)

daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.groups("transactions", "features", "monitoring"),
    description="One day end to end: raw, validated, features, then its drift report.",
)

daily_ingest = dg.build_schedule_from_partitioned_job(
    daily_job,
    name="daily_ingest",
    hour_of_day=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Each night, the day that just ended: ingested, featurised and checked for drift.",
)
