"""The MLflow side of a model: what is logged with it, the registered versions and their aliases.

Aliases, not the deprecated stages: ``challenger`` is the newest trained version, ``champion`` the
one that serves. A version carries, as tags, everything needed to use it the way it was chosen
(threshold, feature columns, windows), so the champion can be loaded without its training run.
Nothing here knows about Dagster.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import tempfile
import urllib.parse
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fraud_dagster.core.features import feature_matrix
from fraud_dagster.core.training import TrainedModel

REGISTERED_MODEL = "fraud_model"
CHAMPION = "champion"
CHALLENGER = "challenger"


@functools.cache
def prepare_tracking_store(tracking_uri: str) -> None:
    """What MLflow needs before it creates its tables: the SQLite file's folder, or on
    PostgreSQL the schema the URI's ``search_path`` names (``settings.with_search_path``)."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    if not tracking_uri.startswith("postgresql"):
        return
    options = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(tracking_uri).query)).get("options", "")
    found = re.search(r"search_path=(\w+)", options)
    if found is None:
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(tracking_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{found.group(1)}"'))
    except sqlalchemy.exc.IntegrityError:
        pass  # created by another process between its check and ours
    finally:
        engine.dispose()


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> None:
    """Create the experiment with its artifacts under the data root (MLflow's default is ./mlruns)."""
    prepare_tracking_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is None:
        try:
            client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            if client.get_experiment_by_name(name) is None:  # not a lost race with another run
                raise


@dataclasses.dataclass(frozen=True)
class RegisteredModel:
    """A registered version, loaded: what scoring and serving need."""

    version: str
    pipeline: object
    threshold: float
    feature_columns: tuple[str, ...]
    run_id: str
    tags: dict[str, str]

    def predict_proba(self, features: pl.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(feature_matrix(features, self.feature_columns))[:, 1]


@dataclasses.dataclass(frozen=True)
class TrainedVersion:
    """A model just trained and the registered version it became, with the MLflow run that
    logged it (``fraud_model``'s value: ``TrainedModel`` itself knows nothing of MLflow)."""

    trained: TrainedModel
    version: str
    run_id: str


def log_trained_model(trained: TrainedModel, tags: dict[str, str]) -> str:
    """Log a trained model in the active MLflow run, register it and make it the challenger.

    Returns the registered version.
    """
    # Imported here, not with the module (which the Dagster definitions import): skops imports
    # all of scikit-learn, MLflow's signatures SciPy.
    import skops.io
    from mlflow.models import infer_signature

    plan, settings = trained.plan, trained.settings
    mlflow.log_params({
        "candidate": trained.candidate,
        "as_of": plan.as_of().isoformat(),
        "training_end": plan.training_end.isoformat(),
        "train_days": plan.train_days,
        "delay_days": plan.delay_days,
        "test_days": plan.test_days,
        "folds": plan.folds,
        "threshold_objective": trained.objective.kind,
        **{f"objective_{k}": v for k, v in dataclasses.asdict(trained.objective).items() if k != "kind"},
        **dataclasses.asdict(settings),
    })
    mlflow.log_metrics({
        "validation_average_precision": trained.validation_average_precision,
        "threshold": trained.threshold,
        "training_rows": trained.training_rows,
        "training_frauds": trained.training_frauds,
    })
    for row in trained.selection.iter_rows(named=True):
        mlflow.log_metric(f"validation_ap.{row['candidate'].replace('+', '.')}",
                          row["mean_average_precision"])
    mlflow.log_text(trained.selection.write_csv(), "model_selection.csv")
    example = pd.DataFrame(np.zeros((2, len(trained.feature_columns))),
                           columns=list(trained.feature_columns))
    signature = infer_signature(example, trained.pipeline.predict_proba(example.to_numpy())[:, 1])
    version_tags = {
        "threshold": repr(trained.threshold),
        "feature_columns": json.dumps(list(trained.feature_columns)),
        "candidate": trained.candidate,
        "train_window": str(plan.train_window()),
        "test_window": str(plan.test_window()),
        **tags,
    }
    info = mlflow.sklearn.log_model(
        trained.pipeline,
        name="model",
        # skops (MLflow's safe format) loads only types it is told to trust: the ones this very
        # pipeline is made of, found by dumping it (imblearn and xgboost are not on its list).
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(trained.pipeline)),
        signature=signature,
        registered_model_name=REGISTERED_MODEL,
        pyfunc_predict_fn="predict_proba",
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in version_tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version)
    return version


def load_version(client: MlflowClient, version: str) -> RegisteredModel:
    """A registered version, read from ``client``'s store: its artifacts' location, not a
    ``models:/`` URI, which MLflow resolves through the process's global tracking URI (whatever
    store was set last: in one process, another project's version of the same number)."""
    details = client.get_model_version(REGISTERED_MODEL, version)
    return RegisteredModel(
        version=str(details.version),
        pipeline=mlflow.sklearn.load_model(
            client.get_model_version_download_uri(REGISTERED_MODEL, details.version)),
        threshold=float(details.tags["threshold"]),
        feature_columns=tuple(json.loads(details.tags["feature_columns"])),
        run_id=details.run_id,
        tags=dict(details.tags),
    )


def alias_version(client: MlflowClient, alias: str) -> str | None:
    """The version an alias points at, or None when the alias (or the model) does not exist yet."""
    try:
        return str(client.get_model_version_by_alias(REGISTERED_MODEL, alias).version)
    except MlflowException:
        return None


def promote(client: MlflowClient, version: str) -> None:
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)


def promote_if_champion_is(client: MlflowClient, version: str, expected: str | None
                           ) -> tuple[bool, str | None]:
    """Compare-and-set of the champion alias: ``version`` becomes champion only if the alias
    still points at ``expected`` (None: no champion), the version the evaluation compared with.
    Returns (promoted, the champion found).

    MLflow has no conditional alias update, so this re-reads the alias right before setting it:
    a promotion made by another run during the evaluation (minutes) is never overwritten, but
    two promotions within the milliseconds between the re-read and the write are not excluded.
    ``retrain_job`` runs one at a time (dagster.yaml), which leaves that window only to runs
    started outside the queue (``execute_in_process``, another tool)."""
    current = alias_version(client, CHAMPION)
    if current != expected:
        return False, current
    promote(client, version)
    return True, current


def log_png(client: MlflowClient, run_id: str, png: bytes, name: str) -> None:
    """Attach a picture to a (possibly finished) run."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(png)
        client.log_artifact(run_id, str(path), artifact_path="plots")


def log_evaluation(client: MlflowClient, run_id: str, metrics: dict[str, float],
                   per_day: pl.DataFrame, pictures: dict[str, bytes]) -> None:
    """A model's test results on the (finished) run that trained it: the metrics as
    ``test_<name>``, the per-day table, the curves under ``plots/``."""
    for name, png in pictures.items():
        log_png(client, run_id, png, f"{name}.png")
    for name, value in metrics.items():
        client.log_metric(run_id, f"test_{name}", value)
    client.log_text(run_id, per_day.write_csv(), "test_per_day.csv")


REFERENCE_ARTIFACT = "reference/reference.parquet"


def log_reference(reference: pl.DataFrame) -> None:
    """Keep the drift reference (a sample of the training window with its scores) in the active run."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(REFERENCE_ARTIFACT).name
        reference.write_parquet(path)
        mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))


def load_reference(client: MlflowClient, model: RegisteredModel, cache_dir: Path) -> pl.DataFrame:
    """The drift reference of a registered version, downloaded once into ``cache_dir``."""
    cached = cache_dir / f"reference_v{model.version}.parquet"
    if not cached.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(model.run_id, REFERENCE_ARTIFACT, folder)
            Path(path).replace(cached)
    return pl.read_parquet(cached)
