from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_dagster.core.drift import (
    DRIFT_COLUMNS,
    SCORE_COLUMN,
    DriftSummary,
    drift_summary,
    reference_sample,
)
from fraud_dagster.core.features import FEATURE_COLUMNS

COLUMNS = ["tx_amount", "tx_hour", "tx_is_night", "customer_mean_amount_30d", SCORE_COLUMN]


def transactions(
    n: int, seed: int, amount_factor: float = 1.0, score_shift: float = 0.0
) -> pl.DataFrame:
    """Feature-like columns: skewed amounts, hours of the day, a 0/1 flag and a score."""
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 30.0, n)
    return pl.DataFrame({
        "tx_amount": amount * amount_factor,
        "tx_hour": rng.uniform(0, 24, n),
        "tx_is_night": (rng.random(n) < 0.25).astype(float),
        "customer_mean_amount_30d": rng.gamma(4.0, 15.0, n),
        SCORE_COLUMN: np.clip(rng.beta(1, 30, n) + score_shift, 0, 1),
    })


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return transactions(4_000, seed=1)


def drifted(summary: DriftSummary) -> set[str]:
    return set(summary.drifted_columns)


def test_reference_sample_is_deterministic_for_a_seed():
    frame = transactions(5_000, seed=3).with_row_index("row")

    first = reference_sample(frame, 1_000, seed=11)

    assert_frame_equal(first, reference_sample(frame, 1_000, seed=11))
    assert first.height == 1_000
    assert first["row"].n_unique() == 1_000
    assert first["row"].is_sorted(), "rows keep their order in the frame"
    assert set(first["row"]) != set(reference_sample(frame, 1_000, seed=12)["row"])


def test_reference_sample_of_a_small_frame_is_the_whole_frame():
    frame = transactions(300, seed=3)

    assert_frame_equal(reference_sample(frame, 1_000, seed=11), frame)


def test_same_distribution_is_not_dataset_drift(reference):
    summary = drift_summary(reference, transactions(2_000, seed=2), COLUMNS)

    assert drifted(summary) == set()
    assert (summary.n_columns, summary.n_drifted, summary.share_drifted_columns) == (5, 0, 0.0)
    assert not summary.dataset_drift
    assert summary.drifted.is_empty()


def test_shifted_amounts_are_reported_as_drifted_columns(reference):
    current = transactions(2_000, seed=2, amount_factor=1.3)

    summary = drift_summary(reference, current, COLUMNS)

    assert drifted(summary) == {"tx_amount"}
    amount = summary.columns.row(by_predicate=pl.col("column") == "tx_amount", named=True)
    assert amount["score"] >= amount["threshold"]
    assert (summary.n_drifted, summary.share_drifted_columns) == (1, 0.2)
    assert not summary.dataset_drift, "one column of five is below the default share of 0.5"


def test_columns_table_has_each_columns_test_score_and_threshold(reference):
    summary = drift_summary(reference, transactions(2_000, seed=2), COLUMNS)

    assert summary.columns.schema == {
        "column": pl.Utf8, "method": pl.Utf8, "score": pl.Float64,
        "threshold": pl.Float64, "drifted": pl.Boolean,
    }
    methods = dict(summary.columns.select("column", "method").iter_rows())
    assert summary.columns["column"].to_list() == COLUMNS
    assert methods["tx_amount"] == "Wasserstein distance (normed)"
    assert methods["tx_is_night"] == "Jensen-Shannon distance", "0/1 flags compare as categories"
    assert summary.columns["threshold"].to_list() == [0.1] * 5


def test_dataset_drifts_when_the_share_of_drifted_columns_reaches_drift_share(reference):
    current = transactions(2_000, seed=2, amount_factor=1.3, score_shift=0.05)
    columns = ["tx_amount", SCORE_COLUMN, "tx_hour", "tx_is_night"]

    summary = drift_summary(reference, current, columns)

    assert drifted(summary) == {"tx_amount", SCORE_COLUMN}
    assert summary.share_drifted_columns == 0.5
    assert summary.dataset_drift, "a share equal to drift_share is dataset drift"
    assert not drift_summary(reference, current, columns, drift_share=0.6).dataset_drift


def test_verdicts_agree_with_evidentlys_drifted_columns_count(reference):
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount

    current = transactions(2_000, seed=5, amount_factor=1.2, score_shift=0.05)
    definition = DataDefinition(numerical_columns=COLUMNS)
    count = DriftedColumnsCount(columns=COLUMNS)
    evidently_count = Report([count]).run(
        Dataset.from_pandas(current.to_pandas(), data_definition=definition),
        Dataset.from_pandas(reference.to_pandas(), data_definition=definition),
    ).metric_results[count.metric_id]

    summary = drift_summary(reference, current, COLUMNS)

    assert summary.n_drifted == evidently_count.count.value == 2
    assert summary.share_drifted_columns == pytest.approx(evidently_count.share.value)


def test_method_and_threshold_override_evidentlys_choice(reference):
    current = transactions(2_000, seed=2, amount_factor=1.3)

    def run(threshold: float) -> DriftSummary:
        return drift_summary(
            reference, current, ["tx_amount", "tx_hour"], method="psi", threshold=threshold
        )

    strict, lenient = run(0.1), run(0.2)

    assert strict.columns["method"].to_list() == ["psi", "psi"]
    assert strict.columns["threshold"].to_list() == [0.1, 0.1]
    assert drifted(strict) == {"tx_amount"}
    assert 0.1 < strict.columns["score"][0] < 0.2
    assert drifted(lenient) == set()


def test_p_value_methods_report_drift_when_the_score_is_below_the_threshold(reference):
    current = transactions(2_000, seed=2, amount_factor=1.3)

    summary = drift_summary(
        reference, current, ["tx_amount", "tx_hour"], method="ks", threshold=0.05
    )

    amount, hour = summary.columns.iter_rows(named=True)
    assert amount["drifted"] and amount["score"] < 0.05
    assert not hour["drifted"] and hour["score"] >= 0.05


def test_the_drifted_table_lists_only_the_drifted_columns(reference):
    current = transactions(2_000, seed=2, amount_factor=1.3)

    table = drift_summary(reference, current, COLUMNS).drifted

    assert table.columns == ["column", "method", "score", "threshold"]
    assert table.height == 1
    assert table.row(0)[:2] == ("tx_amount", "Wasserstein distance (normed)")


def test_html_report_is_written_and_opens_as_html(reference, tmp_path):
    path = tmp_path / "reports" / "2025-03-01.html"

    summary = drift_summary(reference, transactions(2_000, seed=2), COLUMNS, html_path=path)

    assert summary.html_path == path
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    assert "tx_amount" in html
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left"


def test_without_html_path_no_report_is_written(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    summary = drift_summary(reference, transactions(2_000, seed=2), COLUMNS)

    assert summary.html_path is None
    assert list(tmp_path.iterdir()) == []


def test_a_failed_html_write_keeps_the_previous_report(reference, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("previous report")

    def failing_rename(self, target):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        drift_summary(reference, transactions(2_000, seed=2), COLUMNS, html_path=path)

    assert path.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.parametrize(
    ("current", "message"),
    [
        (pl.DataFrame({"tx_amount": [1.0, 2.0]}), "lacks columns"),
        (pl.DataFrame({"tx_amount": ["a", "b"], "tx_hour": [1.0, 2.0]}), "not numeric"),
        (pl.DataFrame(schema={"tx_amount": pl.Float64, "tx_hour": pl.Float64}), "no rows"),
    ],
)
def test_rejects_missing_non_numeric_or_empty_current_columns(reference, current, message):
    with pytest.raises(ValueError, match=message):
        drift_summary(reference, current, ["tx_amount", "tx_hour"])


def test_daily_drift_columns_are_the_features_and_score_but_the_weekend_flag():
    assert set(DRIFT_COLUMNS) == set(FEATURE_COLUMNS) - {"tx_is_weekend"} | {SCORE_COLUMN}
    assert len(DRIFT_COLUMNS) == len(FEATURE_COLUMNS)
