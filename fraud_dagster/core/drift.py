"""Data drift of a day's features and scores against a stored reference, with Evidently 0.7.

``reference_sample`` draws the reference kept with a model (a seeded sample of its training
window); ``drift_summary`` compares a day (or a prediction log) with it and returns a
``DriftSummary``: one row per column (method, score, threshold, drifted) and the dataset-level
verdict, optionally with Evidently's HTML report. Nothing here knows about Dagster.

The report is one ``ValueDrift`` per column, run once. The ``DataDriftPreset`` adds a
``DriftedColumnsCount`` and, while rendering, a summary table, and each of those computes every
column's test and distributions again: for a day of 10,000 rows against a 25,000-row reference
(22 columns) the preset took 2.2 times the CPU of this report, and this report plus
``DriftedColumnsCount`` 1.3 times (``benchmarks/drift.py``). So the count and the dataset verdict
are computed from the per-column results with Evidently's own rule (``get_dataset_drift`` in
``evidently/legacy/calculations/data_drift.py``): the dataset drifts when the share of drifted
columns is at least ``drift_share``. ``ValueDrift`` draws its charts inside ``run()`` (about half
its time), so a report without HTML saves only the writing.

Evidently picks each column's test from the data: for a reference over 1,000 rows the normed
Wasserstein distance (drift when >= 0.1), or the Jensen-Shannon distance (drift when >= 0.1) for
columns with at most 5 distinct values such as the 0/1 flags.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from fraud_dagster.core.features import FEATURE_COLUMNS

SCORE_COLUMN = "score"
# One day is all weekend or all weekday, so against a reference of whole weeks ``tx_is_weekend``
# would drift every day by construction; a daily report leaves it out.
DRIFT_COLUMNS = tuple(c for c in (*FEATURE_COLUMNS, SCORE_COLUMN) if c != "tx_is_weekend")
COLUMNS_SCHEMA = {
    "column": pl.Utf8,
    "method": pl.Utf8,
    "score": pl.Float64,
    "threshold": pl.Float64,
    "drifted": pl.Boolean,
}


def reference_sample(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """``n`` rows drawn without replacement, the same rows for the same frame and seed.

    Rows keep their order in ``frame``; a frame of at most ``n`` rows is returned whole.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if frame.height <= n:
        return frame
    return frame.sample(n=n, seed=seed, shuffle=False)


@dataclasses.dataclass(frozen=True, eq=False)
class DriftSummary:
    """Evidently's verdict on one current frame against a reference.

    ``dataset_drift`` follows Evidently's rule: the share of drifted columns is at least
    ``drift_share``. ``columns`` has one row per compared column: ``column``, ``method`` (the name
    Evidently gives the test it chose, or the method asked for), ``score``, ``threshold`` and
    ``drifted``.
    """

    share_drifted_columns: float
    dataset_drift: bool
    n_columns: int
    n_drifted: int
    drift_share: float
    columns: pl.DataFrame
    html_path: Path | None = None

    @property
    def drifted_columns(self) -> list[str]:
        return self.columns.filter("drifted")["column"].to_list()

    @property
    def drifted(self) -> pl.DataFrame:
        """The drifted columns with their method, score and threshold."""
        return self.columns.filter("drifted").select("column", "method", "score", "threshold")


def _numeric_pandas(frame: pl.DataFrame, columns: list[str], name: str):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}")
    not_numeric = [c for c in columns if not frame.schema[c].is_numeric()]
    if not_numeric:
        raise ValueError(f"{name} columns {not_numeric} are not numeric")
    if frame.is_empty():
        raise ValueError(f"{name} frame has no rows")
    return frame.select(pl.col(columns).cast(pl.Float64)).to_pandas()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def drift_summary(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: Sequence[str],
    *,
    html_path: Path | None = None,
    drift_share: float = 0.5,
    method: str | None = None,
    threshold: float | None = None,
) -> DriftSummary:
    """Drift of ``columns`` (numeric) of ``current`` against ``reference``, by one Evidently run.

    ``method`` and ``threshold`` override Evidently's per-column choice for every column (e.g.
    ``"psi"``, ``"ks"``); by default it picks from each column's size and distinct values. With
    ``html_path`` the report is written there, to a temporary file in the same folder first and
    then renamed, so a reader never sees half a report.
    """
    # Imported here: importing evidently takes seconds, which only the drift step should pay.
    from evidently import DataDefinition, Dataset, Report
    from evidently.core.metric_types import TestStatus
    from evidently.metrics import ValueDrift

    columns = list(dict.fromkeys(columns))
    if not columns:
        raise ValueError("no columns to compare")
    definition = DataDefinition(
        numerical_columns=columns,
        categorical_columns=[],
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    per_column = [ValueDrift(column=c, method=method, threshold=threshold) for c in columns]
    current_data, reference_data = (
        Dataset.from_pandas(_numeric_pandas(frame, columns, name), data_definition=definition)
        for frame, name in ((current, "current"), (reference, "reference"))
    )
    # include_tests: ValueDrift records whether the column drifted only as its test's status.
    snapshot = Report(per_column, include_tests=True).run(current_data, reference_data)
    results = snapshot.metric_results
    rows = []
    for metric in per_column:
        result = results[metric.metric_id]
        # The parameters Evidently resolved (the method and threshold it chose) are in the config.
        params = result.metric_value_location.metric.params
        rows.append({
            "column": metric.column,
            "method": params["method"],
            "score": float(result.value),
            "threshold": float(params["threshold"]),
            "drifted": any(test.status == TestStatus.FAIL for test in result.tests),
        })
    if html_path is not None:
        html_path = Path(html_path)
        _write_atomically(html_path, snapshot.get_html_str(as_iframe=False))
    n_drifted = sum(row["drifted"] for row in rows)
    share = n_drifted / len(columns)
    return DriftSummary(
        share_drifted_columns=share,
        dataset_drift=share >= drift_share,
        n_columns=len(columns),
        n_drifted=n_drifted,
        drift_share=drift_share,
        columns=pl.DataFrame(rows, schema=COLUMNS_SCHEMA),
        html_path=html_path,
    )
