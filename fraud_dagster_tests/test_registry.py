"""The MLflow registry helpers against real MLflow stores (SQLite files in a temporary folder)."""

import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from fraud_dagster import registry

X = np.array([[0.0], [1.0], [2.0], [3.0]])


def register_model(tmp_path, name: str, labels: list[int]) -> MlflowClient:
    """A store of its own holding version 1 of the registered model: a logistic regression
    fitted on ``labels``."""
    uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
    registry.ensure_experiment(uri, "fraud_dagster", str(tmp_path / name / "artifacts"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("fraud_dagster")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(LogisticRegression().fit(X, labels), name="model",
                                        registered_model_name=registry.REGISTERED_MODEL)
    client = MlflowClient(uri)
    version = str(info.registered_model_version)
    for key, value in {"threshold": "0.5", "feature_columns": json.dumps(["x"])}.items():
        client.set_model_version_tag(registry.REGISTERED_MODEL, version, key, value)
    return client


@pytest.fixture
def restore_tracking_uri():
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


@pytest.mark.slow  # creates two MLflow stores (their migrations take seconds)
def test_a_version_is_loaded_from_its_clients_store_whatever_the_global_tracking_uri(
        tmp_path, restore_tracking_uri):
    ours = register_model(tmp_path, "ours", [0, 0, 1, 1])
    register_model(tmp_path, "theirs", [1, 1, 0, 0])  # leaves the global URI on its store
    loaded = registry.load_version(ours, "1")
    assert loaded.version == "1" and loaded.feature_columns == ("x",)
    assert loaded.pipeline.predict(X).tolist() == [0, 0, 1, 1]
