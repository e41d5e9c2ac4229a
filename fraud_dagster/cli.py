"""``fraud-dagster``: run the pipeline end to end from a shell, recorded in the Dagster instance.

    fraud-dagster run --start 2025-01-01 --end 2025-03-31

materialises every daily asset for the days as one run (what a single-run backfill in the UI does)
into the instance at ``DAGSTER_HOME`` (default: the current folder, whose ``dagster.yaml`` keeps
everything under ``data/``), so ``dagster dev`` shows the run and its materialisations afterwards.
"""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from fraud_dagster import settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraud-dagster", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialise the daily assets for a range of days")
    run.add_argument("--start", type=dt.date.fromisoformat, default=None,
                     help="first day (default: FRAUD_START_DATE)")
    run.add_argument("--end", type=dt.date.fromisoformat, required=True, help="last day, inclusive")
    return parser


def run_pipeline(start: dt.date, end: dt.date) -> bool:
    import dagster as dg

    from fraud_dagster.definitions import defs
    from fraud_dagster.partitions import partition_range_tags

    if not os.environ.get("DAGSTER_HOME"):
        if not Path("dagster.yaml").exists():
            sys.exit("Set DAGSTER_HOME, or run from the project folder (which has dagster.yaml).")
        os.environ["DAGSTER_HOME"] = str(Path.cwd())
    tags = {**partition_range_tags(start, end), "fraud/trigger": "cli"}
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=instance,
            tags=tags,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
    print(f"ingest_job {start}..{end}: {'succeeded' if result.success else 'FAILED'} (run {result.run_id})")
    return result.success


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return 0 if run_pipeline(args.start or settings.start_date(), args.end) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
