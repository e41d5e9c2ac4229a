"""Definitions for test_run_monitoring: a job whose op sleeps, and a sensor (evaluated by the
daemon) that requests two of them, then a quick run once a flag file exists."""

import os
import time
from pathlib import Path

import dagster as dg

FLAG = Path(os.environ["FRAUD_TEST_FLAG_DIR"])


@dg.op
def sleep_long():
    time.sleep(3600)


@dg.op
def quick():
    return 1


sleepy_job = dg.GraphDefinition(name="sleepy_job", node_defs=[sleep_long]).to_job(
    executor_def=dg.in_process_executor)
quick_job = dg.GraphDefinition(name="quick_job", node_defs=[quick]).to_job(
    executor_def=dg.in_process_executor)


@dg.sensor(jobs=[sleepy_job, quick_job], minimum_interval_seconds=1,
           default_status=dg.DefaultSensorStatus.RUNNING)
def crash_test_sensor():
    requests = [dg.RunRequest(run_key=f"sleepy-{i}", job_name="sleepy_job") for i in (1, 2)]
    if (FLAG / "quick").exists():
        requests.append(dg.RunRequest(run_key="quick", job_name="quick_job"))
    return requests


defs = dg.Definitions(jobs=[sleepy_job, quick_job], sensors=[crash_test_sensor])
