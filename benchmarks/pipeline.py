"""Pipeline benchmark: a 183-day single-run backfill of the daily assets, against baselines.

The daily assets are raw, validated and quarantined transactions, transaction_features and
feature_state (``ingest_job``).

    uv run python benchmarks/pipeline.py [--days 183]

Prints one JSON object per line: each measured thing runs in its own subprocess so its peak memory is
its own. Scenarios:

- ``functions``: the pure functions alone (simulate, validate, features, write parquet), no Dagster:
  the floor.
- ``dagster_single_run``: the ingest job over all days as ONE run, as a UI backfill makes it
  (``BackfillPolicy.single_run``) into a temporary instance; per-step rows/s from the event log.
- ``dagster_run_per_day``: the same job one day per run, for a few days, to show what a backfill
  of one run per partition would cost (extrapolated to all days).
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = dt.date(2025, 1, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def functions(days: int, root: Path) -> dict:
    import polars as pl

    from fraud_dagster.core.features import FeatureSpec, batch_features
    from fraud_dagster.core.simulator import Simulator, SimulatorConfig
    from fraud_dagster.core.validation import split_transactions

    last = START + dt.timedelta(days=days - 1)
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(stage: str):
        t0 = time.perf_counter()
        yield
        seconds[stage] = time.perf_counter() - t0

    with timed("simulate"):
        simulator = Simulator(SimulatorConfig(drift_start=START + dt.timedelta(days=120)))
        raw = simulator.days(START, last).with_columns(
            partition_date=pl.col("tx_datetime").dt.date(),
            source=pl.lit("simulator"),
            parse_errors=pl.lit(None, dtype=pl.Utf8),
        )
    with timed("validate"):
        validated = split_transactions(raw).validated
    with timed("features"):
        batch_features(validated, START, last, FeatureSpec())
    with timed("write_parquet"):
        out = root / "validated"
        out.mkdir(parents=True)
        by_day = validated.with_columns(d=pl.col("tx_datetime").dt.date()).partition_by(
            "d", as_dict=True, include_key=False
        )
        for (day,), part in by_day.items():
            part.write_parquet(out / f"{day}.parquet")
    return {
        "rows": raw.height,
        "stages": {
            stage: {"seconds": round(s, 2), "rows_per_s": round(raw.height / s)}
            for stage, s in seconds.items()
        },
        "wall_s": round(sum(seconds.values()), 2),
    }


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    import dagster as dg

    starts, seconds = {}, {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry
        if not event.is_dagster_event:
            continue
        kind, step = event.dagster_event.event_type, event.step_key
        if kind == dg.DagsterEventType.STEP_START:
            starts[step] = event.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            seconds[step] = event.timestamp - starts[step]
    return seconds


STAGES = {
    "transactions": ("raw_transactions", "validated_transactions", "quarantined_transactions"),
    "features": ("transaction_features", "feature_state"),
}


def dagster_runs(days: int, root: Path, per_day: bool) -> dict:
    """The transactions stage then the features stage, each as its own run(s) of ingest_job."""
    os.environ["FRAUD_DATA_DIR"] = str(root / "data")
    import dagster as dg
    import polars as pl

    from fraud_dagster.definitions import defs
    from fraud_dagster.partitions import partition_range_tags

    job = defs.resolve_job_def("ingest_job")
    last = START + dt.timedelta(days=days - 1)
    ranges = [(START + dt.timedelta(days=i),) * 2 for i in range(days)] if per_day else [(START, last)]
    home = root / "dagster"
    home.mkdir()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    out: dict = {"runs": 0, "stages": {}}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for stage, assets in STAGES.items():
            t0 = time.perf_counter()
            steps: dict[str, float] = {}
            for first, end in ranges:
                result = job.execute_in_process(
                    instance=instance,
                    tags=partition_range_tags(first, end),
                    run_config=quiet,
                    asset_selection=[dg.AssetKey(a) for a in assets],
                )
                assert result.success
                out["runs"] += 1
                for step, s in _step_seconds(instance, result.run_id).items():
                    steps[step] = steps.get(step, 0.0) + s
            wall = time.perf_counter() - t0
            rows = pl.scan_parquet(
                str(root / "data" / "assets" / assets[0] / "*.parquet")
            ).select(pl.len()).collect().item()
            out["stages"][stage] = {
                "wall_s": round(wall, 2),
                "rows": rows,
                "rows_per_s": round(rows / wall),
                "steps_s": {step: round(s, 2) for step, s in steps.items()},
            }
    return out


def measure(scenario: str, days: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if scenario == "functions":
            result = functions(days, root)
        else:
            result = dagster_runs(days, root, per_day=scenario == "dagster_run_per_day")
    return {"scenario": scenario, "days": days, **result, "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--per-day-runs", type=int, default=3)
    parser.add_argument("--scenario")
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(measure(args.scenario, args.days)))
        return

    results = {}
    for scenario, days in (
        ("functions", args.days),
        ("dagster_single_run", args.days),
        ("dagster_run_per_day", args.per_day_runs),
    ):
        out = subprocess.run(
            [sys.executable, __file__, "--scenario", scenario, "--days", str(days)],
            capture_output=True, text=True,
        )
        if out.returncode:
            sys.exit(f"{scenario} failed:\n{out.stderr[-4000:]}")
        results[scenario] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[scenario]), flush=True)

    single, per_day = results["dagster_single_run"]["stages"], results["dagster_run_per_day"]["stages"]
    for stage, floor in (("transactions", 60), ("features", 30)):
        print(json.dumps({
            "summary": f"{stage}: single-run backfill vs baselines",
            "days": args.days,
            "single_run_wall_s": single[stage]["wall_s"],
            "functions_only_s": {
                "transactions": results["functions"]["stages"]["simulate"]["seconds"]
                + results["functions"]["stages"]["validate"]["seconds"],
                "features": results["functions"]["stages"]["features"]["seconds"],
            }[stage],
            "run_per_day_wall_s_extrapolated": round(
                per_day[stage]["wall_s"] / args.per_day_runs * args.days, 1
            ),
            "floor_wall_s": floor,
            "meets_floor": single[stage]["wall_s"] < floor,
        }))


if __name__ == "__main__":
    main()
