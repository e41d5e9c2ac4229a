"""The pipeline end to end on PostgreSQL, with the production resource set:
``DAGSTER_HOME=deploy/postgres`` and ``FRAUD_POSTGRES_URL`` put the Dagster instance (runs, event
log, schedules) and MLflow's tracking store and registry on a real PostgreSQL server (the
``postgres_server`` fixture), nothing on SQLite; ``FRAUD_DEPLOYMENT=production`` with
``FRAUD_STORAGE_URL`` (here a ``file://`` URL: any fsspec URL is the same code) puts the asset
files, trained models and MLflow's artifacts under that URL, nothing under the data root.

One project, made once by the module's fixture, as the README's "Scaling out" runs it: days
ingested, a champion trained and exported, drift reports of the drifted days, the retrain that
``drift_sensor`` requests for them, its export. The tests then read what landed in PostgreSQL
with plain SQL. The same flow on SQLite is tested in test_model_assets.py, test_monitoring.py and
test_serving.py."""

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from fraud_dagster import registry, settings
from fraud_dagster.definitions import make_definitions
from fraud_dagster.partitions import partition_range_tags
from fraud_dagster.postgres_storage import (
    PooledPostgresEventLogStorage,
    PooledPostgresRunStorage,
    PooledPostgresScheduleStorage,
)
from fraud_dagster.resources import SimulatorSource, default_resources, production_resources
from fraud_dagster.sensors import drift_sensor
from fraud_dagster_tests.pipeline import SMALL_SIMULATOR, run_ingest
from fraud_dagster_tests.processes import PostgresServer, postgres_bin_dir

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "postgres"
FIRST, CLEAN_LAST = dt.date(2025, 1, 1), dt.date(2025, 2, 28)
DRIFTED = (dt.date(2025, 3, 1), dt.date(2025, 3, 7))  # SMALL_SIMULATOR's drift starts 2025-03-01
FAST = {"models": ["xgboost"], "balancing": ["none"], "validation_folds": 2}


def instance_yaml(home: Path) -> str:
    """deploy/postgres/dagster.yaml with its files (compute logs, artifacts) under ``home``."""
    return (DEPLOY / "dagster.yaml").read_text().replace("base_dir: data/dagster",
                                                         f"base_dir: {home}/data/dagster")


@dataclasses.dataclass
class Project:
    root: Path
    url: str
    instance: dg.DagsterInstance
    defs: dg.Definitions
    champion_run: dg.ExecuteInProcessResult
    sensor_requests: list[dg.RunRequest]
    sensor_run: dg.ExecuteInProcessResult
    last_day: dt.date
    """The last day ingested: the day the deferred retrain's labels had matured."""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def storage(self) -> Path:
        """The folder ``FRAUD_STORAGE_URL`` names."""
        return self.root / "bucket"

    def query(self, sql: str, *args) -> list[tuple]:
        connection = psycopg2.connect(self.url.replace("+psycopg2", ""))
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            connection.close()


def retrain_config(**fraud_model) -> dict:
    return {"ops": {"fraud_model": {"config": {**FAST, **fraud_model}}}}


@pytest.fixture(scope="module")
def project(postgres_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("postgres")
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    url = postgres_server.create_database("fraud")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRAUD_POSTGRES_URL", url)
        env.setenv("DAGSTER_HOME", str(home))
        env.setenv("FRAUD_DEPLOYMENT", "production")
        env.setenv("FRAUD_STORAGE_URL", (root / "bucket").as_uri())
        env.setenv("FRAUD_DATA_DIR", str(root / "data"))
        env.setenv("BENTOML_HOME", str(root / "data" / "bentoml"))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        defs = make_definitions(production_resources(SimulatorSource(**SMALL_SIMULATOR)))
        with dg.DagsterInstance.get() as instance:
            assert run_ingest(defs, instance, FIRST, CLEAN_LAST).success
            champion_run = defs.resolve_job_def("retrain_job").execute_in_process(
                instance=instance, run_config=retrain_config(), raise_on_error=False)
            assert champion_run.success
            daily = defs.resolve_job_def("daily_job").execute_in_process(
                instance=instance, tags=partition_range_tags(*DRIFTED), raise_on_error=False)
            assert daily.success
            resources = {name: defs.resources[name]
                         for name in ("drift_policy", "daily_tables", "alerts")}
            # Drift is seen; the retrain waits for matured post-drift labels, then comes.
            deferred = drift_sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert not deferred.run_requests, "drift_sensor launched before the labels matured"
            until = dt.date.fromisoformat(json.loads(deferred.cursor)["pending"]["until"])
            later = defs.resolve_job_def("daily_job").execute_in_process(
                instance=instance, tags=partition_range_tags(DRIFTED[1] + dt.timedelta(days=1), until),
                raise_on_error=False)
            assert later.success
            requests = list(drift_sensor(dg.build_sensor_context(
                instance=instance, resources=resources, cursor=deferred.cursor)).run_requests or [])
            assert requests, "drift_sensor requested no retrain for the drifted days"
            request = requests[0]
            config = request.run_config
            config["ops"]["fraud_model"]["config"].update(FAST)
            sensor_run = defs.resolve_job_def("retrain_job").execute_in_process(
                instance=instance, run_config=config, tags=request.tags, raise_on_error=False)
            assert sensor_run.success
            yield Project(root, url, instance, defs, champion_run, requests, sensor_run, until)


def test_deploy_postgres_is_the_projects_instance_but_for_its_storage():
    """deploy/postgres/dagster.yaml differs from the project's dagster.yaml in its storages only
    (dagster-postgres's, keeping a connection: ``fraud_dagster/postgres_storage.py``): the same
    run queue, concurrency limits, launcher, monitoring and retries."""
    ours = yaml.safe_load((REPO / "dagster.yaml").read_text())
    deploy = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    url = {"postgres_url": {"env": "FRAUD_POSTGRES_URL"}}
    assert {key: deploy.pop(key) for key in ("run_storage", "event_log_storage",
                                             "schedule_storage")} == {
        f"{kind}_storage": {"module": "fraud_dagster.postgres_storage",
                            "class": f"PooledPostgres{name}Storage", "config": url}
        for kind, name in (("run", "Run"), ("event_log", "EventLog"), ("schedule", "Schedule"))
    }
    assert "sqlite" in ours.pop("storage")
    assert deploy == ours


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2025-01-01"),
          backfill_policy=dg.BackfillPolicy.single_run())
def counted_days(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"{len(context.partition_keys)} days")


def test_a_run_of_many_partitions_opens_a_few_connections_not_a_few_per_event(
        postgres_server, tmp_path, monkeypatch):
    """deploy/postgres's storages keep their connection: a run that plans and materialises 30
    partitions (60 events and more) opens 4 connections, where dagster-postgres's own storages
    opened 95 (two or three per event, each 6-10 ms on loopback: most of a backfill's
    bookkeeping, README "Benchmark figures")."""
    database = "pooled_events"
    url = postgres_server.create_database(database)
    postgres_server.sql("ALTER SYSTEM SET log_connections = on", "SELECT pg_reload_conf()")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    monkeypatch.setenv("FRAUD_POSTGRES_URL", url)

    def connections() -> int:
        return postgres_server.log.read_text(errors="replace").count(
            f"connection authorized: user=postgres database={database}")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # What a run worker, a step process and the daemon build from the instance's reference.
        with dg.DagsterInstance.from_ref(instance.get_ref()) as worker:
            for storage, pooled in ((worker.run_storage, PooledPostgresRunStorage),
                                    (worker.event_log_storage, PooledPostgresEventLogStorage),
                                    (worker.schedule_storage, PooledPostgresScheduleStorage)):
                assert type(storage) is pooled
        before = connections()
        days = partition_range_tags(dt.date(2025, 1, 1), dt.date(2025, 1, 30))
        result = dg.materialize([counted_days], instance=instance, tags=days)
        assert result.success
        opened = connections() - before
        materialised = instance.fetch_materializations(counted_days.key, limit=100).records
    assert len(materialised) == 30
    assert opened < 10, f"{opened} connections for a run of 30 partitions"


@pytest.mark.slow  # a server of its own, restarted
def test_a_restarted_server_costs_the_kept_connections_a_reconnect_not_a_failed_run(
        tmp_path, monkeypatch):
    """A daemon or webserver outlives a PostgreSQL restart: the connection each storage kept is
    checked before use (``pool_pre_ping``) and opened again, so the next run succeeds."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (Debian's postgresql-15)")
    with PostgresServer(bin_dir, fsync=False).running() as server:
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_yaml(home))
        monkeypatch.setenv("FRAUD_POSTGRES_URL", server.create_database("restarted"))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for day in (dt.date(2025, 1, 1), dt.date(2025, 1, 2)):
                assert dg.materialize([counted_days], instance=instance,
                                      partition_key=day.isoformat()).success
                server.restart()
            assert len(instance.fetch_materializations(counted_days.key, limit=10).records) == 2


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents(postgres_server):
    """The kept connection is not shared with a forked child (SQLAlchemy's advice for
    ``os.fork``): the child gets a server session of its own, and the parent's still works."""
    storage = PooledPostgresEventLogStorage(postgres_server.create_database("forked"))

    def backend() -> int:
        with storage._connect() as connection:  # noqa: SLF001  (the storage's own connection)
            return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()

    parent = backend()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child reports through the pipe and leaves at once)
        try:
            os.write(write, str(backend()).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as answer:
        in_child = int(answer.read() or -1)
    assert in_child not in (-1, parent)
    assert backend() == parent


def test_the_instance_stores_runs_events_and_schedules_in_postgres(project):
    assert isinstance(project.instance.run_storage, PostgresRunStorage)
    assert isinstance(project.instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(project.instance.schedule_storage, PostgresScheduleStorage)
    assert sorted(p.name for p in project.root.rglob("*.db")) == []  # no SQLite file anywhere


def test_every_run_and_its_events_are_rows_in_postgres(project):
    runs = dict(project.query("SELECT pipeline_name, count(*) FROM runs GROUP BY pipeline_name"))
    assert runs == {"ingest_job": 1, "retrain_job": 2, "daily_job": 2}
    statuses = {status for (status,) in project.query("SELECT status FROM runs")}
    assert statuses == {"SUCCESS"}
    api_runs = {run.run_id for run in project.instance.get_runs()}
    assert {run_id for (run_id,) in project.query("SELECT run_id FROM runs")} == api_runs
    per_run = dict(project.query(
        "SELECT run_id, count(*) FROM event_logs GROUP BY run_id"))
    assert set(per_run) == api_runs and min(per_run.values()) > 10


def test_each_day_is_materialised_once_per_run_in_the_event_log(project):
    rows = project.query(
        "SELECT asset_key, partition, count(*) FROM event_logs WHERE dagster_event_type ="
        " 'ASSET_MATERIALIZATION' AND partition IS NOT NULL GROUP BY asset_key, partition")
    days = lambda asset: {p for key, p, n in rows if json.loads(key) == [asset]}  # noqa: E731
    every_day = {(FIRST + dt.timedelta(days=i)).isoformat()
                 for i in range((project.last_day - FIRST).days + 1)}
    for asset in ("raw_transactions", "validated_transactions", "transaction_features",
                  "feature_state"):
        assert days(asset) == every_day
    assert days("drift_report") == {(DRIFTED[0] + dt.timedelta(days=i)).isoformat()
                                    for i in range((project.last_day - DRIFTED[0]).days + 1)}
    assert all(n == 1 for _, _, n in rows)
    assert project.instance.get_materialized_partitions(dg.AssetKey("raw_transactions")) == every_day


def test_the_retrain_that_drift_sensor_requested_is_recorded_with_its_tags(project):
    request = project.sensor_requests[0]
    tags = dict(project.query("SELECT key, value FROM run_tags WHERE run_id = %s",
                              project.sensor_run.run_id))
    assert tags["fraud/trigger"] == "drift_sensor"
    assert tags["fraud/drift_day"] == request.tags["fraud/drift_day"]
    assert DRIFTED[0].isoformat() <= tags["fraud/drift_day"] <= DRIFTED[1].isoformat()


def test_mlflow_runs_and_the_registry_are_in_postgres_schema_mlflow(project):
    assert project.query("SELECT current_schemas(false)")[0][0] == ["public"]  # Dagster's
    runs = project.query("SELECT run_uuid, status FROM mlflow.runs")
    assert len(runs) == 2 and {status for _, status in runs} == {"FINISHED"}
    versions = project.query(
        "SELECT version, run_id FROM mlflow.model_versions WHERE name = %s ORDER BY version",
        registry.REGISTERED_MODEL)
    assert [v for v, _ in versions] == [1, 2]
    assert {run_id for _, run_id in versions} == {run_uuid for run_uuid, _ in runs}
    aliases = dict(project.query("SELECT alias, version FROM mlflow.registered_model_aliases"))
    assert aliases["challenger"] == 2 and aliases["champion"] in (1, 2)
    tags = dict(project.query("SELECT key, value FROM mlflow.tags WHERE run_uuid = %s",
                              versions[0][1]))
    assert tags["dagster_run_id"] == project.champion_run.run_id
    assert not (project.data_dir / "mlflow" / "mlflow.db").exists()


def test_the_exported_champion_names_its_mlflow_run_in_postgres(project):
    models = project.data_dir / "bentoml" / "models" / "fraud_model"
    exported = [json.loads((d / "serving.json").read_text())
                for d in models.iterdir() if d.name != "latest"]
    [champion] = project.query(
        "SELECT v.version, v.run_id FROM mlflow.registered_model_aliases a JOIN"
        " mlflow.model_versions v ON v.name = a.name AND v.version = a.version"
        " WHERE a.alias = 'champion'")
    assert (str(champion[0]), champion[1]) in {
        (e["registered_version"], e["mlflow_run_id"]) for e in exported}
    assert project.champion_run.run_id in {e["export_dagster_run_id"] for e in exported}


def test_mlflow_follows_fraud_postgres_url_into_its_own_schema(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FRAUD_POSTGRES_URL", "postgresql+psycopg2://fraud:pw@db:5432/fraud?sslmode=require")
    assert settings.mlflow_tracking_uri() == ("postgresql+psycopg2://fraud:pw@db:5432/fraud"
                                              "?sslmode=require&options=-csearch_path%3Dmlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # MLflow's own wins
    assert settings.mlflow_tracking_uri() == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("FRAUD_POSTGRES_URL")
    assert settings.mlflow_tracking_uri() is None  # the SQLite file under the data root


def test_a_url_without_the_psycopg2_driver_is_refused_saying_which_scheme(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FRAUD_POSTGRES_URL", "postgresql://fraud@db/fraud")
    with pytest.raises(ValueError, match=r"postgresql\+psycopg2://"):
        settings.mlflow_tracking_uri()


def test_asset_files_models_and_mlflow_artifacts_are_under_the_storage_url(project):
    """Nothing the pipeline stores is under the data root but what the service shares there."""
    stored = {path.relative_to(project.storage).parts[0] for path in project.storage.rglob("*")
              if path.is_file()}
    assert stored == {"assets", "models", "mlflow"}
    assert (project.storage / "assets" / "feature_state" / f"{project.last_day}.parquet").exists()
    assert list((project.storage / "mlflow" / "artifacts").rglob("MLmodel"))
    assert not (project.data_dir / "assets").exists()
    assert not (project.data_dir / "models").exists()
    assert not (project.data_dir / "mlflow").exists()


def test_production_refuses_to_load_without_its_settings_naming_each(monkeypatch):
    for name in ("FRAUD_STORAGE_URL", "FRAUD_POSTGRES_URL", "MLFLOW_TRACKING_URI", "FRAUD_DATA_DIR",
                 "BENTOML_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FRAUD_DEPLOYMENT", "production")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(ValueError) as refused:
        default_resources()
    message = str(refused.value)
    for name in settings.PRODUCTION_SETTINGS:
        assert name in message
    monkeypatch.setenv("FRAUD_STORAGE_URL", "s3://bucket/fraud")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("FRAUD_DATA_DIR", "/srv/fraud")
    with pytest.raises(ValueError, match="needs BENTOML_HOME") as refused:
        default_resources()
    assert "FRAUD_STORAGE_URL" not in str(refused.value)


def test_an_unknown_deployment_is_refused_saying_which_there_are(monkeypatch):
    monkeypatch.setenv("FRAUD_DEPLOYMENT", "prod")
    with pytest.raises(ValueError, match="FRAUD_DEPLOYMENT must be one of local, production"):
        default_resources()


def test_the_storage_url_moves_the_local_sets_files_too(monkeypatch, tmp_path):
    """The service reads feature states under FRAUD_STORAGE_URL whichever set the pipeline runs
    with, so the local set must write them there too."""
    monkeypatch.delenv("FRAUD_DEPLOYMENT", raising=False)
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FRAUD_STORAGE_URL", (tmp_path / "bucket").as_uri())
    resources = default_resources()
    bucket = (tmp_path / "bucket").as_uri()
    assert resources["io_manager"].base_path == f"{bucket}/assets"
    assert resources["daily_tables"].base_path == f"{bucket}/assets"
    assert resources["model_io_manager"].base_path == f"{bucket}/models"
    assert resources["model_registry"].artifact_location == f"{bucket}/mlflow/artifacts"
