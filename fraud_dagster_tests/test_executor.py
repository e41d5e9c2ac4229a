"""``FRAUD_EXECUTOR=multiprocess``: a run's independent steps run at the same time, each in a
process of its own (Dagster's multiprocess executor), on a real instance."""

import datetime as dt

import dagster as dg
import pytest

from fraud_dagster.partitions import partition_range_tags

DAY = dt.date(2025, 1, 2)


def ingest_job_from_environment() -> dg.JobDefinition:
    """``ingest_job`` of definitions built from the environment now (what a code location loads),
    importable by the step processes (``dg.reconstructable``)."""
    from fraud_dagster.definitions import make_definitions
    from fraud_dagster.resources import default_resources

    return make_definitions(default_resources()).resolve_job_def("ingest_job")


def step_intervals(instance, run_id: str) -> dict[str, tuple[float, float, int]]:
    """Step key -> (start, end, pid of the process that ran it), from the run's event log: from
    its process saying it executes the step (``STEP_WORKER_STARTED``, before it loads the code
    and resources: seconds) to ``STEP_SUCCESS``."""
    starts, intervals = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_WORKER_STARTED:
            starts[entry.step_key] = (entry.timestamp, event.pid)
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            start, pid = starts[entry.step_key]
            intervals[entry.step_key] = (start, entry.timestamp, pid)
    return intervals


def test_the_default_executor_runs_steps_in_the_runs_process(monkeypatch):
    monkeypatch.delenv("FRAUD_EXECUTOR", raising=False)
    assert ingest_job_from_environment().executor_def.name == "in_process"


def test_an_unknown_executor_is_refused_saying_which_exist(monkeypatch):
    monkeypatch.setenv("FRAUD_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="in_process, multiprocess"):
        ingest_job_from_environment()


@pytest.mark.slow  # a run whose steps are processes of their own
def test_multiprocess_runs_independent_steps_of_one_run_at_the_same_time(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUD_EXECUTOR", "multiprocess")
    monkeypatch.setenv("FRAUD_MAX_CONCURRENT_STEPS", "4")
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FRAUD_SOURCE", raising=False)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.execute_job(dg.reconstructable(ingest_job_from_environment), instance,
                                tags=partition_range_tags(DAY, DAY))
        assert result.success
        intervals = step_intervals(instance, result.run_id)
    assert set(intervals) >= {"raw_transactions", "validated_transactions",
                              "transaction_features"}
    checks = {step: span for step, span in intervals.items() if "validated_transactions_" in step}
    assert len(checks) == 4
    # Each step in a process of its own, and the four checks (which all wait for the validated
    # day only) at the same time: the last to start started before the first to end ended.
    assert len({pid for _, _, pid in intervals.values()}) == len(intervals)
    assert max(start for start, _, _ in checks.values()) < min(end for _, end, _ in checks.values())
    assert (tmp_path / "data" / "assets" / "transaction_features" / f"{DAY}.parquet").exists()
