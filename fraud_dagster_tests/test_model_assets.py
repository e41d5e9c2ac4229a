"""fraud_model and model_evaluation on a small real run: MLflow run, registry aliases, promotion rule."""

import datetime as dt

import dagster as dg
import mlflow
import polars as pl
import pytest

from fraud_dagster import registry
from fraud_dagster_tests.pipeline import FAST, LAST, client_for, copy_project
from fraud_dagster_tests.pipeline import retrain as retrain_in


def retrain(project, models: list[str], min_gain: float = 0.0):
    return retrain_in(project.defs, project.instance, models, min_gain, state_date=None)


@pytest.fixture(scope="module")
def refusals(shared_project, tmp_path_factory):
    """A copy of the shared project (champion v1, trained as of ``LAST``) after two retrains
    that are refused: a worse model (v2), then one short of the required gain (v3)."""
    with copy_project(shared_project, tmp_path_factory.mktemp("refusals") / "project") as project:
        worse = retrain(project, ["logistic_regression"])
        after_worse = aliases(project.client())
        short_of_the_gain = retrain(project, ["xgboost"], min_gain=0.5)
        after_short = aliases(project.client())
        yield project, (worse, after_worse), (short_of_the_gain, after_short)


def aliases(client) -> dict[str, str]:
    return {alias: registry.alias_version(client, alias) for alias in ("champion", "challenger")}


def evaluation_metadata(result) -> dict:
    [materialization] = result.asset_materializations_for_node("model_evaluation")
    return {key: value.value for key, value in materialization.metadata.items()}


def check_result(result) -> dg.AssetCheckEvaluation:
    [evaluation] = [e.event_specific_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return evaluation


def test_first_model_is_logged_to_mlflow_registered_and_becomes_champion(shared_project):
    result, data_dir = shared_project.first_retrain, shared_project.data_dir
    assert result.success
    assert run_config_of(shared_project.instance, result)["ops"]["fraud_model"]["config"] == {
        **FAST, "models": ["xgboost"]}
    client = client_for(data_dir)
    assert registry.alias_version(client, "champion") == "1"
    version = client.get_model_version(registry.REGISTERED_MODEL, "1")
    assert registry.alias_version(client, "challenger") == "1"
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"  # closed when the Dagster run ended
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.params["candidate"].startswith("xgboost+")
    # As of the newest labelled day: tests on the week that matured by then (ending 7 days
    # before it), trains on the week that ends 7 days before the test week starts.
    assert LAST == dt.date(2025, 3, 15)
    assert run.data.params["as_of"] == "2025-03-15"
    assert run.data.params["training_end"] == "2025-02-22"
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("fraud_model")[0]
                .metadata.items()}
    assert metadata["test_window"] == "2025-03-02..2025-03-08"
    assert metadata["training_labels_as_of"] == "2025-03-01"
    assert metadata["training_labels_unknown"] == 0  # every training day has matured
    assert evaluation_metadata(result)["test_labels_unknown"] == 0
    assert {"validation_average_precision", "threshold", "test_average_precision",
            "test_card_precision_at_100", "test_cost"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/precision_recall_curve.png", "plots/roc_curve.png",
                         "plots/threshold_cost_curve.png"}
    assert version.tags["dagster_run_id"] == result.run_id
    assert float(version.tags["threshold"]) == run.data.metrics["threshold"]
    mlflow.set_tracking_uri(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")
    model = mlflow.sklearn.load_model(f"models:/{registry.REGISTERED_MODEL}@champion")
    assert hasattr(model, "predict_proba")
    metadata = evaluation_metadata(result)
    assert metadata["promoted"] is True
    assert metadata["reason"] == "there is no champion yet"
    assert metadata["average_precision"] > 0.3
    assert check_result(result).passed


def test_evaluation_shows_curves_and_a_row_per_test_day(shared_project):
    instance, data_dir = shared_project.instance, shared_project.data_dir
    metadata = evaluation_metadata_from_instance(instance)
    for picture in ("precision_recall_curve", "roc_curve", "threshold_cost_curve"):
        assert metadata[picture].startswith(f"![{picture}](data:image/png;base64,iVBOR")
    per_day = pl.read_parquet(data_dir / "assets" / "model_evaluation.parquet")
    assert per_day["day"].to_list() == [dt.date(2025, 3, 2) + dt.timedelta(days=i) for i in range(7)]
    assert metadata["test_window"] == "2025-03-02..2025-03-08"


def run_config_of(instance, result) -> dict:
    return instance.get_run_by_id(result.run_id).run_config


def evaluation_metadata_from_instance(instance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_a_worse_challenger_is_not_promoted_and_the_check_says_why(refusals):
    project, (result, after), _ = refusals
    client = project.client()
    assert after == {"challenger": "2", "champion": "1"}
    metadata = evaluation_metadata(result)
    assert metadata["promoted"] is False
    assert metadata["average_precision"] < float(
        client.get_run(client.get_model_version(registry.REGISTERED_MODEL, "1").run_id)
        .data.metrics["test_average_precision"]
    )
    check = check_result(result)
    assert not check.passed
    # A refusal is the rule working: the run succeeds (nothing to retry), the check says why
    # with severity WARN, and bento_model exports nothing.
    assert result.success
    assert metadata["refused"] is True
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["refused"].value is True
    assert "champion v1" in check.description and "<= required 0.0" in check.description
    assert result.asset_materializations_for_node("bento_model") == []


def test_a_challenger_that_wins_by_less_than_the_required_gain_is_not_promoted(refusals):
    project, _, (result, after) = refusals
    assert after == {"challenger": "3", "champion": "1"}
    assert result.success and not check_result(result).passed
    assert "required 0.5" in check_result(result).description


def test_each_refusal_is_one_alert_and_no_failure(refusals):
    """The two refusals of ``refusals``: one alert line each, no failed run, no failed blocking
    check."""
    from fraud_dagster.alerts import read_alerts
    from fraud_dagster.sensors import check_failure_alerts

    project, _, _ = refusals
    defs, instance, data_dir = project.defs, project.instance, project.data_dir
    alerts_file = data_dir / "alerts" / "alerts.jsonl"
    sink = defs.resources["alerts"]
    check_failure_alerts(dg.build_sensor_context(instance=instance, definitions=defs,
                                                 resources={"alerts": sink}))
    alerts = read_alerts(alerts_file)
    assert [a["kind"] for a in alerts] == ["challenger_refused", "challenger_refused"]
    assert [a["challenger_version"] for a in alerts] == ["2", "3"]
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in instance.get_runs())


@pytest.fixture
def own_project(shared_project, tmp_path):
    """A copy of the shared project (champion v1) for this test alone."""
    with copy_project(shared_project, tmp_path / "project") as project:
        yield project


def test_promotion_is_refused_when_the_champion_moved_during_the_evaluation(own_project,
                                                                            monkeypatch):
    """Another run promotes v2 (here: the version this run registers) while this evaluation
    scores against v1: the compare-and-set on the champion alias refuses, v2 stays champion."""
    project = own_project
    client = project.client()
    assert registry.alias_version(client, "champion") == "1"
    load_version = registry.load_version

    def load_and_let_another_run_promote(client_, version):
        loaded = load_version(client_, version)
        registry.promote(client_, "2")
        return loaded

    monkeypatch.setattr(registry, "load_version", load_and_let_another_run_promote)
    result = retrain(project, ["xgboost"], min_gain=-1.0)  # would win against v1
    monkeypatch.undo()
    assert result.success
    metadata = evaluation_metadata(result)
    assert metadata["promoted"] is False and metadata["refused"] is True
    assert "the champion moved from v1 to v2" in metadata["reason"]
    assert registry.alias_version(client, "champion") == "2"


def test_two_runs_at_once_each_read_their_own_model(tmp_path):
    """Two retrain_jobs at once (a drift backfill launches two): each model_evaluation loads the
    fraud_model of its own run, not the one the other run wrote last."""
    from fraud_dagster.io_managers import PickleIOManager

    manager = PickleIOManager(base_path=str(tmp_path / "models"))
    key = dg.AssetKey("fraud_model")
    outputs = {run: dg.build_output_context(asset_key=key, run_id=run) for run in ("run-a", "run-b")}
    manager.handle_output(outputs["run-a"], "model of run a")
    manager.handle_output(outputs["run-b"], "model of run b")  # the other run writes later
    for run, output in outputs.items():
        loaded = manager.load_input(dg.build_input_context(asset_key=key, upstream_output=output))
        assert loaded == f"model of {run.replace('-', ' ')}"


def test_retrain_job_runs_one_at_a_time_and_retries_only_crashes():
    from pathlib import Path

    import yaml

    from fraud_dagster.definitions import defs

    tags = defs.resolve_job_def("retrain_job").tags
    assert tags["dagster/retry_on_asset_or_op_failure"] == "false"
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "fraud/exclusive", "value": tags["fraud/exclusive"], "limit": 1} in limits
