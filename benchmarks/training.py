"""Training benchmark on the Fraud Detection Handbook's setting, with the pure functions (no Dagster).

    uv run python benchmarks/training.py [--candidates xgboost+none,...] [--xgb-grid]

Simulates the Handbook's data (5,000 customers, 10,000 terminals, its three scenarios, 2018-04-01
for 183 days), builds the features, then follows its protocol (7 train / 7 delay / 7 test days,
training ends 2018-07-31, 4 validation folds). Prints JSON lines:

- ``selection``: every candidate's validation average precision and fit time (the model selection
  the ``fraud_model`` asset does), the winner's test metrics, training rows/s and peak memory;
- with ``--xgb-grid``: XGBoost's settings that are not neutral on this data (histogram bins,
  ``base_score``, depth, trees), each on the validation folds, against XGBoost's defaults as the
  baseline in the same run. The test window is never used to choose.
"""

import argparse
import dataclasses
import datetime as dt
import json
import resource
import time

import polars as pl

from fraud_dagster.core.features import FEATURE_COLUMNS, FeatureSpec, batch_features
from fraud_dagster.core.metrics import ThresholdObjective, evaluation_metrics
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.core.training import (
    CandidateSettings,
    TrainingPlan,
    candidate_names,
    select_candidate,
    train,
)
from fraud_dagster.core.validation import split_transactions

START = dt.date(2018, 4, 1)
DAYS = 183
HANDBOOK_PLAN = TrainingPlan(training_end=dt.date(2018, 7, 31))
HANDBOOK = {"average_precision": 0.687, "card_precision_at_100": 0.302}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def handbook_features(seed: int = 42) -> pl.DataFrame:
    last = START + dt.timedelta(days=DAYS - 1)
    raw = Simulator(SimulatorConfig.handbook(seed)).days(START, last).with_columns(
        partition_date=pl.col("tx_datetime").dt.date(),
        source=pl.lit("simulator"),
        parse_errors=pl.lit(None, dtype=pl.Utf8),
    )
    validated = split_transactions(raw).validated
    first = HANDBOOK_PLAN.labelled_window().first
    features, _ = batch_features(validated, first, HANDBOOK_PLAN.test_window().last, FeatureSpec())
    return features.join(validated.select("transaction_id", "tx_fraud"), on="transaction_id")


def scored(model, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(score=pl.Series(model.predict_proba(frame)))


def run_selection(labelled: pl.DataFrame, candidates: list[str], settings: CandidateSettings) -> dict:
    t0 = time.perf_counter()
    model = train(labelled, HANDBOOK_PLAN, candidates, ThresholdObjective(), settings)
    seconds = time.perf_counter() - t0
    test = labelled.filter(pl.col("tx_datetime").dt.date().is_between(
        HANDBOOK_PLAN.test_window().first, HANDBOOK_PLAN.test_window().last))
    metrics = evaluation_metrics(scored(model, test), model.threshold)
    fits = len(candidates) * HANDBOOK_PLAN.folds + 1
    return {
        "scenario": "selection",
        "candidates": model.selection.select(
            "candidate", "mean_average_precision", "std_average_precision", "fit_seconds"
        ).to_dicts(),
        "chosen": model.candidate,
        "threshold": model.threshold,
        "test": {k: round(v, 4) for k, v in metrics.items()},
        "handbook_best_xgboost": HANDBOOK,
        "training_seconds": round(seconds, 1),
        "fits": fits,
        "training_rows": model.training_rows,
        "rows_per_s_per_fit": round(model.training_rows * fits / seconds),
        "peak_rss_mb": round(peak_rss_mb()),
    }


XGB_DEFAULTS = dict(xgb_learning_rate=0.3, xgb_max_depth=6, xgb_max_bin=256, xgb_base_score=None)
# Our settings, then each with one setting put back to XGBoost's default (or pushed further).
XGB_GRID = {
    "xgboost_defaults": XGB_DEFAULTS,
    "ours": {},
    "ours_but_base_score_estimated": dict(xgb_base_score=None),
    "ours_but_max_bin_256": dict(xgb_max_bin=256),
    "ours_but_max_bin_4096": dict(xgb_max_bin=4096),
    "ours_but_max_depth_6": dict(xgb_max_depth=6),
    "ours_but_learning_rate_0.3": dict(xgb_learning_rate=0.3),
}


def run_xgb_grid(labelled: pl.DataFrame) -> None:
    for name, overrides in XGB_GRID.items():
        settings = dataclasses.replace(CandidateSettings(), **overrides)
        table, _ = select_candidate(labelled, HANDBOOK_PLAN, ["xgboost+none"], settings)
        row = table.row(0, named=True)
        print(json.dumps({
            "scenario": "xgb_grid", "setting": name,
            "validation_average_precision": round(row["mean_average_precision"], 4),
            "std": round(row["std_average_precision"], 4),
            "fit_seconds": round(row["fit_seconds"], 1),
            "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k.startswith("xgb")},
        }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", default=",".join(candidate_names()))
    parser.add_argument("--xgb-grid", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    labelled = handbook_features()
    print(json.dumps({"scenario": "data", "rows": labelled.height, "features": len(FEATURE_COLUMNS),
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    if args.xgb_grid:
        run_xgb_grid(labelled)
    print(json.dumps(run_selection(labelled, args.candidates.split(","), CandidateSettings())))


if __name__ == "__main__":
    main()
