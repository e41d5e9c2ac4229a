"""Helpers the test modules share (no tests here): the small simulator, ingesting days, reading
partitions, and the project with a champion that several modules start from, built once per
session (``trained_project`` in conftest.py) and copied for the tests that change it."""

import contextlib
import dataclasses
import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import polars as pl
from mlflow import MlflowClient

from fraud_dagster.definitions import make_definitions
from fraud_dagster.partitions import partition_range_tags
from fraud_dagster.resources import SimulatorSource, local_resources

# Small populations keep runs quick; the behaviour under test does not depend on size.
SMALL_SIMULATOR = dict(n_customers=500, n_terminals=1_000, drift_start="2025-03-01")

# The shared project: 75 days of the small simulator, a champion (xgboost, a short search)
# trained as of the last day and exported with the state of the day before it.
FIRST, LAST = dt.date(2025, 1, 1), dt.date(2025, 3, 15)
STATE_DAY = LAST - dt.timedelta(days=1)
FAST = {"balancing": ["none", "class_weight"], "validation_folds": 2}


def run_ingest(defs, instance, first: dt.date, last: dt.date, run_config=None, tags=None):
    return defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance,
        tags={**partition_range_tags(first, last), **(tags or {})},
        run_config=run_config or {},
        raise_on_error=False,
    )


def read_partition(assets_dir: Path, asset: str, day: dt.date) -> pl.DataFrame:
    return pl.read_parquet(assets_dir / asset / f"{day.isoformat()}.parquet")


def read_days(assets_dir: Path, asset: str, first: dt.date, last: dt.date) -> pl.DataFrame:
    return pl.concat(read_partition(assets_dir, asset, first + dt.timedelta(days=i))
                     for i in range((last - first).days + 1))


def client_for(data_dir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")


def retrain(defs, instance, models=("xgboost",), min_gain: float = 0.0, fast=None,
            state_date: dt.date | None = STATE_DAY) -> dg.ExecuteInProcessResult:
    """One ``retrain_job`` run: a short search over ``models``, the promotion rule with
    ``min_gain``, the export (if promoted) with the state of ``state_date``."""
    ops = {
        "fraud_model": {"config": {**(FAST if fast is None else fast), "models": list(models)}},
        "model_evaluation": {"config": {"min_average_precision_gain": min_gain}},
    }
    if state_date is not None:
        ops["bento_model"] = {"config": {"state_date": state_date.isoformat()}}
    return defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": ops})


@dataclasses.dataclass
class Project:
    """A data root (``root/data``) and its Dagster instance (``root/dagster``)."""

    root: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    source: dict
    first_retrain: dg.ExecuteInProcessResult | None = None
    """The run that trained and exported the first champion (also the copies': same run id)."""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    @property
    def bentoml_home(self) -> Path:
        return self.data_dir / "bentoml"

    def client(self) -> MlflowClient:
        return client_for(self.data_dir)


def _definitions(data_dir: Path, source: dict) -> dg.Definitions:
    return make_definitions(local_resources(data_dir, SimulatorSource(**source)))


@contextlib.contextmanager
def new_project(root: Path, source: dict = SMALL_SIMULATOR, set_dagster_home: bool = True):
    """An empty project under ``root`` (a new folder) on the simulator ``source``."""
    (root / "dagster").mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(root / "dagster"),
                              set_dagster_home=set_dagster_home) as instance:
        yield Project(root, instance, _definitions(root / "data", source), source)


def relocate_sqlite(database: Path, old: str, new: str) -> None:
    """Every text value naming ``old`` (a folder) names ``new`` instead: MLflow keeps absolute
    artifact locations, Dagster absolute paths in event metadata."""
    connection = sqlite3.connect(database)
    try:
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], (column[2] or "").upper()
                if "CHAR" in kind or "TEXT" in kind or "CLOB" in kind or kind == "":
                    connection.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?)'
                        f' WHERE instr("{name}", ?) > 0', (old, new, old))
        connection.commit()
    finally:
        connection.close()


@contextlib.contextmanager
def copy_project(project: Project, root: Path):
    """A copy of ``project`` under ``root`` (a new folder) that a test may change: its data root
    (parquet, models, MLflow, BentoML store) and its Dagster instance, every absolute path in
    their SQLite files moved to the copy. Far cheaper than ingesting and training again."""
    shutil.copytree(project.root, root)
    for database in root.rglob("*.db"):
        relocate_sqlite(database, str(project.root), str(root))
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        yield Project(root, instance, _definitions(root / "data", project.source),
                      project.source, project.first_retrain)


@contextlib.contextmanager
def trained_project(root: Path):
    """The shared project: ``FIRST``..``LAST`` ingested, one champion trained and exported."""
    with new_project(root, set_dagster_home=False) as project:
        assert run_ingest(project.defs, project.instance, FIRST, LAST).success
        project.first_retrain = retrain(project.defs, project.instance)
        assert project.first_retrain.success
        yield project
