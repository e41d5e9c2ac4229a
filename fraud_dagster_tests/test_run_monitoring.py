"""A run whose worker is killed with SIGKILL (the OOM killer, a power cut of the process tree) is
marked failed by the daemon's run monitoring within the configured interval, and the queue moves:
with ``max_concurrent_runs: 2``, two such runs otherwise block every scheduled and sensor run.

A real instance from the project's ``dagster.yaml`` (storage paths moved to a temporary
DAGSTER_HOME, the monitoring poll interval shortened: the only change), a real ``dagster-daemon``
in a subprocess, and the sensor of ``crash_defs.py`` requesting the runs."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml

from fraud_dagster_tests.processes import stop_group

pytestmark = pytest.mark.slow  # a real dagster-daemon and its runs

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 5


def instance_yaml(home: Path) -> str:
    """The project's dagster.yaml with its paths under ``home`` and a 5 s monitoring poll."""
    text = (REPO / "dagster.yaml").read_text().replace("base_dir: data/dagster",
                                                       f"base_dir: {home}/data/dagster")
    config = yaml.safe_load(text)
    config.setdefault("run_monitoring", {})["poll_interval_seconds"] = POLL_SECONDS
    return yaml.safe_dump(config)


def worker_pids(instance, job_name: str) -> dict[str, int]:
    """Run id -> pid of its run worker, from the worker's own 'Started process' event."""
    pids = {}
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=job_name)):
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            found = re.search(r"Started process for run \(pid: (\d+)\)", event.message or "")
            if found:
                pids[run.run_id] = int(found.group(1))
    return pids


def wait_for(condition, timeout: float, what: str, details=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"{what} not within {timeout} s: {details()}")


def test_killed_runs_are_marked_failed_and_the_queue_moves(tmp_path):
    home = tmp_path / "home"
    (home / "flags").mkdir(parents=True)
    (home / "dagster.yaml").write_text(instance_yaml(home))
    env = {**os.environ, "DAGSTER_HOME": str(home), "FRAUD_TEST_FLAG_DIR": str(home / "flags")}
    log_path = home / "daemon.log"
    log_tail = lambda: log_path.read_text(errors="replace")[-3000:]  # noqa: E731
    # The instance's SQLite files are created here, before the daemon starts: the daemon, its
    # code server and this process creating them at once race in Dagster's schema check
    # (alembic's CommandError in a code server, seen once in CI), which a deployment avoids by
    # creating the instance first, as `dagster dev` does.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with log_path.open("wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "dagster._daemon", "run",
                 "-f", str(REPO / "fraud_dagster_tests" / "crash_defs.py")],
                cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            statuses = lambda: [(r.job_name, r.status.value) for r in instance.get_runs()]  # noqa: E731
            pids = wait_for(lambda: len(worker_pids(instance, "sleepy_job")) == 2
                            and worker_pids(instance, "sleepy_job"), 240,
                            "two sleepy runs started", log_tail)
            (home / "flags" / "quick").touch()  # the sensor now requests a third run ...
            wait_for(lambda: ("quick_job", "QUEUED") in statuses(), 60, "quick run queued",
                     statuses)
            time.sleep(2 * POLL_SECONDS)
            assert ("quick_job", "QUEUED") in statuses()  # ... which waits: two are running
            # What the OOM killer or a kill -9 of the process tree leaves: the run workers and
            # the code server that launched them are gone, nothing ran a shutdown hook.
            victims = [psutil.Process(pid) for pid in pids.values()]
            victims += list({p.parent().pid: p.parent() for p in victims}.values())
            for process in victims:
                process.send_signal(signal.SIGKILL)
            psutil.wait_procs(victims, timeout=30)
            killed_at = time.monotonic()
            # Marked failed within a few monitoring polls, ...
            wait_for(lambda: all(instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
                                 for run_id in pids), 6 * POLL_SECONDS + 30,
                     "killed runs marked FAILURE", statuses)
            failed_after = time.monotonic() - killed_at
            # ... and the queued run starts and finishes.
            wait_for(lambda: ("quick_job", "SUCCESS") in statuses(), 180,
                     "queued run succeeded", lambda: f"{statuses()}\n{log_tail()}")
            print(f"killed runs marked FAILURE {failed_after:.0f} s after the kill")
        finally:
            stop_group(daemon, timeout=60)
