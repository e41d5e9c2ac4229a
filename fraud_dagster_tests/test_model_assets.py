"""fraud_model and model_evaluation on a small real run: MLflow run, registry aliases, promotion rule."""

import datetime as dt

import dagster as dg
import mlflow
import polars as pl
import pytest
from mlflow import MlflowClient

from fraud_dagster import registry
from fraud_dagster.definitions import local_resources, make_definitions
from fraud_dagster.resources import SimulatorSource
from fraud_dagster_tests.conftest import SMALL_SIMULATOR, run_ingest

FIRST, LAST = dt.date(2025, 1, 1), dt.date(2025, 3, 15)
FAST = {"balancing": ["none", "class_weight"], "validation_folds": 2}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One ingested project (75 days of a small simulator) shared by the tests of this module,
    which run in order: the first trained model becomes champion, the next ones are compared."""
    root = tmp_path_factory.mktemp("model")
    defs = make_definitions(local_resources(root / "data", SimulatorSource(**SMALL_SIMULATOR)))
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        assert run_ingest(defs, instance, FIRST, LAST).success
        yield defs, instance, root / "data"


def retrain(defs, instance, models: list[str], min_gain: float = 0.0):
    return defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {
            "fraud_model": {"config": {"models": models, **FAST}},
            "model_evaluation": {"config": {"min_average_precision_gain": min_gain}},
        }},
    )


def client_for(data_dir) -> MlflowClient:
    return MlflowClient(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")


def evaluation_metadata(result) -> dict:
    [materialization] = result.asset_materializations_for_node("model_evaluation")
    return {key: value.value for key, value in materialization.metadata.items()}


def check_result(result) -> dg.AssetCheckEvaluation:
    [evaluation] = [e.event_specific_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return evaluation


def test_first_model_is_logged_to_mlflow_registered_and_becomes_champion(pipeline):
    defs, instance, data_dir = pipeline
    result = retrain(defs, instance, ["xgboost"])
    assert result.success
    client = client_for(data_dir)
    assert registry.alias_version(client, "champion") == "1"
    version = client.get_model_version(registry.REGISTERED_MODEL, "1")
    assert registry.alias_version(client, "challenger") == "1"
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"  # closed when the Dagster run ended
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.params["candidate"].startswith("xgboost+")
    assert run.data.params["training_end"] == "2025-03-01"  # last day - 7 delay - 7 test days
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


def test_evaluation_shows_curves_and_a_row_per_test_day(pipeline):
    _, instance, data_dir = pipeline
    metadata = evaluation_metadata_from_instance(instance)
    for picture in ("precision_recall_curve", "roc_curve", "threshold_cost_curve"):
        assert metadata[picture].startswith(f"![{picture}](data:image/png;base64,iVBOR")
    per_day = pl.read_parquet(data_dir / "assets" / "model_evaluation.parquet")
    assert per_day["day"].to_list() == [dt.date(2025, 3, 9) + dt.timedelta(days=i) for i in range(7)]
    assert metadata["test_window"] == "2025-03-09..2025-03-15"


def evaluation_metadata_from_instance(instance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_a_worse_challenger_is_not_promoted_and_the_check_says_why(pipeline):
    defs, instance, data_dir = pipeline
    result = retrain(defs, instance, ["logistic_regression"])
    client = client_for(data_dir)
    assert registry.alias_version(client, "challenger") == "2"
    assert registry.alias_version(client, "champion") == "1"
    metadata = evaluation_metadata(result)
    assert metadata["promoted"] is False
    assert metadata["average_precision"] < float(
        client.get_run(client.get_model_version(registry.REGISTERED_MODEL, "1").run_id)
        .data.metrics["test_average_precision"]
    )
    check = check_result(result)
    assert not check.passed
    assert not result.success  # a refusal fails the run on purpose: it shows in the UI
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "champion v1" in check.description and "<= required 0.0" in check.description


def test_a_challenger_that_wins_by_less_than_the_required_gain_is_not_promoted(pipeline):
    defs, instance, data_dir = pipeline
    result = retrain(defs, instance, ["xgboost"], min_gain=0.5)
    client = client_for(data_dir)
    assert registry.alias_version(client, "champion") == "1"
    assert not check_result(result).passed
    assert "required 0.5" in check_result(result).description
