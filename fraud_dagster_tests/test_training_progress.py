"""The model search says what it is doing: every fold of every candidate, then the winner."""

import datetime as dt

import numpy as np
import polars as pl

from fraud_dagster.core.features import FEATURE_COLUMNS
from fraud_dagster.core.training import TrainingPlan, train


def _labelled(first: dt.date, days: int, rows: int = 150) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = days * rows
    fraud = (np.arange(n) % 10 == 0).astype(np.int64)
    start = dt.datetime.combine(first, dt.time())
    frame = {
        "transaction_id": np.arange(n),
        "tx_datetime": [start + dt.timedelta(days=int(i // rows), seconds=int(i % rows))
                        for i in range(n)],
        "customer_id": np.arange(n) % 97,
        "tx_fraud": fraud,
    }
    for k, column in enumerate(FEATURE_COLUMNS):
        frame[column] = rng.normal(size=n) + (fraud * 2.0 if k < 3 else 0.0)
    return pl.DataFrame(frame)


def test_the_search_reports_each_fold_of_each_candidate_and_the_winner():
    plan = TrainingPlan(dt.date(2025, 1, 10), train_days=2, delay_days=1, test_days=1, folds=2)
    window = plan.labelled_window()
    labelled = _labelled(window.first, (window.last - window.first).days + 1)
    heard: list[str] = []
    candidates = ["logistic_regression+none", "xgboost+none"]
    trained = train(labelled, plan, candidates=candidates, progress=heard.append)

    folds = [m for m in heard if ": fold " in m]
    assert len(folds) == len(candidates) * plan.folds
    assert folds[0].startswith("candidate 1/2 logistic_regression+none: fold 1/2 average precision")
    assert folds[-1].startswith("candidate 2/2 xgboost+none: fold 2/2 average precision")
    means = [m for m in heard if "mean average precision" in m and m.startswith("candidate")]
    assert len(means) == len(candidates)
    assert heard[-1].startswith(f"selected {trained.candidate} (mean validation average precision")
    # In order: a candidate's folds, then its mean, before the next candidate starts.
    assert heard.index(means[0]) < heard.index(folds[plan.folds])


def test_no_progress_callback_is_fine():
    plan = TrainingPlan(dt.date(2025, 1, 10), train_days=2, delay_days=1, test_days=1, folds=2)
    window = plan.labelled_window()
    labelled = _labelled(window.first, (window.last - window.first).days + 1)
    assert train(labelled, plan, candidates=["logistic_regression+none"]).candidate == (
        "logistic_regression+none")
