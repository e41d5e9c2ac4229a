"""How pytest-xdist hands the test modules to its workers under ``--dist loadscope`` (the README's
command): as xdist's own loadscope, a module's tests together on one worker, its module fixtures
built once; and besides

- the modules that read the shared trained project (``SHARED_PROJECT_MODULES``) are one unit, so
  that one worker builds that session fixture (a minute), not each worker;
- the longest unit goes first (longest processing time first), by the seconds each module took in
  a recorded run (``MODULE_SECONDS``; ``--record-module-seconds`` writes it anew). xdist's own
  order is by number of tests, which started the four tests of ``test_live_serving.py`` (four
  minutes) among the last, the other worker idle at the end.

A module missing from the record (a new one) counts 0 s: it runs among the short ones.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

MODULE_SECONDS = Path(__file__).with_name("module_seconds.json")
SHARED_PROJECT_MODULES = ("fraud_dagster_tests/test_serving.py",
                          "fraud_dagster_tests/test_model_assets.py")
"""The modules whose tests use the ``shared_project`` fixture (conftest.py stops a run that
collects another one using it)."""
SHARED_PROJECT_UNIT = "shared_project"


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class LongestFirstScheduling(LoadScopeScheduling):
    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        self.seconds = collections.Counter()
        if MODULE_SECONDS.exists():
            for module, seconds in json.loads(MODULE_SECONDS.read_text()).items():
                self.seconds[self._split_scope(module)] += seconds

    def _split_scope(self, nodeid: str) -> str:
        module = module_of(nodeid)
        return SHARED_PROJECT_UNIT if module in SHARED_PROJECT_MODULES else module

    def _assign_work_unit(self, node) -> None:
        # xdist hands out the first unit of its queue: put the longest first.
        longest = max(self.workqueue, key=lambda scope: self.seconds[scope])
        self.workqueue.move_to_end(longest, last=False)
        super()._assign_work_unit(node)


class ModuleSecondsRecorder:
    """``--record-module-seconds``: each module's seconds (its tests' set-up, call and tear-down)
    summed over the run, written to ``MODULE_SECONDS`` at its end. Registered in the controlling
    process only (with xdist, it sees every worker's reports)."""

    def __init__(self) -> None:
        self.seconds = collections.Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[module_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self) -> None:
        MODULE_SECONDS.write_text(json.dumps(
            {module: round(seconds, 1) for module, seconds in sorted(self.seconds.items())},
            indent=2) + "\n")
