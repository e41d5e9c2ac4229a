import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import redis

from fraud_dagster.definitions import local_resources, make_definitions
from fraud_dagster.partitions import partition_range_tags
from fraud_dagster.resources import LandingSource, SimulatorSource
from fraud_dagster_tests.processes import free_port

# Small populations keep runs quick; the behaviour under test does not depend on size.
SMALL_SIMULATOR = dict(n_customers=500, n_terminals=1_000, drift_start="2025-03-01")


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def assets_dir(data_dir) -> Path:
    return data_dir / "assets"


@pytest.fixture
def landing_dir(tmp_path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def simulator_defs(data_dir) -> dg.Definitions:
    return make_definitions(local_resources(data_dir, SimulatorSource(**SMALL_SIMULATOR)))


@pytest.fixture
def landing_defs(data_dir, landing_dir) -> dg.Definitions:
    return make_definitions(local_resources(data_dir, LandingSource(landing_dir=str(landing_dir))))


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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real ``redis-server`` on a free loopback port, nothing persisted; yields its URL.

    Debian's ``redis-server`` package provides it (``.ci/run`` installs it when it is missing).
    """
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not on the PATH: install Debian's redis-server package"
                    " (apt-get install redis-server; .ci/run does)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    with (folder / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING on port {port}:\n"
                                       + (folder / "redis.log").read_text()[-3000:]) from None
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
