"""The live loop through the real server: held-out days replayed in time order through ``bentoml
serve`` while the pipeline materialises each day between them (as the nightly ``daily_job``
does); the service picks up each new ``feature_state`` and a new champion by itself, and what it
served equals what the batch computes, on the in-process store and on two workers sharing Redis."""

import concurrent.futures
import dataclasses
import datetime as dt
import itertools
import threading
import time
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import polars as pl
import pytest
import redis
from mlflow import MlflowClient

from fraud_dagster import registry
from fraud_dagster.core.features import FEATURE_COLUMNS
from fraud_dagster.core.metrics import average_precision
from fraud_dagster.core.schema import REQUIRED_COLUMNS
from fraud_dagster.core.validation import split_transactions
from fraud_dagster.resources import SimulatorSource
from fraud_dagster_tests.pipeline import (
    SMALL_SIMULATOR,
    copy_project,
    new_project,
    read_partition,
    run_ingest,
)
from fraud_dagster_tests.processes import BentoServer

pytestmark = pytest.mark.slow  # its own trained project, and real servers

FIRST, STATE_DAY = dt.date(2025, 1, 1), dt.date(2025, 2, 28)
REPLAY = [STATE_DAY + dt.timedelta(days=i) for i in (1, 2, 3)]
FAST = {"models": ["xgboost"], "balancing": ["none"], "validation_folds": 2}
SIZES = itertools.cycle([1, 3, 17, 256, 257, 600])  # plain-Python and polars paths, in turn


@dataclasses.dataclass
class Project:
    root: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    backend: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def server(self, **env) -> BentoServer:
        return BentoServer(self.data_dir / "bentoml", self.data_dir, self.root / "server.log",
                           FRAUD_RELOAD_SECONDS="1", **env)

    def retrain(self, models=("xgboost",), min_gain=0.0) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def("retrain_job").execute_in_process(
            instance=self.instance, raise_on_error=False, run_config={"ops": {
                "fraud_model": {"config": {**FAST, "models": list(models)}},
                "model_evaluation": {"config": {"min_average_precision_gain": min_gain}},
            }})

    def materialise_day(self, day: dt.date) -> None:
        result = self.defs.resolve_job_def("daily_job").execute_in_process(
            instance=self.instance, partition_key=day.isoformat(), raise_on_error=False)
        assert result.success

    def champion(self):
        client = MlflowClient(f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}")
        return registry.load_version(client, registry.alias_version(client, registry.CHAMPION))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two months of a small simulator and a champion exported with the state of the last day."""
    with new_project(tmp_path_factory.mktemp("live") / "project") as project:
        assert run_ingest(project.defs, project.instance, FIRST, STATE_DAY).success
        assert Project(project.root, project.instance, project.defs, "memory").retrain().success
        yield project


@pytest.fixture(params=["memory", "redis"])
def project(request, trained, tmp_path):
    """A copy of ``trained`` for this test alone, served from the in-process store or Redis."""
    with copy_project(trained, tmp_path / "project") as copy:
        yield Project(copy.root, copy.instance, copy.defs, request.param)


def store_env(project: Project, request) -> dict:
    """The server's store settings: in memory, or two workers on a flushed Redis."""
    if project.backend == "memory":
        return {}
    url = request.getfixturevalue("redis_server")
    redis.Redis.from_url(url).flushdb()
    return {"FRAUD_ONLINE_STORE": "redis", "FRAUD_REDIS_URL": url, "FRAUD_WORKERS": "2"}


def validated_day(day: dt.date) -> pl.DataFrame:
    """The day's transactions as the pipeline will validate them (the simulator is seeded)."""
    raw = SimulatorSource(**SMALL_SIMULATOR).read_days(day, day)
    return split_transactions(raw).validated.select(REQUIRED_COLUMNS)


def as_json(rows: pl.DataFrame) -> list[dict]:
    return [{**row, "tx_datetime": row["tx_datetime"].isoformat()}
            for row in rows.iter_rows(named=True)]


def send(client: httpx.Client, rows: pl.DataFrame) -> list[dict]:
    """Every row through /predict_batch with its features, in order, in requests of mixed sizes."""
    served, start = [], 0
    while start < rows.height:
        part = rows.slice(start, next(SIZES))
        response = client.post("/predict_batch", json={"transactions": as_json(part),
                                                       "include_features": True})
        assert response.status_code == 200, response.text
        served += response.json()["predictions"]
        start += part.height
    return served


def wait_for(client: httpx.Client, key: str, value, timeout: float = 60) -> float:
    """Seconds until /metadata's ``key`` is ``value``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if client.get("/metadata").json()[key] == value:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"/metadata {key} is not {value!r} after {timeout} s")


def assert_served_as_the_batch(project: Project, day: dt.date, served: list[dict]) -> None:
    batch = read_partition(project.data_dir / "assets", "transaction_features", day)
    assert [p["transaction_id"] for p in served] == batch["transaction_id"].to_list()
    mismatches = [
        (p["transaction_id"], name, p["features"][name], expected)
        for p, row in zip(served, batch.iter_rows(named=True))
        for name, expected in ((n, row[n]) for n in FEATURE_COLUMNS)
        if p["features"][name] != expected
    ]
    assert mismatches == []
    assert all(p["state_lag_days"] == 0 for p in served)
    expected = project.champion().predict_proba(batch)
    got = np.array([p["fraud_probability"] for p in served])
    assert np.max(np.abs(got - expected)) <= 1e-9
    # The simulator's truth: the delivered tx_fraud is null for what is not (yet) reported.
    truth = read_partition(project.data_dir / "assets", "validated_transactions", day).select(
        "transaction_id", fraud=(pl.col("tx_fraud_scenario") > 0).cast(pl.Int8))
    y = batch.join(truth, on="transaction_id", maintain_order="left")["fraud"].to_numpy()
    assert 0 < y.sum() < y.size
    assert average_precision(y, got) == average_precision(y, expected)


def test_three_held_out_days_replayed_live_get_the_batch_features_through_restarts(
        project, request):
    """Day 1 straight through; day 2 with a graceful restart half-way; day 3 with kill -9."""
    server = project.server(**store_env(project, request))
    server.start()
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.get("/metadata").json()["state_date"] == STATE_DAY.isoformat()
            for day, restart in zip(REPLAY, (None, server.stop, server.kill)):
                rows = validated_day(day)
                half = rows.height // 2
                served = send(client, rows.head(half))
                if restart is not None:
                    restart()
                    server.start()
                    server.wait_ready()
                    metadata = client.get("/metadata").json()
                    assert metadata["transactions_applied"] == half  # the journal, replayed
                served += send(client, rows.tail(rows.height - half))
                assert client.get("/metadata").json()["newest_transaction"] == (
                    rows["tx_datetime"].max().isoformat())
                project.materialise_day(day)
                wait_for(client, "state_date", day.isoformat())
                assert_served_as_the_batch(project, day, served)
    finally:
        server.stop()


def test_a_champion_exported_under_load_is_served_within_a_minute_without_a_failed_request(
        project, request):
    server = project.server(**store_env(project, request))
    ids = itertools.count(10**12)
    stop, statuses, versions = threading.Event(), [], set()

    def load(client: httpx.Client) -> None:
        while not stop.is_set():
            n = next(ids)
            response = client.post("/predict", json={
                "transaction_id": n, "tx_datetime": f"2025-06-01T{n % 24:02d}:00:00",
                "customer_id": n % 500, "terminal_id": n % 1000, "tx_amount": 12.5})
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.add(response.json()["model_version"])

    with server.running(), httpx.Client(base_url=server.url, timeout=120) as client:
        before = client.get("/metadata").json()["model_version"]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            clients = [httpx.Client(base_url=server.url, timeout=120) for _ in range(4)]
            running = [pool.submit(load, c) for c in clients]
            try:
                assert project.retrain(models=("random_forest",), min_gain=-1.0).success
                exported = project.champion().version
                assert exported != before
                waited = wait_for(client, "model_version", exported)
                time.sleep(1)
            finally:
                stop.set()
                for future in running:
                    future.result()
                for c in clients:
                    c.close()
    assert waited <= 60
    assert len(statuses) > 20 and set(statuses) == {200}
    assert {before, exported} <= versions
