"""``fraud-dagster``: run the pipeline end to end from a shell, recorded in the Dagster instance.

    fraud-dagster run --start 2025-01-01 --end 2025-06-30

materialises every daily asset for the days as one run of ``ingest_job`` (what a single-run backfill
in the UI does), then trains, evaluates and (if it wins) promotes a model with one run of
``retrain_job``, into the instance at ``DAGSTER_HOME`` (default: the current folder, whose
``dagster.yaml`` keeps everything under ``data/``). ``dagster dev`` shows the runs afterwards.
"""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from fraud_dagster import settings

INFO_LOGS = {"console": {"config": {"log_level": "INFO"}}}
"""The console logger at INFO: the model search's progress without Dagster's DEBUG events."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraud-dagster", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="ingest a range of days, then train and evaluate")
    run.add_argument("--start", type=dt.date.fromisoformat, default=None,
                     help="first day (default: FRAUD_START_DATE)")
    run.add_argument("--end", type=dt.date.fromisoformat, required=True, help="last day, inclusive")
    run.add_argument("--no-train", dest="train", action="store_false",
                     help="only ingest (raw, validated, features)")
    run.add_argument("--as-of", default=None,
                     help="fraud_model's as_of (ISO date; default: the newest day ingested):"
                     " it tests on the newest window whose labels have matured by then.")
    return parser


def _instance():
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        if not Path("dagster.yaml").exists():
            sys.exit("Set DAGSTER_HOME, or run from the project folder (which has dagster.yaml).")
        os.environ["DAGSTER_HOME"] = str(Path.cwd())
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def run_pipeline(start: dt.date, end: dt.date, train: bool, as_of: str | None) -> bool:
    import dagster as dg

    from fraud_dagster.assets.model import FraudModelConfig
    from fraud_dagster.definitions import defs
    from fraud_dagster.partitions import partition_range_tags

    with _instance() as instance:
        ingest = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=instance,
            tags={**partition_range_tags(start, end), "fraud/trigger": "cli"},
            run_config=dg.RunConfig(loggers=INFO_LOGS),
            raise_on_error=False,
        )
        print(f"ingest_job {start}..{end}: {'succeeded' if ingest.success else 'FAILED'}"
              f" (run {ingest.run_id})")
        if not ingest.success or not train:
            return ingest.success
        ops = {"fraud_model": FraudModelConfig(as_of=as_of)} if as_of else {}
        retrain = defs.resolve_job_def("retrain_job").execute_in_process(
            instance=instance,
            tags={"fraud/trigger": "cli"},
            run_config=dg.RunConfig(ops=ops, loggers=INFO_LOGS),
            raise_on_error=False,
        )
        print(f"retrain_job: {'succeeded' if retrain.success else 'FAILED'} (run {retrain.run_id})")
        for materialization in retrain.asset_materializations_for_node("fraud_model"):
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            print(f"fraud_model: {metadata['candidate']} won the model search (mean validation"
                  f" average precision {metadata['validation_average_precision']:.3f}), trained on"
                  f" {metadata['train_window']}, registered as v{metadata['registered_version']}")
        for materialization in retrain.asset_materializations_for_node("model_evaluation"):
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            print(f"model_evaluation on {metadata['test_window']}:"
                  f" average precision {metadata['average_precision']:.3f},"
                  f" card precision@100 {metadata['card_precision_at_100']:.3f},"
                  f" ROC AUC {metadata['roc_auc']:.3f};"
                  f" {'promoted' if metadata['promoted'] else 'not promoted'}: {metadata['reason']}")
        # A challenger that loses is a successful run (its WARN check says why).
        return retrain.success


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        ok = run_pipeline(args.start or settings.start_date(), args.end, args.train, args.as_of)
        return 0 if ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
