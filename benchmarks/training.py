"""Training benchmark on the Fraud Detection Handbook's setting, with the pure functions (no Dagster).

    uv run python benchmarks/training.py [--candidates xgboost+none,...] [--xgb-grid] [--ablation]

Simulates the Handbook's data (5,000 customers, 10,000 terminals, its three scenarios, 2018-04-01
for 183 days), builds the features, then follows its protocol (7 train / 7 delay / 7 test days,
training ends 2018-07-31, 4 validation folds). Prints JSON lines:

- ``selection``: every candidate's validation average precision and fit time (the model selection
  the ``fraud_model`` asset does), the winner's test metrics, training rows/s and peak memory;
- with ``--xgb-grid``: XGBoost's settings that are not neutral on this data (histogram bins,
  ``base_score``, depth, trees), each on the validation folds, against XGBoost's defaults as the
  baseline in the same run. The test window is never used to choose.
- with ``--ablation`` (instead of the selection): what the *same-day* features are worth. On two
  datasets, the Handbook's setting (``SimulatorConfig.handbook()``) and ours (``SimulatorConfig()``
  with its five scenarios, card testing included, and drift from 120 days after the start, as the
  project's settings have it), each simulated with seeds 42, 43 and 44 over the same 183 days and
  read through the same ``TrainingPlan``, ``xgboost+none`` with the project's settings is fitted
  on the plan's training window (no model selection: the one candidate, fitted as ``train``
  refits the winner) twice on the same rows: with all ``FEATURE_COLUMNS``, and without the
  ``SAME_DAY_COLUMNS``. "Without" drops exactly eight columns: ``VELOCITY_COLUMNS``
  (``customer_amount_1d``, ``customer_nb_tx_1h``, ``customer_amount_1h``,
  ``customer_nb_terminals_24h``, ``customer_seconds_since_previous``) and the since-midnight
  windows ``customer_nb_tx_1d``, ``customer_mean_amount_1d``, ``customer_std_amount_1d``. It does
  not recompute anything: the 7- and 30-day customer windows (and ``amount_to_customer_mean_30d``,
  ``amount_zscore_30d``, made from the 30-day one) still include the day's earlier transactions
  in both arms, so this measures the features that exist only because windows end at the
  transaction, not windows ending at the transaction as such. Lines ``ablation`` (per dataset,
  seed and arm: the test window's average precision and card precision@100) and
  ``ablation_summary`` (per dataset and arm: mean, min and max over the seeds, and the paired
  difference with - without).
"""

import argparse
import dataclasses
import datetime as dt
import json
import resource
import time

import polars as pl

from fraud_dagster.core.labels import delivered_reports
from fraud_dagster.core.features import (
    FEATURE_COLUMNS,
    VELOCITY_COLUMNS,
    FeatureSpec,
    batch_features,
    feature_matrix,
)
from fraud_dagster.core.metrics import (
    ThresholdObjective,
    average_precision,
    card_precision_at_k,
    evaluation_metrics,
)
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.core.training import (
    CandidateSettings,
    TrainingPlan,
    Window,
    candidate_names,
    make_pipeline,
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


def simulated_features(config: SimulatorConfig = SimulatorConfig.handbook()) -> pl.DataFrame:
    """Features and labels on ``HANDBOOK_PLAN``'s days of ``config`` simulated from START on."""
    last = START + dt.timedelta(days=DAYS - 1)
    raw = Simulator(config).days(START, last).with_columns(
        partition_date=pl.col("tx_datetime").dt.date(),
        source=pl.lit("simulator"),
        parse_errors=pl.lit(None, dtype=pl.Utf8),
    )
    validated = split_transactions(raw).validated
    first = HANDBOOK_PLAN.labelled_window().first
    features, _ = batch_features(validated, first, HANDBOOK_PLAN.test_window().last, FeatureSpec(),
                                 labels=delivered_reports(validated))
    return features.join(validated.select("transaction_id", "tx_fraud"), on="transaction_id")


def scored(model, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(score=pl.Series(model.predict_proba(frame)))


def rows_in(frame: pl.DataFrame, window: Window) -> pl.DataFrame:
    return frame.filter(pl.col("tx_datetime").dt.date().is_between(window.first, window.last))


def run_selection(labelled: pl.DataFrame, candidates: list[str], settings: CandidateSettings) -> dict:
    t0 = time.perf_counter()
    model = train(labelled, HANDBOOK_PLAN, candidates, ThresholdObjective(), settings)
    seconds = time.perf_counter() - t0
    test = rows_in(labelled, HANDBOOK_PLAN.test_window())
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


SAME_DAY_COLUMNS = (*VELOCITY_COLUMNS, "customer_nb_tx_1d", "customer_mean_amount_1d",
                    "customer_std_amount_1d")
"""The features that only exist because customer windows end at the transaction."""
ABLATION_ARMS = {
    "with": FEATURE_COLUMNS,
    "without": tuple(c for c in FEATURE_COLUMNS if c not in SAME_DAY_COLUMNS),
}
ABLATION_DATASETS = {
    "handbook": SimulatorConfig.handbook,
    "fraud_dagster": lambda seed: SimulatorConfig(seed=seed,
                                                  drift_start=START + dt.timedelta(days=120)),
}
ABLATION_SEEDS = (42, 43, 44)
ABLATION_CANDIDATE = "xgboost+none"


def ablation_arm(labelled: pl.DataFrame, columns: tuple[str, ...], settings: CandidateSettings
                 ) -> dict:
    """``ABLATION_CANDIDATE`` fitted on the plan's training window on ``columns``, as ``train``
    refits its winner; the test window's threshold-free metrics."""
    training = rows_in(labelled, HANDBOOK_PLAN.train_window())
    y = training["tx_fraud"].to_numpy()
    x = feature_matrix(training, columns)
    t0 = time.perf_counter()
    pipeline = make_pipeline(ABLATION_CANDIDATE, settings, y).fit(x, y)
    seconds = time.perf_counter() - t0
    test = rows_in(labelled, HANDBOOK_PLAN.test_window())
    test = test.with_columns(
        score=pl.Series(pipeline.predict_proba(feature_matrix(test, columns))[:, 1]))
    return {
        "average_precision": average_precision(test["tx_fraud"], test["score"]),
        "card_precision_at_100": card_precision_at_k(test, 100),
        "fit_seconds": round(seconds, 1),
        "training_rows": training.height,
        "training_frauds": int(y.sum()),
        "test_frauds": int(test["tx_fraud"].sum()),
    }


def _spread(values: list[float]) -> dict:
    stats = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return {k: round(v, 4) + 0.0 for k, v in stats.items()}  # + 0.0: no -0.0


def run_ablation(settings: CandidateSettings) -> None:
    metrics = ("average_precision", "card_precision_at_100")
    for dataset, config in ABLATION_DATASETS.items():
        results = {arm: [] for arm in ABLATION_ARMS}
        for seed in ABLATION_SEEDS:
            t0 = time.perf_counter()
            labelled = simulated_features(config(seed))
            print(json.dumps({"scenario": "ablation_data", "dataset": dataset, "seed": seed,
                              "rows": labelled.height, "frauds": int(labelled["tx_fraud"].sum()),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
            for arm, columns in ABLATION_ARMS.items():
                result = ablation_arm(labelled, columns, settings)
                results[arm].append(result)
                print(json.dumps({
                    "scenario": "ablation", "dataset": dataset, "seed": seed, "arm": arm,
                    "features": len(columns), "candidate": ABLATION_CANDIDATE,
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
                }), flush=True)
            del labelled
        for arm, rows in results.items():
            print(json.dumps({
                "scenario": "ablation_summary", "dataset": dataset, "arm": arm,
                "seeds": list(ABLATION_SEEDS), "features": len(ABLATION_ARMS[arm]),
                **{m: _spread([r[m] for r in rows]) for m in metrics},
            }), flush=True)
        print(json.dumps({
            "scenario": "ablation_summary", "dataset": dataset, "arm": "with - without",
            "seeds": list(ABLATION_SEEDS), "removed": list(SAME_DAY_COLUMNS),
            **{m: _spread([w[m] - wo[m] for w, wo in zip(results["with"], results["without"])])
               for m in metrics},
        }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", default=",".join(candidate_names()))
    parser.add_argument("--xgb-grid", action="store_true")
    parser.add_argument("--ablation", action="store_true",
                        help="same-day features ablation (2 datasets x 3 seeds), no selection")
    args = parser.parse_args()
    if args.ablation and args.xgb_grid:
        parser.error("--ablation and --xgb-grid are separate runs")
    t0 = time.perf_counter()
    if args.ablation:
        run_ablation(CandidateSettings())
        print(json.dumps({"scenario": "ablation_done", "peak_rss_mb": round(peak_rss_mb()),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        return
    labelled = simulated_features()
    print(json.dumps({"scenario": "data", "rows": labelled.height, "features": len(FEATURE_COLUMNS),
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    if args.xgb_grid:
        run_xgb_grid(labelled)
    print(json.dumps(run_selection(labelled, args.candidates.split(","), CandidateSettings())))


if __name__ == "__main__":
    main()
