"""Scoring transactions' features with an exported model: what the online service runs.

A *model directory* holds everything serving needs, written by ``save_model_dir`` (the
``bento_model`` asset puts it in the BentoML model store) and read by ``Scorer.load``:

- ``pipeline.skops``: the fitted classifier pipeline in skops' format (resampling steps are skipped
  at predict time), loaded trusting only the types training makes (``TRUSTED_TYPES``), never
  with ``pickle``: an XGBoost booster inside it is XGBoost's own UBJSON model;
- ``feature_state.parquet``: the ``feature_state`` at the end of ``state_date``, the state the
  service starts from when the pipeline's own newer states are not at hand (see ``live.py``);
- ``serving.json``: threshold, feature columns, model version, lineage and library versions.

Features come from the online feature store (``store.py``), which computes them with the code the
batch asset runs. Nothing here knows about Dagster or BentoML.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import platform
from pathlib import Path

import numpy as np
import polars as pl

from fraud_dagster.core.features import FEATURE_COLUMNS
from fraud_dagster.core.schema import REQUEST_DTYPES
from fraud_dagster.serving.store import Features

PIPELINE_FILE = "pipeline.skops"
TRUSTED_TYPES = (
    "imblearn.pipeline.Pipeline",
    "imblearn.over_sampling._smote.base.SMOTE",
    "imblearn.under_sampling._prototype_selection._random_under_sampler.RandomUnderSampler",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
)
"""What ``Scorer.load`` trusts besides skops' own list (scikit-learn's estimators, numpy): the
types ``core.training.make_pipeline`` builds, named here once, not read from the file. Any other
type in a model file stops the load (``skops.io.exceptions.UntrustedTypesFoundException``)."""
STATE_FILE = "feature_state.parquet"
INFO_FILE = "serving.json"
TOP_CONTRIBUTIONS = 5
PARALLEL_ROWS = 1_000
"""Batches of at least this many rows are scored on ``batch_threads`` threads (default 1)."""
LIBRARIES = ("polars", "numpy", "scikit-learn", "imbalanced-learn", "xgboost", "pandera")


def _skops_io():
    """``skops.io``, imported when a model is saved or loaded, not with this module: importing it
    lists every scikit-learn estimator, which imports all of scikit-learn and much of SciPy
    (seconds in every process that loads the Dagster definitions, step processes included)."""
    import skops.io

    return skops.io


def library_versions() -> dict[str, str]:
    """The versions the model is saved and its features computed with."""
    return {"python": platform.python_version(),
            **{name: importlib.metadata.version(name) for name in LIBRARIES}}


def save_model_dir(
    folder: Path, pipeline, state: pl.DataFrame, *, threshold: float,
    feature_columns: tuple[str, ...], info: dict,
) -> dict:
    """Write a model directory; returns the ``serving.json`` content."""
    states = state["state_date"].unique().to_list() if state.height else []
    if len(states) > 1:
        raise ValueError(f"a feature state is one day's, got {len(states)} days: {states[:5]}")
    missing = set(feature_columns) - set(FEATURE_COLUMNS)
    if missing:
        raise ValueError(f"the model uses features this code does not compute: {sorted(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    _skops_io().dump(pipeline, folder / PIPELINE_FILE)
    state.write_parquet(folder / STATE_FILE)
    content = {
        **info,
        "threshold": float(threshold),
        "feature_columns": list(feature_columns),
        "state_date": states[0].isoformat() if states else None,
        "libraries": library_versions(),
    }
    (folder / INFO_FILE).write_text(json.dumps(content, indent=2, sort_keys=True))
    return content


@dataclasses.dataclass(frozen=True)
class Scored:
    """Scores of a frame of transactions, row for row in request order."""

    features: Features
    """Everything the store computed."""
    feature_names: list[str]
    """The model's features, in its order."""
    x: np.ndarray
    """Their values, rows x ``feature_names``."""
    probability: np.ndarray
    is_fraud: np.ndarray
    explained: np.ndarray
    """Per row, whether it has contributions: every flagged row and those asked for."""
    contributions: np.ndarray | None
    """Per explained row (in order) and feature, the feature's part of the log-odds; None when
    the model has none."""

    @property
    def height(self) -> int:
        return self.features.height

    def top(self, k: int = TOP_CONTRIBUTIONS) -> tuple[list[str], np.ndarray, np.ndarray,
                                                       np.ndarray] | None:
        """Per explained row, the ``k`` features with the largest absolute contribution, largest
        first: (feature names, their column numbers, values and contributions, each explained
        rows x k); None when the model has no contributions."""
        if self.contributions is None:
            return None
        columns = self.feature_names
        k = min(k, len(columns))
        order = np.argsort(-np.abs(self.contributions), axis=1, kind="stable")[:, :k]
        values = np.take_along_axis(self.x[self.explained], order, axis=1)
        contributions = np.take_along_axis(self.contributions, order, axis=1)
        return columns, order, values.astype(np.float64), contributions.astype(np.float64)

    def top_contributions(self, k: int = TOP_CONTRIBUTIONS) -> pl.Series:
        """``top`` as a column of lists of ``{feature, value, contribution}`` structs, null for
        rows not explained (and all when the model has none), built in whole columns: per-row
        Python objects cost more than scoring for a 10,000-row batch."""
        top = self.top(k)
        if top is None:
            return pl.Series("top_contributions", [None] * self.height)
        columns, order, values, contributions = top
        parts = pl.DataFrame({
            "feature": pl.Series(columns).gather(order.ravel()),
            "value": values.ravel(),
            "contribution": contributions.ravel(),
        })
        structs = parts.select(pl.struct(pl.all()).alias("top_contributions")).to_series()
        lists = structs.reshape((len(order), k)).cast(pl.List(structs.dtype))
        if len(order) == self.height:
            return lists
        # Unexplained rows point at a null appended after the explained rows' lists.
        at = np.where(self.explained, np.cumsum(self.explained) - 1, len(order))
        return lists.extend(pl.Series([None], dtype=lists.dtype)).gather(at)

    def top_contribution_rows(self, k: int = TOP_CONTRIBUTIONS) -> list[list[dict] | None]:
        """``top_contributions`` as Python objects: for a few rows, cheaper than a frame."""
        top = self.top(k)
        if top is None:
            return [None] * self.height
        columns, order, values, contributions = top
        explained = iter([
            [{"feature": columns[j], "value": v, "contribution": c}
             for j, v, c in zip(row_order.tolist(), row_values.tolist(), row_contributions.tolist())]
            for row_order, row_values, row_contributions in zip(order, values, contributions)
        ])
        return [next(explained) if yes else None for yes in self.explained.tolist()]


def _contribution_method(classifier, exact: bool) -> tuple[str, str]:
    """(kind, what the contributions are, or why there are none) for the final pipeline step."""
    name = type(classifier).__name__
    if name == "XGBClassifier":
        if exact:
            return "xgboost", ("XGBoost per-prediction contributions (pred_contribs: exact"
                               " TreeSHAP, log-odds)")
        return "xgboost", ("XGBoost per-prediction contributions (pred_contribs with"
                           " approx_contribs: Saabas path attribution, log-odds)")
    if name == "LogisticRegression":
        return "linear", "exact linear contributions: coefficient x standardised value (log-odds)"
    return "none", (f"unavailable: {name} has no exact per-prediction contributions"
                    " and this service does not approximate them")


class Scorer:
    """A loaded model directory: probabilities, decisions and contributions for features."""

    def __init__(self, pipeline, info: dict, exact_contributions: bool = False,
                 batch_threads: int | None = None):
        self.pipeline = pipeline
        self.info = info
        self.threshold = float(info["threshold"])
        self.feature_columns = tuple(info["feature_columns"])
        self._columns = [FEATURE_COLUMNS.index(c) for c in self.feature_columns]
        self.model_version = str(info["registered_version"])
        self.state_date = (dt.date.fromisoformat(info["state_date"])
                           if info.get("state_date") else None)
        """The day of the bundled state."""
        self.classifier = pipeline.steps[-1][1]
        self._booster = (self.classifier.get_booster()
                         if type(self.classifier).__name__ == "XGBClassifier" else None)
        # Requests are scored one micro-batch at a time, on one thread unless ``batch_threads``
        # says otherwise: a thread pool per prediction only adds hand-offs for a few rows, and on
        # two shared cores even a whole day's batch was slower on two OpenMP threads than on one
        # (bento/README.md, "How it is built").
        self.batch_threads = batch_threads or 1
        self._threads = 0
        self._use_threads(1)
        # XGBoost's approximate contributions cost a fiftieth of exact TreeSHAP (bento/README.md,
        # "The online feature store") and also add up to the log-odds.
        self.exact_contributions = exact_contributions
        self.contribution_kind, self.contribution_note = _contribution_method(
            self.classifier, exact_contributions)

    def _use_threads(self, threads: int) -> None:
        if threads == self._threads:
            return
        if "n_jobs" in self.classifier.get_params():
            self.classifier.set_params(n_jobs=threads)
        if self._booster is not None:
            self._booster.set_param({"nthread": threads})
        self._threads = threads

    @classmethod
    def load(cls, folder: Path | str, exact_contributions: bool = False,
             batch_threads: int | None = None) -> Scorer:
        folder = Path(folder)
        missing = [n for n in (PIPELINE_FILE, STATE_FILE, INFO_FILE) if not (folder / n).exists()]
        if missing:
            older = (" (it holds a pipeline.pkl: exported before models were saved without"
                     " pickle, which this service does not load)"
                     if (folder / "pipeline.pkl").exists() else "")
            raise FileNotFoundError(
                f"{folder} is not a fraud model directory (missing {', '.join(missing)}){older}:"
                " materialise the bento_model asset to export one"
            )
        pipeline = _skops_io().load(folder / PIPELINE_FILE, trusted=list(TRUSTED_TYPES))
        info = json.loads((folder / INFO_FILE).read_text())
        return cls(pipeline, info, exact_contributions, batch_threads)

    def library_mismatches(self) -> dict[str, tuple[str, str]]:
        """Libraries whose version differs from the export's: (exported, running)."""
        running = library_versions()
        return {name: (version, running.get(name, "absent"))
                for name, version in self.info.get("libraries", {}).items()
                if running.get(name) != version}

    def _classifier_input(self, x: np.ndarray) -> np.ndarray:
        for _, step in self.pipeline.steps[:-1]:
            if not hasattr(step, "fit_resample"):  # resampling only happens in training
                x = step.transform(x)
        return x

    def _predict(self, z: np.ndarray, explain: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The fraud class's probability for the classifier's input ``z``, which rows are
        explained (the flagged ones and ``explain``'s; None: all) and their per-feature log-odds
        contributions (None when the model has none)."""
        if self._booster is not None:
            # What XGBClassifier.predict_proba returns for the fraud class (the same bits, tested),
            # without the sklearn wrapper's per-call configuration contexts (a third of a single
            # row's scoring time).
            import xgboost

            if explain is None:  # every row explained: one DMatrix for both predictions
                matrix = xgboost.DMatrix(z, nthread=self._threads)
                probability = self._booster.predict(matrix, validate_features=False)
                explained = self._explained(probability, explain)
            else:
                # The flagged rows are known only once predicted: predicted in place (a
                # DMatrix of every row costs a third of predicting them), and a row's
                # contributions do not depend on the other rows.
                probability = self._booster.inplace_predict(z, validate_features=False)
                explained = self._explained(probability, explain)
                if not explained.any():
                    return probability, explained, np.empty((0, z.shape[1]), dtype=np.float32)
                matrix = xgboost.DMatrix(z[explained], nthread=self._threads)
            return probability, explained, self._booster.predict(
                matrix, pred_contribs=True, approx_contribs=not self.exact_contributions,
                validate_features=False)[:, :-1]
        probability = self.classifier.predict_proba(z)[:, 1]
        explained = self._explained(probability, explain)
        if self.contribution_kind == "linear":
            return probability, explained, z[explained] * self.classifier.coef_[0]
        return probability, explained, None

    def flagged(self, probability: np.ndarray) -> np.ndarray:
        """``is_fraud``: the probability at or above the tuned threshold."""
        return probability >= self.threshold

    def _explained(self, probability: np.ndarray, explain: np.ndarray | None) -> np.ndarray:
        if explain is None:
            return np.ones(len(probability), dtype=bool)
        return explain | self.flagged(probability)

    def score(self, features: Features, explain: np.ndarray | None = None) -> Scored:
        """Score transactions' features; contributions for the flagged rows and those
        ``explain`` marks (None: every row)."""
        x = features.values[:, self._columns]
        names = list(self.feature_columns)
        if not len(x):
            nothing = np.empty(0, dtype=bool)
            return Scored(features, names, x, np.empty(0), nothing, nothing, None)
        self._use_threads(self.batch_threads if len(x) >= PARALLEL_ROWS else 1)
        # What the pipeline's predict_proba does (resampling skipped), without its per-call
        # overhead, which is most of the time on a single row.
        probability, explained, contributions = self._predict(self._classifier_input(x), explain)
        return Scored(features, names, x, probability, self.flagged(probability), explained,
                      contributions)


def bundled_state(folder: Path | str) -> pl.DataFrame:
    """The ``feature_state`` exported with a model."""
    return pl.read_parquet(Path(folder) / STATE_FILE)


def transactions_frame(rows: list[tuple]) -> pl.DataFrame:
    """A frame of raw transactions from rows of ``REQUIRED_COLUMNS`` values, with the validated
    schema's dtypes."""
    return pl.DataFrame(rows, schema=REQUEST_DTYPES, orient="row")
