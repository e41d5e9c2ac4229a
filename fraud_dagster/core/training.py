"""Training a fraud classifier on a window of days: candidates, prequential selection, threshold.

The protocol is the Fraud Detection Handbook's: a model trained on ``train_days`` days is only
judged on days that start ``delay_days`` after its training window ends, because the labels of the
days just before "now" are not known yet. Candidates (a classifier and a way to handle the class
imbalance) are compared on validation folds that slide back in time from the training window, by
average precision; the winner is refitted on the training window and its decision threshold is
chosen on the pooled validation scores. Nothing here knows about Dagster or MLflow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fraud_dagster.core.features import FEATURE_COLUMNS, feature_matrix
from fraud_dagster.core.labels import LABEL_MATURITY_DAYS
from fraud_dagster.core.metrics import (
    ThresholdObjective,
    average_precision,
    choose_threshold,
    known_compromised_cards,
    without_known_compromised,
)

if TYPE_CHECKING:
    from imblearn.pipeline import Pipeline

MODELS = ("logistic_regression", "random_forest", "xgboost")
BALANCING = ("none", "smote", "undersample", "class_weight")
LABEL = "tx_fraud"


@dataclasses.dataclass(frozen=True)
class Window:
    first: dt.date
    last: dt.date

    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def __str__(self) -> str:
        return f"{self.first}..{self.last}"


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """Which days train, validate and test a model that is trained up to ``training_end``.

    Test: train on ``training_end - train_days + 1 .. training_end``, skip ``delay_days``, test on
    the next ``test_days``. Validation fold k (k = 0 is the most recent) is the same shape, moved back
    so that its validation days end on ``training_end`` minus ``k * test_days``: every validation
    label is known when the model is trained.
    """

    training_end: dt.date
    train_days: int = 7
    delay_days: int = LABEL_MATURITY_DAYS
    test_days: int = 7
    folds: int = 4

    def __post_init__(self):
        for name in ("train_days", "test_days", "folds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.delay_days < 0:
            raise ValueError(f"delay_days must be at least 0, not {self.delay_days}")

    def _train_ending(self, end: dt.date) -> Window:
        return Window(end - dt.timedelta(days=self.train_days - 1), end)

    def _evaluated_after(self, end: dt.date) -> Window:
        first = end + dt.timedelta(days=self.delay_days + 1)
        return Window(first, first + dt.timedelta(days=self.test_days - 1))

    @classmethod
    def mature_at(cls, as_of: dt.date, train_days: int = 7, test_days: int = 7, folds: int = 4,
                  maturity_days: int = LABEL_MATURITY_DAYS) -> "TrainingPlan":
        """The newest plan whose test labels have all matured by the end of ``as_of``: the test
        window ends ``maturity_days`` before it, the training window ``maturity_days`` before
        the test window starts (what was known when the test period began)."""
        end = as_of - dt.timedelta(days=2 * maturity_days + test_days)
        return cls(end, train_days, maturity_days, test_days, folds)

    def training_labels_as_of(self) -> dt.date:
        """The day whose end the training and validation labels are known as of: the eve of
        the test window, as if the model were trained then."""
        return self.training_end + dt.timedelta(days=self.delay_days)

    def as_of(self) -> dt.date:
        """The day whose end the test labels are known as of: the test window has matured."""
        return self.test_window().last + dt.timedelta(days=self.delay_days)

    def train_window(self) -> Window:
        return self._train_ending(self.training_end)

    def test_window(self) -> Window:
        return self._evaluated_after(self.training_end)

    def validation_folds(self) -> list[tuple[Window, Window]]:
        folds = []
        for k in range(self.folds):
            end = self.training_end - dt.timedelta(days=self.delay_days + (k + 1) * self.test_days)
            folds.append((self._train_ending(end), self._evaluated_after(end)))
        return folds

    def labelled_window(self) -> Window:
        """Every day whose features and labels training (not testing) reads."""
        return Window(self.validation_folds()[-1][0].first, self.training_end)


@dataclasses.dataclass(frozen=True)
class CandidateSettings:
    """Hyper-parameters shared by the candidates. XGBoost's are not its defaults; see README."""

    seed: int = 42
    resampled_fraud_ratio: float = 0.1
    """SMOTE and undersampling bring frauds to this share of the genuine transactions."""
    forest_trees: int = 100
    forest_max_depth: int = 20
    xgb_trees: int = 100
    xgb_max_depth: int = 4
    xgb_learning_rate: float = 0.1
    xgb_max_bin: int = 1024
    """Amounts and hours need finer histograms than the default 256 bins."""
    xgb_base_score: float | None = 0.5
    """XGBoost 3 estimates it from the labels (about 0.01 here) when None, which hurt."""
    n_jobs: int = -1
    fit_without_known_fraud_cards: bool = False
    """Leave out of fitting the rows of cards with a fraud already known on their day
    (``customer_frauds_known_30d > 0``): where known compromised cards are blocked, as the
    Handbook's protocol has it, the model only ever scores cards not known compromised."""


def candidate_names(models: Sequence[str] = MODELS, balancing: Sequence[str] = BALANCING) -> list[str]:
    for name in models:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    for name in balancing:
        if name not in BALANCING:
            raise ValueError(f"unknown balancing {name!r}: choose from {', '.join(BALANCING)}")
    return [f"{model}+{balance}" for model in models for balance in balancing]


def make_pipeline(candidate: str, settings: CandidateSettings, y: np.ndarray) -> Pipeline:
    """An imblearn ``Pipeline``: resampling is a step, so it only ever touches training data."""
    # The estimators are imported here, not with the module: loading the Dagster definitions
    # (every run's and step's process) then skips scikit-learn, imbalanced-learn and XGBoost.
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from imblearn.under_sampling import RandomUnderSampler
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    model, balance = candidate.split("+")
    weighted = balance == "class_weight"
    steps: list = []
    if balance == "smote":
        steps.append(("resample", SMOTE(sampling_strategy=settings.resampled_fraud_ratio,
                                         random_state=settings.seed)))
    elif balance == "undersample":
        steps.append(("resample", RandomUnderSampler(
            sampling_strategy=settings.resampled_fraud_ratio, random_state=settings.seed)))
    if model == "logistic_regression":
        steps += [
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(max_iter=2_000, class_weight="balanced" if weighted else None)),
        ]
    elif model == "random_forest":
        steps.append(("classify", RandomForestClassifier(
            n_estimators=settings.forest_trees,
            max_depth=settings.forest_max_depth,
            class_weight="balanced_subsample" if weighted else None,
            n_jobs=settings.n_jobs,
            random_state=settings.seed,
        )))
    else:
        frauds = max(int(y.sum()), 1)
        steps.append(("classify", XGBClassifier(
            n_estimators=settings.xgb_trees,
            max_depth=settings.xgb_max_depth,
            learning_rate=settings.xgb_learning_rate,
            max_bin=settings.xgb_max_bin,
            base_score=settings.xgb_base_score,
            scale_pos_weight=(len(y) - frauds) / frauds if weighted else 1.0,
            tree_method="hist",
            n_jobs=settings.n_jobs,
            random_state=settings.seed,
        )))
    return Pipeline(steps)


def _xy(frame: pl.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return feature_matrix(frame, columns), frame[LABEL].to_numpy()


def fitted_rows(labelled: pl.DataFrame, window: Window, settings: CandidateSettings) -> pl.DataFrame:
    """The rows of ``window`` a candidate is fitted on (see ``fit_without_known_fraud_cards``)."""
    rows = _in(labelled, window)
    if settings.fit_without_known_fraud_cards:
        rows = rows.filter(pl.col("customer_frauds_known_30d") == 0)
    return rows


def _in(frame: pl.DataFrame, window: Window) -> pl.DataFrame:
    day = pl.col("tx_datetime").dt.date()
    return frame.filter(day.is_between(window.first, window.last))


def assessed_rows(labelled: pl.DataFrame, train: Window, assessed: Window, delay_days: int,
                  exclude_known_compromised: bool) -> pl.DataFrame:
    """The rows a model trained on ``train`` is judged on: ``assessed``'s, without (when
    ``exclude_known_compromised``) each day's cards known compromised by the Handbook's rule
    (``metrics.known_compromised_cards`` from ``train.first``), as its ``get_train_test_set``."""
    rows = _in(labelled, assessed)
    if not exclude_known_compromised:
        return rows
    known = known_compromised_cards(labelled, assessed.days(), delay_days, since=train.first)
    return without_known_compromised(rows, known)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline and everything needed to use it the way it was chosen."""

    pipeline: Pipeline
    candidate: str
    threshold: float
    objective: ThresholdObjective
    feature_columns: tuple[str, ...]
    plan: TrainingPlan
    settings: CandidateSettings
    selection: pl.DataFrame
    training_rows: int
    training_frauds: int

    def predict_proba(self, features: pl.DataFrame) -> np.ndarray:
        """Fraud probability for each row of a frame that has the feature columns."""
        return self.pipeline.predict_proba(feature_matrix(features, self.feature_columns))[:, 1]

    @property
    def validation_average_precision(self) -> float:
        row = self.selection.filter(pl.col("candidate") == self.candidate)
        return float(row["mean_average_precision"][0])


def select_candidate(
    labelled: pl.DataFrame,
    plan: TrainingPlan,
    candidates: Sequence[str],
    settings: CandidateSettings = CandidateSettings(),
    columns: Sequence[str] = FEATURE_COLUMNS,
    exclude_known_compromised: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, dict[str, tuple[np.ndarray, ...]]]:
    """Each candidate's average precision on each validation fold, best first.

    Returns the table and, per candidate, its pooled validation labels, scores, days and cards
    (folds in order), which the threshold is chosen on. ``exclude_known_compromised``: each
    validation fold drops the cards known compromised (``assessed_rows``), as the Handbook's
    prequential validation does. ``progress`` (e.g. a logger's ``info``) is told each fold's
    figures as it ends and each candidate's mean: the search takes minutes.
    """
    say = progress or (lambda message: None)
    rows, pooled = [], {}
    assessed = [assessed_rows(labelled, train, valid, plan.delay_days, exclude_known_compromised)
                for train, valid in plan.validation_folds()]
    folds = [(_xy(fitted_rows(labelled, train, settings), columns), _xy(valid, columns))
             for (train, _), valid in zip(plan.validation_folds(), assessed)]
    days = np.concatenate([v["tx_datetime"].dt.date().to_numpy() for v in assessed])
    cards = np.concatenate([v["customer_id"].to_numpy() for v in assessed])
    for (x_train, y_train), _ in folds:
        if x_train.shape[0] == 0 or y_train.sum() == 0:
            raise ValueError("a validation fold has no training rows or no fraud: "
                             f"need labelled features for {plan.labelled_window()}")
    for number, candidate in enumerate(candidates, 1):
        scores, labels, aps, seconds = [], [], [], 0.0
        for fold, ((x_train, y_train), (x_valid, y_valid)) in enumerate(folds):
            t0 = time.perf_counter()
            pipeline = make_pipeline(candidate, settings, y_train).fit(x_train, y_train)
            fit = time.perf_counter() - t0
            seconds += fit
            score = pipeline.predict_proba(x_valid)[:, 1]
            aps.append(average_precision(y_valid, score))
            scores.append(score)
            labels.append(y_valid)
            say(f"candidate {number}/{len(candidates)} {candidate}: fold {fold + 1}/{len(folds)}"
                f" average precision {aps[-1]:.4f} (fit {fit:.1f} s)")
        pooled[candidate] = (np.concatenate(labels), np.concatenate(scores), days, cards)
        say(f"candidate {number}/{len(candidates)} {candidate}: mean average precision"
            f" {np.nanmean(aps):.4f} over {len(folds)} folds ({seconds:.1f} s of fitting)")
        rows.append({
            "candidate": candidate,
            "mean_average_precision": float(np.nanmean(aps)),
            "std_average_precision": float(np.nanstd(aps)),
            **{f"fold_{k}_average_precision": ap for k, ap in enumerate(aps)},
            "fit_seconds": seconds,
        })
    table = pl.DataFrame(rows).sort("mean_average_precision", descending=True, nulls_last=True)
    return table, pooled


def train(
    labelled: pl.DataFrame,
    plan: TrainingPlan,
    candidates: Sequence[str] = tuple(candidate_names()),
    objective: ThresholdObjective = ThresholdObjective(),
    settings: CandidateSettings = CandidateSettings(),
    columns: Sequence[str] = FEATURE_COLUMNS,
    exclude_known_compromised: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Select the best candidate on the validation folds, refit it on the training window.

    ``labelled`` holds features and ``tx_fraud`` for ``plan.labelled_window()``; ``progress``
    hears the search fold by fold (see ``select_candidate``) and which candidate won.
    """
    selection, pooled = select_candidate(labelled, plan, candidates, settings, columns,
                                         exclude_known_compromised, progress)
    best = selection["candidate"][0]
    if progress:
        progress(f"selected {best} (mean validation average precision"
                 f" {selection['mean_average_precision'][0]:.4f}, best of {selection.height});"
                 f" refitting it on {plan.train_window()}")
    y_valid, scores, days, cards = pooled[best]
    threshold = choose_threshold(y_valid, scores, objective, days=days, cards=cards)
    x, y = _xy(fitted_rows(labelled, plan.train_window(), settings), columns)
    if y.sum() == 0:
        raise ValueError(f"no fraud in the training window {plan.train_window()}")
    pipeline = make_pipeline(best, settings, y).fit(x, y)
    return TrainedModel(
        pipeline=pipeline,
        candidate=best,
        threshold=float(threshold),
        objective=objective,
        feature_columns=tuple(columns),
        plan=plan,
        settings=settings,
        selection=selection,
        training_rows=int(x.shape[0]),
        training_frauds=int(y.sum()),
    )
