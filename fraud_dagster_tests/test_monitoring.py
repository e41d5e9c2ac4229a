"""The daily loop end to end on simulated data with drift injected from a known day (2025-03-01):
clean days do not trigger a retrain; drifted days defer one until post-drift labels have matured,
then launch exactly one, whose training window holds them; the retrain runs by the rule."""

import datetime as dt
import json
import uuid

import dagster as dg
import pytest

from fraud_dagster import registry
from fraud_dagster.alerts import read_alerts
from fraud_dagster.partitions import partition_range_tags
from fraud_dagster.resources import AlertSink, DailyTables, DriftPolicy
from fraud_dagster.sensors import drift_sensor
from fraud_dagster_tests.pipeline import FAST, client_for, copy_project, new_project, run_ingest

pytestmark = pytest.mark.slow  # a full-population project, trained, and a month of daily runs

DRIFT_START = dt.date(2025, 3, 1)
POLICY = DriftPolicy()
CLEAN = (dt.date(2025, 2, 22), dt.date(2025, 2, 28))
DRIFTED = (DRIFT_START, DRIFT_START + dt.timedelta(days=6))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Ingested up to the drift, with a champion trained on clean days, then the clean week's
    daily runs (its drift reports). Read it only: ``project`` is a copy to change."""
    # The simulator's full population (about 10,000 transactions a day): on the small one a
    # clean day's 1-day customer aggregates are noisy enough to look drifted.
    source = dict(drift_start=DRIFT_START.isoformat())
    with new_project(tmp_path_factory.mktemp("monitoring") / "project", source) as project:
        assert run_ingest(project.defs, project.instance, dt.date(2025, 1, 1), CLEAN[1]).success
        retrain = project.defs.resolve_job_def("retrain_job").execute_in_process(
            instance=project.instance,
            run_config={"ops": {"fraud_model": {"config": {"models": ["xgboost"], **FAST}}}},
        )
        assert retrain.success
        run_daily(project.defs, project.instance, *CLEAN)
        yield project


@pytest.fixture
def project(clean, tmp_path):
    """A copy of ``clean`` for this test alone."""
    with copy_project(clean, tmp_path / "project") as copy:
        yield copy


def run_daily(defs, instance, first, last):
    result = defs.resolve_job_def("daily_job").execute_in_process(
        instance=instance, tags=partition_range_tags(first, last), raise_on_error=False
    )
    assert result.success
    return result


def evaluate_sensor(instance, data_dir, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"drift_policy": POLICY,
                   "daily_tables": DailyTables(base_path=str(data_dir / "assets")),
                   "alerts": AlertSink(alerts_file=str(data_dir / "alerts" / "alerts.jsonl"))},
    )
    result = drift_sensor(context)
    return list(result.run_requests or []), result.cursor


def skip_reason(instance, data_dir, cursor) -> str:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"drift_policy": POLICY,
                   "daily_tables": DailyTables(base_path=str(data_dir / "assets")),
                   "alerts": AlertSink(alerts_file=str(data_dir / "alerts" / "alerts.jsonl"))},
    )
    return drift_sensor(context).skip_reason.skip_message


def test_clean_days_get_drift_reports_and_do_not_trigger(clean):
    instance, data_dir = clean.instance, clean.data_dir
    reports = DailyTables(base_path=str(data_dir / "assets")).read_days(
        dg.AssetKey("drift_report"), [CLEAN[0] + dt.timedelta(days=i) for i in range(7)])
    assert reports["share_drifted_columns"].max() < POLICY.min_share_drifted_columns
    assert reports["champion_version"].unique().to_list() == ["1"]
    # The day whose labels just arrived (a week earlier) is scored by the champion.
    assert reports["labelled_day"][0] == CLEAN[0] - dt.timedelta(days=7)
    assert reports["labelled_average_precision"].min() > 0
    html = data_dir / "monitoring" / "drift_reports" / f"{CLEAN[0]}.html"
    assert html.read_text().lstrip().lower().startswith("<!doctype html") or "<html" in html.read_text()[:2000]
    requests, _ = evaluate_sensor(instance, data_dir)
    assert requests == []


def partition_metadata(instance, asset: str) -> dict[str, dict]:
    """The latest materialisation's metadata of each partition."""
    latest = {}
    for record in instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records:
        latest.setdefault(record.partition_key, {
            k: v.value for k, v in record.asset_materialization.metadata.items()})
    return latest


def test_each_drift_report_day_has_its_own_figures_and_html(clean):
    """A multi-day run: each partition's metadata is its own day's, not the run's maximum share
    and the last day's HTML path."""
    instance, data_dir = clean.instance, clean.data_dir
    days = [CLEAN[0] + dt.timedelta(days=i) for i in range(7)]
    reports = DailyTables(base_path=str(data_dir / "assets")).read_days(
        dg.AssetKey("drift_report"), days)
    metadata = partition_metadata(instance, "drift_report")
    for row in reports.iter_rows(named=True):
        day = metadata[row["day"].isoformat()]
        assert day["html_report"].endswith(f"{row['day'].isoformat()}.html")
        assert day["share_drifted_columns"] == row["share_drifted_columns"]
        assert day["transactions"] == row["transactions"]
    assert len({m["html_report"] for d, m in metadata.items() if d in {x.isoformat() for x in days}}) == 7


def test_days_nobody_served_are_a_no_op_that_materialises(clean):
    """served_drift_report over days with no prediction log (the README's UI backfill of the
    groups transactions, features and monitoring): every day is materialised, saying nothing was
    served, so the backfill does not end Failed."""
    instance = clean.instance
    materialised = instance.get_materialized_partitions(dg.AssetKey("served_drift_report"))
    assert {(CLEAN[0] + dt.timedelta(days=i)).isoformat() for i in range(7)} <= materialised
    metadata = partition_metadata(instance, "served_drift_report")
    assert metadata[CLEAN[0].isoformat()]["transactions"] == 0


def test_a_deleted_drift_report_file_is_alerted_and_the_sensor_goes_on(project):
    instance, data_dir = project.instance, project.data_dir
    (data_dir / "assets" / "drift_report" / f"{CLEAN[0]}.parquet").unlink()
    requests, cursor = evaluate_sensor(instance, data_dir)  # from the start: every report
    assert requests == []
    [alert] = [a for a in read_alerts(data_dir / "alerts" / "alerts.jsonl")
               if a["kind"] == "drift_report_missing"]
    assert alert["days"] == [CLEAN[0].isoformat()]
    again, _ = evaluate_sensor(instance, data_dir, cursor)
    assert again == []


def test_drift_defers_the_retrain_until_post_drift_labels_mature_then_launches_exactly_one(project):
    defs, instance, data_dir = project.defs, project.instance, project.data_dir
    _, cursor = evaluate_sensor(instance, data_dir)
    run_daily(defs, instance, *DRIFTED)
    event = instance.get_latest_materialization_event(dg.AssetKey("drift_report"))
    assert event.asset_materialization.metadata["dataset_drift"] is not None

    # Drift is seen, but no post-drift label has matured: nothing is launched, the tick says why
    # and until when (the training window 03-01..03-07 has matured labels as of 03-28).
    until = POLICY.retrain_as_of(DRIFT_START)
    assert until == dt.date(2025, 3, 28)
    requests, cursor = evaluate_sensor(instance, data_dir, cursor)
    assert requests == []
    pending = json.loads(cursor)["pending"]
    drift_day = dt.date.fromisoformat(pending["day"])
    assert DRIFTED[0] <= drift_day <= DRIFTED[1]
    assert pending["until"] == POLICY.retrain_as_of(drift_day).isoformat()
    message = skip_reason(instance, data_dir, cursor)
    assert f"deferred until fraud_labels reaches {pending['until']}" in message
    assert "columns drifted" in message

    # Up to the day before: still deferred, and the drifted days in between add nothing.
    until = dt.date.fromisoformat(pending["until"])
    run_daily(defs, instance, DRIFTED[1] + dt.timedelta(days=1), until - dt.timedelta(days=1))
    requests, cursor = evaluate_sensor(instance, data_dir, cursor)
    assert requests == [] and json.loads(cursor)["pending"]["day"] == pending["day"]

    run_daily(defs, instance, until, until)
    # fraud_labels has reached the day, but a run that still writes transaction_features is going
    # (a UI backfill's one run stores fraud_labels minutes before the features): the retrain
    # waits for it, and says so, instead of reading days not written yet.
    busy = instance.add_run(dg.DagsterRun(
        job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
        asset_selection=frozenset({dg.AssetKey("fraud_labels"), dg.AssetKey("transaction_features")})))
    requests, cursor = evaluate_sensor(instance, data_dir, cursor)
    assert requests == [] and json.loads(cursor)["pending"]["day"] == pending["day"]
    assert f"waits for run {busy.run_id[:8]} to finish" in skip_reason(instance, data_dir, cursor)
    instance.report_run_failed(busy)  # ended (failed or not): nothing is writing any more
    requests, cursor = evaluate_sensor(instance, data_dir, cursor)
    [request] = requests
    assert request.run_key == f"drift-{pending['day']}"
    assert request.tags["fraud/deferred_until"] == until.isoformat()
    assert request.run_config["ops"]["fraud_model"]["config"]["as_of"] == until.isoformat()
    assert json.loads(cursor)["pending"] is None
    again, _ = evaluate_sensor(instance, data_dir, cursor)
    assert again == []  # evaluated again: nothing new

    champion_before = registry.alias_version(client_for(data_dir), "champion")
    config = request.run_config
    config["ops"]["fraud_model"]["config"].update({"models": ["xgboost"], **FAST})
    result = defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance, run_config=config, tags=request.tags, raise_on_error=False
    )
    [trained] = result.asset_materializations_for_node("fraud_model")
    train_first, train_last = trained.metadata["train_window"].value.split("..")
    # The training window is post-drift, with every label matured (none unknown).
    assert dt.date.fromisoformat(train_first) >= drift_day
    assert dt.date.fromisoformat(train_last) == drift_day + dt.timedelta(
        days=POLICY.min_post_drift_training_days - 1)
    assert trained.metadata["training_labels_unknown"].value == 0
    [evaluation] = result.asset_materializations_for_node("model_evaluation")
    promoted = evaluation.metadata["promoted"].value
    champion_after = registry.alias_version(client_for(data_dir), "champion")
    assert champion_after == ("2" if promoted else champion_before)
    assert result.success  # a refusal is a successful run whose WARN check says why
