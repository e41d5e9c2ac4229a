"""MLflow as resources: ``ModelRegistry`` says once where MLflow is (tracking store and registry,
experiment, artifact location) and does every registry operation the assets make; the ``mlflow``
resource, dagster-mlflow's MLflow run of a Dagster run, is derived from it (``mlflow_resource``).
What is logged and how is ``fraud_dagster.registry``, which knows nothing of Dagster."""

import datetime as dt
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow
from mlflow import MlflowClient
from pydantic import Field

from fraud_dagster import registry
from fraud_dagster.core.training import TrainedModel


@dg.resource(
    config_schema={
        **MLFLOW_CONFIG_SCHEMA,
        "artifact_location": dg.Field(
            dg.Noneable(str), default_value=None,
            description="Where a new experiment keeps its artifacts (MLflow's default is ./mlruns).",
        ),
    },
    description="dagster-mlflow's MLflow run for this Dagster run (tagged with its run id),"
    " ended when the run's steps are done, whether or not the job has the end-run hook.",
)
def mlflow_tracking(context):
    config = context.resource_config
    registry.ensure_experiment(config["mlflow_tracking_uri"] or mlflow.get_tracking_uri(),
                               config["experiment_name"], config["artifact_location"])
    tracking = MlFlow(context)
    try:
        yield tracking
    finally:
        # A later step (another process, with the multiprocess executor) finds the run again by
        # its dagster_run_id tag and reopens it.
        mlflow.end_run()


class ModelRegistry(dg.ConfigurableResource):
    """The MLflow tracking store and registry, and where drift artifacts are kept. Reads and
    moves aliases without opening an MLflow run; `register` logs into the run the `mlflow`
    resource opened."""

    tracking_uri: str = Field(description="MLflow's tracking store and registry"
                              " (`MLFLOW_TRACKING_URI`, or `FRAUD_POSTGRES_URL`'s schema `mlflow`).")
    monitoring_dir: str = Field(description="Drift HTML reports and cached references live here.")
    experiment_name: str = Field(default="fraud_dagster",
                                 description="The MLflow experiment training runs are logged in.")
    artifact_location: str | None = Field(
        default=None,
        description="Where the experiment keeps its artifacts when this creates it (MLflow's"
        " default is ./mlruns).")

    def mlflow_resource(self) -> dg.ResourceDefinition:
        """The ``mlflow`` resource (dagster-mlflow's run) on this registry's store and experiment."""
        return mlflow_tracking.configured({
            "experiment_name": self.experiment_name,
            "mlflow_tracking_uri": self.tracking_uri,
            "artifact_location": self.artifact_location,
        })

    def client(self) -> MlflowClient:
        registry.prepare_tracking_store(self.tracking_uri)
        return MlflowClient(self.tracking_uri)

    def register(self, trained: TrainedModel, reference: pl.DataFrame, tags: dict[str, str]
                 ) -> registry.TrainedVersion:
        """Log ``trained`` and its drift reference in the active MLflow run, register it and
        make it the challenger."""
        run = mlflow.active_run()
        if run is None:  # mlflow.log_* would silently start a run of its own
            raise dg.DagsterInvariantViolationError(
                "no active MLflow run: the asset needs the `mlflow` resource, which opens it")
        registry.log_reference(reference)
        version = registry.log_trained_model(trained, tags)
        return registry.TrainedVersion(trained, version, run.info.run_id)

    def champion_version(self) -> str | None:
        return registry.alias_version(self.client(), registry.CHAMPION)

    def load(self, version: str) -> registry.RegisteredModel:
        return registry.load_version(self.client(), version)

    def champion(self) -> registry.RegisteredModel | None:
        version = self.champion_version()
        return self.load(version) if version else None

    def promote_if_champion_is(self, version: str, expected: str | None
                               ) -> tuple[bool, str | None]:
        """``registry.promote_if_champion_is``: a compare-and-set of the champion alias."""
        return registry.promote_if_champion_is(self.client(), version, expected)

    def log_evaluation(self, run_id: str, metrics: dict[str, float], per_day: pl.DataFrame,
                       pictures: dict[str, bytes]) -> None:
        registry.log_evaluation(self.client(), run_id, metrics, per_day, pictures)

    def reference(self, model: registry.RegisteredModel) -> pl.DataFrame:
        return registry.load_reference(self.client(), model, Path(self.monitoring_dir) / "references")

    def champion_and_reference(self) -> tuple[registry.RegisteredModel, pl.DataFrame, float | None
                                              ] | None:
        """The champion, its training reference and its test average precision; None before
        there is a champion."""
        champion = self.champion()
        if champion is None:
            return None
        metrics = self.client().get_run(champion.run_id).data.metrics
        return champion, self.reference(champion), metrics.get("test_average_precision")

    def report_path(self, day: dt.date, kind: str = "drift_reports") -> Path:
        return Path(self.monitoring_dir) / kind / f"{day.isoformat()}.html"
