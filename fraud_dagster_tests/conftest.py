import os

# One OpenMP thread a process (XGBoost's fits), here and in every process the tests start (they
# inherit it), unless the environment sets it: the tests share the cores with their own servers
# and each other, and XGBoost asking for every core of an oversubscribed machine fits several
# times slower. Set before anything imports XGBoost (OpenMP reads it when it loads). No test
# depends on the number of threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fraud_dagster_tests.processes import PostgresServer, free_port, postgres_bin_dir

# Dagster, MLflow (through the definitions) and redis-py are imported by the fixtures that use
# them, not here: a test file of pure logic, run alone, then starts in seconds, not ten.


@pytest.fixture
def instance(tmp_path):
    import dagster as dg

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
def simulator_defs(data_dir):
    from fraud_dagster.definitions import make_definitions
    from fraud_dagster.resources import SimulatorSource, local_resources
    from fraud_dagster_tests.pipeline import SMALL_SIMULATOR

    return make_definitions(local_resources(data_dir, SimulatorSource(**SMALL_SIMULATOR)))


@pytest.fixture
def landing_defs(data_dir, landing_dir):
    from fraud_dagster.definitions import make_definitions
    from fraud_dagster.resources import LandingSource, local_resources

    return make_definitions(local_resources(data_dir, LandingSource(landing_dir=str(landing_dir))))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real ``redis-server`` on a free loopback port, nothing persisted; yields its URL.

    Debian's ``redis-server`` package provides it (``.ci/run`` installs it when it is missing).
    """
    import redis

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


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL 15 server on a free loopback port, in a throwaway cluster under /tmp
    (fsync off), stopped and deleted after the session; yields it (``create_database`` gives a
    database's URL).

    Debian's ``postgresql-15`` package provides ``initdb`` and ``pg_ctl`` (``.ci/run`` installs it
    when it is missing); the tests that use it are skipped on a machine without them."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are neither on the PATH nor in"
                    " /usr/lib/postgresql/15/bin: install Debian's postgresql-15 package"
                    " (apt-get install postgresql-15; .ci/run does)")
    with PostgresServer(bin_dir, fsync=False).running() as server:
        yield server


@pytest.fixture(scope="session")
def shared_project(tmp_path_factory):
    """The project with a champion that several modules start from (``pipeline.trained_project``:
    75 days of the small simulator ingested, a champion trained and exported), built once per
    session. Read it only: a test that changes a project takes ``pipeline.copy_project`` of it."""
    from fraud_dagster_tests.pipeline import trained_project

    with trained_project(tmp_path_factory.mktemp("shared") / "project") as project:
        yield project


EXPENSIVE_FIXTURES = {"shared_project", "postgres_server", "instance"}
"""A test that uses one of these (directly or through another fixture) is ``slow``: the trained
project, PostgreSQL, or a Dagster instance (a test that records runs into one takes 1-7 s of
Dagster's bookkeeping, however few rows it materialises). Not ``redis_server``: Redis starts in
well under a second."""


def pytest_addoption(parser):
    parser.addoption("--record-module-seconds", action="store_true",
                     help="write each test module's seconds in this run to"
                     " fraud_dagster_tests/module_seconds.json (the order --dist loadscope starts"
                     " modules in: fraud_dagster_tests/scheduling.py)")


def pytest_configure(config):
    if config.getoption("record_module_seconds") and not hasattr(config, "workerinput"):
        from fraud_dagster_tests.scheduling import ModuleSecondsRecorder

        config.pluginmanager.register(ModuleSecondsRecorder(), "module_seconds_recorder")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope``: xdist's, the longest modules first and the shared project's modules
    as one unit (``scheduling.py``); any other ``--dist`` is xdist's own."""
    if config.getvalue("dist") == "loadscope":
        from fraud_dagster_tests.scheduling import LongestFirstScheduling

        return LongestFirstScheduling(config, log)
    return None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    """Mark ``slow`` every test that needs the shared trained project, PostgreSQL or a Dagster
    instance, besides those marked by hand (their own ingest and training, servers, daemons,
    processes): the quick subset, ``-m "not slow"``, is what is left: the pure logic, the
    serving package in process, the stores on Redis, the landing and label files' rules.

    Also stops the run when a module uses ``shared_project`` without being in
    ``scheduling.SHARED_PROJECT_MODULES`` (xdist would build the project once more for it)."""
    from fraud_dagster_tests.scheduling import SHARED_PROJECT_MODULES, module_of

    unlisted = set()
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if EXPENSIVE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if "shared_project" in fixtures and module_of(item.nodeid) not in SHARED_PROJECT_MODULES:
            unlisted.add(module_of(item.nodeid))
    if unlisted:
        raise pytest.UsageError(f"{sorted(unlisted)} use the shared_project fixture: add them to"
                                " SHARED_PROJECT_MODULES in fraud_dagster_tests/scheduling.py")
