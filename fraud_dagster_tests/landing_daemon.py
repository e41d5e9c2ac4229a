"""The sensor daemon, played in process for the landing tests."""

import dagster as dg

from fraud_dagster.resources import LandingSource
from fraud_dagster.sensors import landing_sensor


class Daemon:
    """What the sensor daemon does with ``landing_sensor``: evaluate it with the cursor it stored,
    then launch each run request whose run key this sensor has not launched before (here:
    execute it in process, tagged as the daemon tags it)."""

    def __init__(self, defs, instance, landing_dir, settle_seconds: float = 5.0):
        self.defs, self.instance, self.landing_dir = defs, instance, landing_dir
        self.source = LandingSource(landing_dir=str(landing_dir), settle_seconds=settle_seconds)
        self.cursor = None
        self.results: list[dg.ExecuteInProcessResult] = []

    def evaluate(self):
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor,
            resources={"transaction_source": self.source},
        )
        return landing_sensor(context), context

    def tick(self) -> list[dg.RunRequest]:
        result, context = self.evaluate()
        if isinstance(result, dg.SensorResult):
            requests = list(result.run_requests or [])
            if result.cursor is not None:
                self.cursor = result.cursor
        else:
            requests = list(result) if isinstance(result, list) else []
            self.cursor = context.cursor
        launched = []
        for request in requests:
            if request.run_key and self.instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/run_key": request.run_key})
            ):
                continue
            job = self.defs.resolve_job_def(request.job_name or "ingest_job")
            self.results.append(job.execute_in_process(
                instance=self.instance,
                run_config=request.run_config or {},
                tags={**request.tags, "dagster/run_key": request.run_key,
                      "dagster/sensor_name": "landing_sensor"},
                raise_on_error=False,
            ))
            launched.append(request)
        return launched
