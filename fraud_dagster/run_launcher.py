"""Dagster's local run launcher, plus the worker health check its run monitoring needs.

``DefaultRunLauncher`` starts each run in a process of the code server, and only that code
server notices when the process dies. When the code server dies with it (the OOM killer, a
``kill -9`` of the process tree, a power cut), the run stays STARTED for ever and holds one of
the ``max_concurrent_runs`` slots. ``DefaultRunLauncher`` does not implement
``check_run_worker_health``, so the daemon's run monitoring cannot see it either.
``LocalRunLauncher`` implements it: the run worker records its pid in the run's event log
("Started process for run (pid: N)"); a worker whose pid is gone, a zombie, or a newer process
that took the pid over (its start time is after the event) is reported FAILED, and run
monitoring marks the run failed. The check is only meaningful on the machine that ran the worker:
for a code server on another host it answers RUNNING (never a false failure).
"""

import re
import socket

import psutil
from dagster._core.events import DagsterEventType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClass

_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")
_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", socket.gethostname()}


class LocalRunLauncher(DefaultRunLauncher, ConfigurableClass):
    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        import json

        grpc_info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
        if grpc_info.get("host") not in _LOCAL_HOSTS:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "code server on another host")
        started = [
            (int(found.group(1)), event.timestamp)
            for event in self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if (found := _STARTED.search(event.message or ""))
        ]
        if not started:  # not written yet: the worker reports it before the run starts
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded yet")
        pid, reported_at = started[-1]
        try:
            process = psutil.Process(pid)
            alive = process.status() != psutil.STATUS_ZOMBIE
            # A process started after the worker reported its pid reuses that pid.
            alive = alive and process.create_time() <= reported_at + 1
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker pid {pid} is gone (killed: the OOM killer, kill -9, a crash of its"
            " code server)",
        )
