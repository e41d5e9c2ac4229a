"""Our model against the Fraud Detection Handbook's XGBoost, on the Handbook's protocol, in one run.

    uv run python benchmarks/handbook.py [--seeds 42,43,44] [--candidates ...] [--handbook-xgboost exact|hist]
        [--ceiling-only]

For each seed, on ``FRAUD_SIMULATOR=handbook`` data (``SimulatorConfig.handbook(seed)``: 5,000
customers, 10,000 terminals, its three scenarios, 2018-04-01 for 183 days, validated as ingestion
does):

- **the Handbook's protocol** (``fraud_dagster.core.handbook``): chapter 3's split, training
  2018-07-25..31, 7 delay days, test 2018-08-08..14 with each day's cards known compromised
  removed (``get_train_test_set``); card precision@100 per day with the cards detected on earlier
  test days removed, averaged over the 7 days (``card_precision_top_k``), average precision and
  ROC AUC on the same rows;
- **the Handbook's XGBoost**: its chapter 3 features (``handbook_features``), a ``StandardScaler``
  and ``XGBClassifier(random_state=0)``, with chapter 5's model selection: the 18 settings of its
  grid, each on its 4 prequential validation folds (training from 2018-07-11 back, each validation
  week without its known compromised cards), the best by validation average precision and, as
  chapter 5 reports each metric with its own best setting, the best by validation card
  precision@100; each refitted on the test split's training week. ``--handbook-xgboost exact``
  (default) runs it as the XGBoost 1.x the Handbook used did (exact greedy splits,
  ``base_score`` 0.5); ``hist`` with XGBoost 3's defaults (256-bin histograms, estimated
  ``base_score``);
- **ours**: ``fraud_dagster.core.training.train`` on our features
  (``fraud_dagster.core.features.batch_features``) with ``TrainingPlan(training_end=2018-07-31)``
  (the same training week, the same 4 validation weeks), validation weeks without their known
  compromised cards (``exclude_known_compromised``), the candidates of ``--candidates``; scored
  on exactly the Handbook test set's transactions;
- **the knowable ceiling** (``knowable_ceiling``): the best any model can expect when a known
  fraud label is its only view of a compromised terminal (``--ceiling-only``: this alone).

The test week chooses nothing. Prints JSON lines (``knowable_ceiling`` and ``data`` per seed,
``handbook_grid``, ``result`` per seed and model) and a table: each metric for both models, ours
relative to the Handbook's XGBoost (against its best-by-average-precision setting for average
precision and ROC AUC, against its best-by-card-precision setting for card precision@100), and
the ceiling.
"""

import argparse
import datetime as dt
import json
import time

import numpy as np
import polars as pl
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from fraud_dagster.core.features import FEATURE_COLUMNS, FeatureSpec, batch_features
from fraud_dagster.core.labels import delivered_reports
from fraud_dagster.core.handbook import (
    HANDBOOK_FEATURES,
    HANDBOOK_XGBOOST_GRID,
    HandbookSplit,
    handbook_features,
    prequential_splits,
    train_test_split,
    validation_split,
)
from fraud_dagster.core.metrics import average_precision, card_precision_at_k, roc_auc
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.core.training import (
    CandidateSettings,
    TrainingPlan,
    candidate_names,
    train,
)
from fraud_dagster.core.validation import split_transactions

START = dt.date(2018, 4, 1)
DAYS = 183
TEST_SPLIT = HandbookSplit(start_training=dt.date(2018, 7, 25))
FOLDS = 4
K = 100
PLAN = TrainingPlan(training_end=TEST_SPLIT.training_end, folds=FOLDS)
METRICS = ("average_precision", f"card_precision_at_{K}", "roc_auc")


def simulated(seed: int) -> pl.DataFrame:
    """The simulator's rows, with each fraud's scenario (``tx_fraud_scenario``)."""
    return Simulator(SimulatorConfig.handbook(seed)).days(START, START + dt.timedelta(days=DAYS - 1))


def validated_transactions(raw: pl.DataFrame) -> pl.DataFrame:
    return split_transactions(raw.with_columns(
        partition_date=pl.col("tx_datetime").dt.date(),
        source=pl.lit("simulator"),
        parse_errors=pl.lit(None, dtype=pl.Utf8),
    )).validated


def knowable_ceiling(test: pl.DataFrame, raw: pl.DataFrame, orderings: int = 20) -> dict:
    """What a model can reach at best when labels are its only view of a compromised terminal.

    A fraud at a compromised terminal (scenario 2) looks like any transaction there; only a fraud
    label from the terminal shows the compromise, and the Handbook's labels are known a week
    later. So a scenario 2 fraud is *knowable* when a fraud at its terminal is at least 7 x 24 h
    older (the Handbook's own terminal window); every scenario 1 and 3 fraud counts as knowable
    (generous: their amounts give them away, mostly). The ceiling ranks every knowable fraud
    first and the unknowable ones at random among the genuine transactions: average precision and
    card precision@K, each the mean over ``orderings`` random orderings (seeds 0..).
    """
    frauds = raw.filter(pl.col("tx_fraud") == 1).select("terminal_id",
                                                         pl.col("tx_datetime").alias("earlier"))
    with_scenario = test.join(raw.select("transaction_id", "terminal_id", "tx_fraud_scenario"),
                              on="transaction_id", maintain_order="left")
    seen = (with_scenario.filter(pl.col("tx_fraud_scenario") == 2).join(frauds, on="terminal_id")
            .filter(pl.col("earlier") <= pl.col("tx_datetime") - pl.duration(days=7))
            ["transaction_id"].unique())
    knowable = (with_scenario["tx_fraud_scenario"].is_in([1, 3])
                | with_scenario["transaction_id"].is_in(seen.implode())).to_numpy()
    y = test["tx_fraud"].to_numpy()
    results = []
    for ordering in range(orderings):
        scores = np.random.default_rng(ordering).uniform(0.0, 0.5, test.height)
        scores[knowable & (y == 1)] = 1.0
        results.append(test_metrics(test, scores))
    return {"frauds": int(y.sum()), "knowable_frauds": int((knowable & (y == 1)).sum()),
            **{m: float(np.mean([r[m] for r in results])) for m in METRICS[:2]}}


def handbook_frame(validated: pl.DataFrame) -> pl.DataFrame:
    keys = validated.select("transaction_id", "tx_datetime", "customer_id", "tx_fraud")
    return keys.join(handbook_features(validated), on="transaction_id", maintain_order="left")


def our_frame(validated: pl.DataFrame) -> pl.DataFrame:
    first, last = PLAN.labelled_window().first, PLAN.test_window().last
    # The Handbook's labels: every one known a week after its transaction.
    features, _ = batch_features(validated, first, last, FeatureSpec(),
                                 labels=delivered_reports(validated))
    return features.join(validated.select("transaction_id", "tx_fraud"), on="transaction_id")


def test_metrics(test: pl.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """The Handbook's ``performance_assessment`` on its test set (known cards already removed)."""
    scored = test.select("tx_datetime", "customer_id", "tx_fraud").with_columns(
        score=pl.Series(scores, dtype=pl.Float64))
    y = scored["tx_fraud"].to_numpy()
    return {
        "average_precision": average_precision(y, scores),
        f"card_precision_at_{K}": card_precision_at_k(scored, K),
        "roc_auc": roc_auc(y, scores),
    }


def handbook_xgboost(params: dict, flavour: str, n_jobs: int) -> Pipeline:
    version_settings = ({"tree_method": "exact", "base_score": 0.5} if flavour == "exact"
                        else {"tree_method": "hist"})
    return Pipeline([
        ("scaler", StandardScaler()),
        ("clf", XGBClassifier(**params, random_state=0, n_jobs=n_jobs, verbosity=0,
                              **version_settings)),
    ])


def _fit_score(params: dict, flavour: str, train_rows: pl.DataFrame, test_rows: pl.DataFrame,
               n_jobs: int) -> np.ndarray:
    x = train_rows.select(HANDBOOK_FEATURES).to_numpy()
    model = handbook_xgboost(params, flavour, n_jobs).fit(x, train_rows["tx_fraud"].to_numpy())
    return model.predict_proba(test_rows.select(HANDBOOK_FEATURES).to_numpy())[:, 1]


def run_handbook(frame: pl.DataFrame, flavour: str, n_jobs: int, seed: int) -> dict:
    """Chapter 5's prequential grid search, then the chosen settings on the chapter 3 split."""
    folds = [train_test_split(frame, split)
             for split in prequential_splits(validation_split(TEST_SPLIT), FOLDS)]
    table = []
    for params in HANDBOOK_XGBOOST_GRID:
        t0 = time.perf_counter()
        per_fold = [test_metrics(valid, _fit_score(params, flavour, train_rows, valid, n_jobs))
                    for train_rows, valid in folds]
        row = {"params": params, "seconds": round(time.perf_counter() - t0, 1)}
        row |= {m: float(np.mean([f[m] for f in per_fold])) for m in METRICS}
        table.append(row)
        print(json.dumps({"scenario": "handbook_grid", "seed": seed, "flavour": flavour,
                          **{k: round(v, 4) if isinstance(v, float) else v
                             for k, v in row.items()}}), flush=True)
    train_rows, test = train_test_split(frame, TEST_SPLIT)
    chosen = {}
    for metric in ("average_precision", f"card_precision_at_{K}"):
        best = max(table, key=lambda row: row[metric])
        chosen[metric] = {"params": best["params"], "validation": round(best[metric], 4),
                          "test": test_metrics(test, _fit_score(best["params"], flavour,
                                                                train_rows, test, n_jobs))}
    perfect = test_metrics(test, test["tx_fraud"].cast(pl.Float64).to_numpy())
    return {"chosen": chosen, "test_transactions": test.height, "test_frauds": int(test["tx_fraud"].sum()),
            f"card_precision_at_{K}_of_a_perfect_ranking": perfect[f"card_precision_at_{K}"],
            "test_ids": test["transaction_id"]}


def run_ours(frame: pl.DataFrame, test_ids: pl.Series, candidates: list[str],
             settings: CandidateSettings) -> dict:
    t0 = time.perf_counter()
    model = train(frame, PLAN, candidates, settings=settings, exclude_known_compromised=True)
    seconds = time.perf_counter() - t0
    test = frame.filter(pl.col("transaction_id").is_in(test_ids.implode()))
    if test.height != test_ids.len():
        raise RuntimeError(f"{test.height} of the Handbook's {test_ids.len()} test rows have features")
    return {
        "candidate": model.candidate,
        "validation_average_precision": round(model.validation_average_precision, 4),
        "selection": model.selection.select("candidate", "mean_average_precision").to_dicts(),
        "training_seconds": round(seconds, 1),
        "test": test_metrics(test, model.predict_proba(test)),
    }


def _relative(ours: float, theirs: float) -> float:
    return ours / theirs - 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="42", help="simulator seeds, comma-separated")
    parser.add_argument("--candidates", default=",".join(candidate_names()))
    parser.add_argument("--handbook-xgboost", choices=("exact", "hist"), default="exact")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--ceiling-only", action="store_true",
                        help="print only each seed's knowable ceiling (seconds, no training)")
    args = parser.parse_args()
    settings = CandidateSettings(n_jobs=args.n_jobs)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        raw = simulated(seed)
        validated = validated_transactions(raw)
        hb = handbook_frame(validated)
        ceiling = knowable_ceiling(train_test_split(hb, TEST_SPLIT)[1], raw)
        print(json.dumps({"scenario": "knowable_ceiling", "seed": seed,
                          **{k: round(v, 4) for k, v in ceiling.items()}}), flush=True)
        if args.ceiling_only:
            continue
        ours = our_frame(validated)
        print(json.dumps({"scenario": "data", "seed": seed, "transactions": validated.height,
                          "frauds": int(validated["tx_fraud"].sum()),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        handbook = run_handbook(hb, args.handbook_xgboost, args.n_jobs, seed)
        test_ids = handbook.pop("test_ids")
        print(json.dumps({"scenario": "result", "seed": seed, "model": "handbook_xgboost",
                          "flavour": args.handbook_xgboost, **handbook}), flush=True)
        result = run_ours(ours, test_ids, args.candidates.split(","), settings)
        print(json.dumps({"scenario": "result", "seed": seed, "model": "ours", **result}),
              flush=True)
        by_ap = handbook["chosen"]["average_precision"]["test"]
        by_cp = handbook["chosen"][f"card_precision_at_{K}"]["test"]
        theirs = {"average_precision": by_ap["average_precision"], "roc_auc": by_ap["roc_auc"],
                  f"card_precision_at_{K}": by_cp[f"card_precision_at_{K}"]}
        rows.append({"seed": seed, "ours": result["test"], "theirs": theirs,
                     "ceiling": ceiling, "candidate": result["candidate"]})
    if not rows:
        return
    print(f"\nHandbook protocol (chapter 3 split, test {TEST_SPLIT.test_days_list()[0]}.."
          f"{TEST_SPLIT.test_days_list()[-1]}, known compromised cards removed, CP@{K} per day"
          f" averaged); Handbook XGBoost: {args.handbook_xgboost}; ours: {len(FEATURE_COLUMNS)}"
          f" features vs the Handbook's {len(HANDBOOK_FEATURES)}")
    print(f"{'seed':>6} {'metric':<22} {'handbook':>9} {'ours':>9} {'relative':>9}"
          f" {'ceiling':>9}  ours")
    for row in rows:
        for metric in METRICS:
            ours_v, theirs_v = row["ours"][metric], row["theirs"][metric]
            ceiling = f"{row['ceiling'][metric]:9.4f}" if metric in row["ceiling"] else f"{'-':>9}"
            print(f"{row['seed']:>6} {metric:<22} {theirs_v:9.4f} {ours_v:9.4f}"
                  f" {_relative(ours_v, theirs_v):+9.1%} {ceiling}  {row['candidate']}")
    if len(rows) > 1:
        for metric in METRICS:
            gains = [_relative(r["ours"][metric], r["theirs"][metric]) for r in rows]
            means = [np.mean([r[who][metric] for r in rows]) for who in ("theirs", "ours")]
            print(f"{'mean':>6} {metric:<22} {means[0]:9.4f} {means[1]:9.4f}"
                  f" {np.mean(gains):+9.1%}  (relative min {min(gains):+.1%}, max {max(gains):+.1%})")


if __name__ == "__main__":
    main()
