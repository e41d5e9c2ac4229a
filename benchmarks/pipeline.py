"""Pipeline benchmark: a 183-day single-run backfill of the daily assets, against baselines.

The daily assets are raw, validated and quarantined transactions, transaction_features and
feature_state (``ingest_job``).

    uv run python benchmarks/pipeline.py [--days 183]

Prints one JSON object per line. Each measured thing runs in its own subprocess, so its peak memory
(``peak_rss_mb``, the process's maximum resident set, Python and Dagster included) is its own.
Scenarios, in the order they run:

- ``functions``: the pure functions alone (simulate, validate, features, write parquet), no Dagster:
  the floor.
- ``dagster_stage`` transactions, then features: ``ingest_job`` over all days as ONE run per stage,
  as a UI backfill makes it (``BackfillPolicy.single_run``), into one temporary instance: on
  SQLite, then again (simulated anew) on PostgreSQL (``deploy/postgres/dagster.yaml``, a
  throwaway server started by the benchmark, fsync on), and again on the same server with
  dagster-postgres's storages as shipped (``postgres_nullpool``: its ``storage: postgres`` block,
  a new connection per statement), the baseline of ``fraud_dagster/postgres_storage.py``.
  Besides wall time, rows/s and peak memory, each reports where its time went, from the run's
  event log (``split_s``): creating the run (one planned event per asset and partition),
  start-up, loading the inputs, computing, writing the files, and Dagster recording the
  materialisations (one event per asset and partition); ``compute_s`` is loading + computing +
  writing, ``bookkeeping_s`` the rest of the wall time.
- ``features_functions``: what the features stage does without Dagster, on the same stored days:
  read them with the IO manager's functions, ``batch_features``, write one file per asset and day.
- ``dagster_run_per_day``: the same job one day per run, for a few days, to show what a backfill
  of one run per partition would cost (extrapolated to all days).
- ``dagster_drift``: on the stored days, ``retrain_job`` makes a champion (XGBoost, trained on the
  first weeks), then ``drift_report`` over all days as ONE run (the UI backfill), timed per day.
- ``drift_functions``: the floor for it, ``predict_proba`` and ``drift_summary`` (HTML written) on
  a sample of the same days without Dagster.

- the scaled backfill (``--scale``, default 10: ``FRAUD_SIMULATOR_SCALE=10``, ~100,000
  transactions a day) of the same days on PostgreSQL, cut as the daily assets' backfill policy
  cuts it: one ``ingest_job`` run (both stages) per ``max_partitions_per_run`` days, each in a
  process of its own as the run launcher starts them.

Then one summary line per stage, SQLite and Postgres side by side, against its floor (drift:
seconds per day), and one for the scaled backfill. ``--no-drift`` skips the drift stage,
``--per-day-runs 0`` the runs per day, ``--scale 0`` the scaled backfill.

    uv run python benchmarks/pipeline.py --only-stage drift --root DIR   # DIR holds both stages
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
START = dt.date(2025, 1, 1)
FLOORS_S = {"transactions": 60, "features": 30}
STORAGES = ("sqlite", "postgres", "postgres_nullpool")
DRIFT_FLOOR_S_PER_DAY = 3.0
DRIFT_TRAINING_END = START + dt.timedelta(days=27)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def timed(seconds: dict, stage: str):
    t0 = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - t0


def functions(days: int, root: Path) -> dict:
    import polars as pl

    from fraud_dagster.core.features import FeatureSpec, batch_features
    from fraud_dagster.core.labels import delivered_reports
    from fraud_dagster.core.simulator import Simulator, SimulatorConfig
    from fraud_dagster.core.validation import split_transactions

    last = START + dt.timedelta(days=days - 1)
    seconds: dict[str, float] = {}
    with timed(seconds, "simulate"):
        simulator = Simulator(SimulatorConfig(drift_start=START + dt.timedelta(days=120)))
        raw = simulator.days(START, last).with_columns(
            partition_date=pl.col("tx_datetime").dt.date(),
            source=pl.lit("simulator"),
            parse_errors=pl.lit(None, dtype=pl.Utf8),
        )
    with timed(seconds, "validate"):
        validated = split_transactions(raw).validated
    with timed(seconds, "features"):
        batch_features(validated, START, last, FeatureSpec(), labels=delivered_reports(validated))
    with timed(seconds, "write_parquet"):
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


def features_functions(days: int, root: Path) -> dict:
    """The features stage's work without Dagster: the stored validated days of the
    ``dagster_stage`` transactions run in, one file per asset and day out, with the IO manager's
    own read, split and atomic write functions (and as many threads)."""
    import polars as pl
    from upath import UPath

    from fraud_dagster.core.features import FeatureSpec, batch_features
    from fraud_dagster.core.days import split_by_day
    from fraud_dagster.core.labels import delivered_reports
    from fraud_dagster.io_managers import (
        PolarsParquetIOManager,
        in_threads,
        read_parquet,
        write_parquet_atomically,
    )

    threads = PolarsParquetIOManager.model_fields["threads"].default
    stored = UPath(root / "data" / "assets" / "validated_transactions")
    out = UPath(root / "features_functions")
    last = START + dt.timedelta(days=days - 1)
    seconds: dict[str, float] = {}
    with timed(seconds, "read"):
        paths = [stored / f"{START + dt.timedelta(days=i)}.parquet" for i in range(days)]
        history = pl.concat(in_threads(read_parquet, paths, threads))
    with timed(seconds, "compute"):
        features, state = batch_features(history, START, last, FeatureSpec(),
                                         labels=delivered_reports(history))
    with timed(seconds, "write"):
        for name, frame, column in (
            ("transaction_features", features, "tx_datetime"),
            ("feature_state", state, "state_date"),
        ):
            parts = split_by_day(frame, column)
            in_threads(
                lambda item, name=name: write_parquet_atomically(
                    item[1], out / name / f"{item[0]}.parquet"
                ),
                parts.items(),
                threads,
            )
    wall = sum(seconds.values())
    return {
        "rows": features.height,
        "state_rows": state.height,
        "wall_s": round(wall, 2),
        "rows_per_s": round(features.height / wall),
        "split_s": {stage: round(s, 2) for stage, s in seconds.items()},
    }


STAGES = {
    "transactions": ("raw_transactions", "validated_transactions", "quarantined_transactions"),
    "features": ("transaction_features", "feature_state"),
}


def _event_split(instance, run_id: str, called_at: float, returned_at: float) -> dict:
    """Where a run's time went, from its event log's timestamps (seconds since the epoch).

    Creating the run records one planned event per asset and partition before the run starts:
    planned events = from the first of them to RUN_START (an event is stamped when it is made,
    and batched ones are stored after all are made, so only the run's start shows when they are
    stored). Dagster records an output's materialisations (one per partition) right after its
    IO manager's ``handle_output`` returns, so for each output: writing = from STEP_OUTPUT to
    its first ASSET_MATERIALIZATION, recording = from there to HANDLED_OUTPUT.
    """
    import dagster as dg

    kinds = dg.DagsterEventType
    entries = [r.event_log_entry for r in instance.get_records_for_run(run_id).records]
    events = [
        (e.timestamp, e.dagster_event_type, e.step_key) for e in entries if e.is_dagster_event
    ]
    run_start = next(t for t, kind, _ in events if kind == kinds.RUN_START)
    run_end = next(t for t, kind, _ in events if kind == kinds.RUN_SUCCESS)
    before = [t for t, _, _ in events if t < run_start] or [run_start]
    loading = {step for _, kind, step in events if kind == kinds.LOADED_INPUT}
    split = dict.fromkeys(
        ["create_run", "planned_events", "start_up", "load_inputs", "compute", "write",
         "record_materializations", "between_steps", "finish"],
        0.0,
    )
    split["create_run"] = before[0] - called_at
    split["planned_events"] = run_start - before[0]
    previous, phase = run_start, "start_up"
    for t, kind, step in events:
        if t < run_start:
            continue
        split[phase] += t - previous
        previous = t
        if kind == kinds.STEP_START:
            phase = "load_inputs" if step in loading else "compute"
        elif kind in (kinds.STEP_INPUT, kinds.HANDLED_OUTPUT):
            phase = "compute"
        elif kind == kinds.STEP_OUTPUT:
            phase = "write"
        elif kind == kinds.ASSET_MATERIALIZATION:
            phase = "record_materializations"
        elif kind == kinds.STEP_SUCCESS:
            phase = "between_steps"
    split["between_steps"] += returned_at - run_end
    counts: dict[str, int] = {}
    for _, kind, _ in events:
        counts[kind.value] = counts.get(kind.value, 0) + 1
    planned = counts.get(kinds.ASSET_MATERIALIZATION_PLANNED.value, 0)
    materializations = counts.get(kinds.ASSET_MATERIALIZATION.value, 0)
    return {
        "split_s": {phase: round(s, 2) for phase, s in split.items()},
        "events": {
            "total": len(events),
            "materialization_planned": planned,
            "materialization": materializations,
            "ms_per_planned_event": round(1000 * split["planned_events"] / max(planned, 1), 1),
            "ms_per_materialization": round(
                1000 * split["record_materializations"] / max(materializations, 1), 1
            ),
        },
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


def _rows(root: Path, asset: str) -> int:
    import polars as pl

    files = str(root / "data" / "assets" / asset / "*.parquet")
    return pl.scan_parquet(files).select(pl.len()).collect().item()


def _ingest_job(root: Path):
    os.environ["FRAUD_DATA_DIR"] = str(root / "data")
    from fraud_dagster.definitions import defs

    return defs.resolve_job_def("ingest_job")


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
STAGES["ingest"] = STAGES["transactions"] + STAGES["features"]
DATA_WORK = ("load_inputs", "compute", "write")
"""The phases of ``split_s`` that are the data work; the rest is Dagster's bookkeeping."""


@contextlib.contextmanager
def _instance(home: Path, storage: str):
    """SQLite under ``home`` (Dagster's test instance), or ``deploy/postgres/dagster.yaml`` with
    its files under ``home`` and the database of ``FRAUD_POSTGRES_URL`` (``postgres_nullpool``:
    its three storages replaced by dagster-postgres's ``storage: postgres`` block)."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    if storage == "sqlite":
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            yield instance
        return
    import yaml

    config = yaml.safe_load((REPO / "deploy" / "postgres" / "dagster.yaml").read_text()
                            .replace("base_dir: data/dagster", f"base_dir: {home}/data/dagster"))
    if storage == "postgres_nullpool":
        for kind in ("run_storage", "event_log_storage", "schedule_storage"):
            del config[kind]
        config["storage"] = {"postgres": {"postgres_url": {"env": "FRAUD_POSTGRES_URL"}}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _rows_of_days(root: Path, asset: str, first: dt.date, last: dt.date) -> int:
    import polars as pl

    folder = root / "data" / "assets" / asset
    files = [folder / f"{first + dt.timedelta(days=i)}.parquet"
             for i in range((last - first).days + 1)]
    return pl.scan_parquet(files).select(pl.len()).collect().item()


def dagster_stage(stage: str, days: int, root: Path, storage: str = "sqlite",
                  first: dt.date = START) -> dict:
    """One stage of ingest_job (``ingest``: both) over ``days`` days from ``first`` as one run,
    into the instance under ``root`` (the features stage reads what the transactions stage
    stored there)."""
    import dagster as dg

    from fraud_dagster.partitions import partition_range_tags

    job = _ingest_job(root)
    assets = STAGES[stage]
    last = first + dt.timedelta(days=days - 1)
    with _instance(root / "dagster", storage) as instance:
        called_at, t0 = time.time(), time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags=partition_range_tags(first, last),
            run_config=QUIET,
            asset_selection=[dg.AssetKey(a) for a in assets],
        )
        wall, returned_at = time.perf_counter() - t0, time.time()
        assert result.success
        steps = _step_seconds(instance, result.run_id)
        split = _event_split(instance, result.run_id, called_at, returned_at)
        materialized = {
            a: len(instance.get_materialized_partitions(dg.AssetKey(a))) for a in assets
        }
    rows = _rows_of_days(root, assets[0], first, last)
    compute = sum(split["split_s"][phase] for phase in DATA_WORK)
    return {
        "stage": stage,
        "storage": storage,
        "first": first.isoformat(),
        "wall_s": round(wall, 2),
        "compute_s": round(compute, 2),
        "bookkeeping_s": round(wall - compute, 2),
        "step_s": round(sum(steps.values()), 2),
        "rows": rows,
        "rows_per_s": round(rows / wall),
        "steps_s": {step: round(s, 2) for step, s in steps.items()},
        "partitions_materialized": materialized,
        **split,
    }


def dagster_run_per_day(days: int, root: Path) -> dict:
    """The transactions stage then the features stage, one run per day each."""
    import dagster as dg

    from fraud_dagster.partitions import partition_range_tags

    job = _ingest_job(root)
    home = root / "dagster"
    home.mkdir()
    out: dict = {"runs": 0, "stages": {}}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for stage in ("transactions", "features"):
            assets = STAGES[stage]
            t0 = time.perf_counter()
            steps: dict[str, float] = {}
            for i in range(days):
                day = START + dt.timedelta(days=i)
                result = job.execute_in_process(
                    instance=instance,
                    tags=partition_range_tags(day, day),
                    run_config=QUIET,
                    asset_selection=[dg.AssetKey(a) for a in assets],
                )
                assert result.success
                out["runs"] += 1
                for step, s in _step_seconds(instance, result.run_id).items():
                    steps[step] = steps.get(step, 0.0) + s
            wall = time.perf_counter() - t0
            rows = _rows(root, assets[0])
            out["stages"][stage] = {
                "wall_s": round(wall, 2),
                "rows": rows,
                "rows_per_s": round(rows / wall),
                "steps_s": {step: round(s, 2) for step, s in steps.items()},
            }
    return out


def _champion(root: Path) -> None:
    """A champion for the drift reports, trained on the first weeks of the stored days."""
    os.environ["FRAUD_DATA_DIR"] = str(root / "data")
    import dagster as dg

    from fraud_dagster.definitions import defs

    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        result = defs.resolve_job_def("retrain_job").execute_in_process(
            instance=instance,
            run_config={**QUIET, "ops": {"fraud_model": {"config": {
                "training_end": DRIFT_TRAINING_END.isoformat(), "models": ["xgboost"],
                "balancing": ["none"], "validation_folds": 2}}}},
        )
        assert result.success


def dagster_drift(days: int, root: Path) -> dict:
    """``drift_report`` for all days as one run, after ``retrain_job`` made a champion."""
    import dagster as dg

    from fraud_dagster.partitions import partition_range_tags

    t0 = time.perf_counter()
    _champion(root)
    champion_s = time.perf_counter() - t0
    from fraud_dagster.definitions import defs

    last = START + dt.timedelta(days=days - 1)
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        called_at, t0 = time.time(), time.perf_counter()
        result = defs.resolve_job_def("daily_job").execute_in_process(
            instance=instance,
            tags=partition_range_tags(START, last),
            run_config=QUIET,
            asset_selection=[dg.AssetKey("drift_report")],
        )
        wall, returned_at = time.perf_counter() - t0, time.time()
        assert result.success
        steps = _step_seconds(instance, result.run_id)
        split = _event_split(instance, result.run_id, called_at, returned_at)
        reported = len(instance.get_materialized_partitions(dg.AssetKey("drift_report")))
    return {
        "stage": "drift",
        "champion_s": round(champion_s, 2),
        "wall_s": round(wall, 2),
        "step_s": round(sum(steps.values()), 2),
        "days_reported": reported,
        "wall_s_per_day": round(wall / days, 2),
        **split,
    }


def drift_functions(days: int, root: Path, sample: int) -> dict:
    """The drift floor: a sample of the stored days, champion scores and ``drift_summary``
    (HTML written), without Dagster; the champion is the one ``dagster_drift`` made."""
    os.environ["FRAUD_DATA_DIR"] = str(root / "data")
    import dagster as dg

    from fraud_dagster.core.drift import DRIFT_COLUMNS, drift_summary
    from fraud_dagster.resources import DailyTables, default_resources

    resources = default_resources()
    models, tables = resources["model_registry"], DailyTables(base_path=str(root / "data" / "assets"))
    champion = models.champion()
    reference = models.reference(champion)
    step = max(days // sample, 1)
    chosen = [START + dt.timedelta(days=i) for i in range(0, days, step)][:sample]
    seconds = []
    for day in chosen:
        features = tables.read_days(dg.AssetKey("transaction_features"), [day])
        t0 = time.perf_counter()
        current = features.with_columns(score=champion.predict_proba(features))
        drift_summary(reference, current, DRIFT_COLUMNS, html_path=root / "html" / f"{day}.html")
        seconds.append(time.perf_counter() - t0)
    return {"days_sampled": len(chosen), "s_per_day": round(sum(seconds) / len(seconds), 2),
            "max_s_per_day": round(max(seconds), 2)}


def measure(scenario: str, days: int, root: Path | None, stage: str | None,
            storage: str = "sqlite", first: dt.date = START) -> dict:
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if scenario == "functions":
            result = functions(days, root)
        elif scenario == "features_functions":
            result = features_functions(days, root)
        elif scenario == "dagster_stage":
            result = dagster_stage(stage, days, root, storage, first)
        elif scenario == "dagster_drift":
            result = dagster_drift(days, root)
        elif scenario == "drift_functions":
            result = drift_functions(days, root, sample=10)
        else:
            result = dagster_run_per_day(days, root)
    return {
        "scenario": scenario,
        "days": days,
        **result,
        "peak_rss_mb": round(peak_rss_mb()),
    }


def _run(scenario: str, days: int, root: Path | None = None, stage: str | None = None,
         storage: str = "sqlite", first: dt.date = START, **env: str) -> dict:
    command = [sys.executable, __file__, "--scenario", scenario, "--days", str(days),
               "--storage", storage, "--first", first.isoformat()]
    command += ["--root", str(root)] if root else []
    command += ["--stage", stage] if stage else []
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if out.returncode:
        sys.exit(f"{scenario} {stage or ''} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--per-day-runs", type=int, default=3)
    parser.add_argument(
        "--scenario",
        choices=["functions", "dagster_stage", "features_functions", "dagster_run_per_day",
                 "dagster_drift", "drift_functions"],
    )
    parser.add_argument("--stage", choices=list(STAGES))
    parser.add_argument("--storage", choices=STORAGES, default="sqlite")
    parser.add_argument("--first", type=dt.date.fromisoformat, default=START)
    parser.add_argument("--no-drift", dest="drift", action="store_false",
                        help="skip the drift stage (6 of the 9 minutes)")
    parser.add_argument("--scale", type=int, default=10,
                        help="FRAUD_SIMULATOR_SCALE of the scaled backfill (0: none)")
    parser.add_argument("--root", type=Path, help="data and instance folder shared by stages")
    parser.add_argument("--postgres-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the benchmark's PostgreSQL server (repeatable), e.g."
                             " synchronous_commit=off")
    parser.add_argument(
        "--only-stage",
        choices=[*STAGES, "drift"],
        help="with --root holding the transactions stage already: run that stage alone",
    )
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(measure(args.scenario, args.days, args.root, args.stage, args.storage,
                                 args.first)))
        return
    if args.only_stage:
        if args.only_stage != "transactions" and not args.root:
            sys.exit(f"--only-stage {args.only_stage} needs --root with the stages before it")
        with contextlib.ExitStack() as stack:
            root = args.root or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            if args.only_stage == "drift":
                drift_summary_line(args.days, _run("dagster_drift", args.days, root),
                                   _run("drift_functions", args.days, root))
            else:
                _run("dagster_stage", args.days, root, args.only_stage)
        return

    from fraud_dagster.partitions import backfill_policy_for
    from fraud_dagster_tests.processes import PostgresServer, postgres_bin_dir

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL 15's initdb and pg_ctl are needed (Debian's postgresql-15)")
    server_settings = dict(setting.split("=", 1) for setting in args.postgres_setting)
    with (tempfile.TemporaryDirectory() as tmp,  # fsync on, as a server keeps it
          PostgresServer(bin_dir, settings=server_settings).running() as postgres):
        shared = Path(tmp) / "sqlite"
        functions_only = _run("functions", args.days)
        stages: dict[str, dict] = {}
        for storage in STORAGES:
            root = Path(tmp) / storage
            env = ({"FRAUD_POSTGRES_URL": postgres.create_database(f"bench_{storage}")}
                   if storage != "sqlite" else {})
            for stage in ("transactions", "features"):
                stages[f"{stage}_{storage}"] = _run("dagster_stage", args.days, root, stage,
                                                    storage, **env)
        features_only = _run("features_functions", args.days, shared)
        if args.drift:
            drift = _run("dagster_drift", args.days, shared)
            drift_floor = _run("drift_functions", args.days, shared)
        if args.scale > 1:
            scaled = scaled_backfill(args.days, args.scale, Path(tmp) / f"scale{args.scale}",
                                     postgres.create_database(f"bench_scale{args.scale}"),
                                     backfill_policy_for(args.scale).max_partitions_per_run)
    per_day = _run("dagster_run_per_day", args.per_day_runs)["stages"] if args.per_day_runs else None

    pure = functions_only["stages"]
    baselines = {
        "transactions": {
            "functions_s": round(pure["simulate"]["seconds"] + pure["validate"]["seconds"], 2),
        },
        "features": {
            "functions_s": pure["features"]["seconds"],
            "functions_with_io_s": features_only["wall_s"],
            "functions_with_io_split_s": features_only["split_s"],
            "functions_with_io_peak_rss_mb": features_only["peak_rss_mb"],
        },
    }
    for stage, floor in FLOORS_S.items():
        print(json.dumps({
            "summary": f"{stage}: single-run backfill, SQLite vs Postgres (pooled, as shipped),"
                       " vs baselines",
            "days": args.days,
            "rows": stages[f"{stage}_sqlite"]["rows"],
            **{storage: _figures(stages[f"{stage}_{storage}"]) for storage in STORAGES},
            **baselines[stage],
            **({"run_per_day_wall_s_extrapolated": round(
                per_day[stage]["wall_s"] / args.per_day_runs * args.days, 1)} if per_day else {}),
            "floor_wall_s": floor,
            "meets_floor": {storage: stages[f"{stage}_{storage}"]["wall_s"] < floor
                            for storage in STORAGES},
        }), flush=True)
    if args.drift:
        drift_summary_line(args.days, drift, drift_floor)
    if args.scale > 1:
        print(json.dumps(scaled), flush=True)


def _figures(run: dict) -> dict:
    return {**{key: run[key] for key in ("wall_s", "compute_s", "bookkeeping_s", "rows_per_s",
                                         "peak_rss_mb")},
            "bookkeeping_share": round(run["bookkeeping_s"] / run["wall_s"], 3)}


def scaled_backfill(days: int, scale: int, root: Path, postgres_url: str,
                    days_per_run: int) -> dict:
    """The daily assets' backfill at ``FRAUD_SIMULATOR_SCALE=scale`` on Postgres, cut as their
    backfill policy cuts it: one ingest_job run (both stages) per ``days_per_run`` days, each in
    a process of its own, as the run launcher starts them."""
    env = {"FRAUD_SIMULATOR_SCALE": str(scale), "FRAUD_POSTGRES_URL": postgres_url}
    runs = []
    for offset in range(0, days, days_per_run):
        n = min(days_per_run, days - offset)
        runs.append(_run("dagster_stage", n, root, "ingest", "postgres",
                         START + dt.timedelta(days=offset), **env))
    wall = sum(r["wall_s"] for r in runs)
    rows = sum(r["rows"] for r in runs)
    per_stage = {}
    for stage, assets in (("transactions", STAGES["transactions"]), ("features", STAGES["features"])):
        steps = [name for name in runs[0]["steps_s"] if name in assets or name.startswith(assets)]
        per_stage[stage] = round(sum(r["steps_s"].get(step, 0.0) for r in runs for step in steps), 1)
    compute = sum(r["compute_s"] for r in runs)
    return {
        "summary": f"scale {scale}: {days}-day backfill of the daily assets on Postgres,"
                   f" {len(runs)} runs of at most {days_per_run} days (BackfillPolicy.multi_run)",
        "rows": rows,
        "rows_per_day": round(rows / days),
        "wall_s": round(wall, 1),
        "compute_s": round(compute, 1),
        "bookkeeping_s": round(wall - compute, 1),
        "rows_per_s": round(rows / wall),
        "step_s_by_stage": per_stage,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "run_wall_s": [r["wall_s"] for r in runs],
    }


def drift_summary_line(days: int, drift: dict, floor: dict) -> None:
    print(json.dumps({
        "summary": "drift: drift_report single-run backfill vs the functions alone",
        "days": days,
        "single_run_wall_s": drift["wall_s"],
        "single_run_s_per_day": drift["wall_s_per_day"],
        "single_run_split_s": drift["split_s"],
        "functions_s_per_day": floor["s_per_day"],
        "functions_max_s_per_day": floor["max_s_per_day"],
        "floor_s_per_day": DRIFT_FLOOR_S_PER_DAY,
        "meets_floor": drift["wall_s_per_day"] < DRIFT_FLOOR_S_PER_DAY,
    }), flush=True)


if __name__ == "__main__":
    main()
