"""Drift benchmark: ``drift_summary`` for every day of a backfill, against Evidently's defaults.

    python3 -m uv run python benchmarks/drift.py [--days 183] [--compare-days 3]

Simulates transactions with the project's simulator, validates them and computes their features
(``batch_features``), adds a stand-in ``score`` (a fixed logistic function of a few features, in
place of the champion's probability), takes a seeded ``reference_sample`` of the first
``--reference-days`` feature days as the training reference, then measures ``drift_summary`` with
its HTML report on each of the ``--days`` days after it. The simulator's drift (amounts x1.15)
starts halfway through those days, so drift should be reported after that day and not before.

Prints one JSON object per line:

- ``data``: seconds to simulate, validate and featurise, rows.
- ``fixed``: seconds to import evidently and for the first ``drift_summary`` call (a warm-up
  excluded from the per-day figures).
- ``compare``: per-day seconds (wall and CPU) on the first ``--compare-days`` days for the
  ``DataDriftPreset`` as Evidently's docs use it (the baseline), ``DriftedColumnsCount`` plus a
  ``ValueDrift`` per column, and ``drift_summary`` (a ``ValueDrift`` per column) with and without
  HTML, with a 10,000-row reference, and with all 23 columns (``DRIFT_COLUMNS`` leaves out
  ``tx_is_weekend``).
- ``backfill``: per-day seconds of ``drift_summary`` with HTML over all days, days/s, peak RSS.
- ``drift``: share of drifted columns before and after the drift starts, days with dataset drift,
  and how often each column drifted.
"""

import argparse
import contextlib
import datetime as dt
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from fraud_dagster.core.drift import DRIFT_COLUMNS, SCORE_COLUMN, drift_summary, reference_sample
from fraud_dagster.core.labels import delivered_reports
from fraud_dagster.core.features import FEATURE_COLUMNS, FeatureSpec, batch_features
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.core.validation import split_transactions

START = dt.date(2025, 1, 1)
SEED = 7


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


@contextlib.contextmanager
def timed(into: dict, key: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into[key] = (time.perf_counter() - wall, time.process_time() - cpu)


def stand_in_score() -> pl.Expr:
    logit = (
        -6.0
        + 0.012 * pl.col("tx_amount")
        + 4.0 * pl.col("terminal_risk_30d_delayed")
        + 0.4 * pl.col("amount_zscore_30d").clip(-5, 5)
    )
    return (1 / (1 + (-logit).exp())).alias(SCORE_COLUMN)


def simulate(reference_days: int, days: int) -> tuple[dict[dt.date, pl.DataFrame], dt.date, dict]:
    """Features and score of ``reference_days + days`` days from START, by day; the drift start."""
    spec = FeatureSpec()
    first_current = START + dt.timedelta(days=reference_days)
    drift_start = first_current + dt.timedelta(days=days // 2)
    last = first_current + dt.timedelta(days=days - 1)
    seconds: dict = {}
    with timed(seconds, "simulate"):
        raw = Simulator(SimulatorConfig(drift_start=drift_start)).days(
            START - dt.timedelta(days=spec.history_days()), last
        )
    with timed(seconds, "validate"):
        validated = split_transactions(
            raw.with_columns(
                partition_date=pl.col("tx_datetime").dt.date(),
                source=pl.lit("simulator"),
                parse_errors=pl.lit(None, dtype=pl.Utf8),
            )
        ).validated
    with timed(seconds, "features"):
        features = batch_features(validated, START, last, spec,
                                  labels=delivered_reports(validated))[0].with_columns(stand_in_score())
        by_day = features.with_columns(day=pl.col("tx_datetime").dt.date()).partition_by(
            "day", as_dict=True, include_key=False
        )
    stats = {
        "transactions": raw.height,
        "feature_rows": features.height,
        **{f"{stage}_s": round(wall, 2) for stage, (wall, _) in seconds.items()},
    }
    return {day: frame for (day,), frame in by_day.items()}, drift_start, stats


def evidently_report(metrics: list, reference: pl.DataFrame, current: pl.DataFrame, html: Path):
    """An alternative to drift_summary: a report of ``metrics`` run once and saved as HTML."""
    from evidently import DataDefinition, Dataset, Report

    definition = DataDefinition(numerical_columns=list(DRIFT_COLUMNS))
    current_data, reference_data = (
        Dataset.from_pandas(frame.select(DRIFT_COLUMNS).to_pandas(), data_definition=definition)
        for frame in (current, reference)
    )
    Report(metrics).run(current_data, reference_data).save_html(str(html))


def per_day(samples: list[tuple[float, float]]) -> dict:
    walls = [w for w, _ in samples]
    return {
        "wall_s_mean": round(statistics.fmean(walls), 3),
        "wall_s_median": round(statistics.median(walls), 3),
        "wall_s_max": round(max(walls), 3),
        "cpu_s_mean": round(statistics.fmean(c for _, c in samples), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--compare-days", type=int, default=3)
    parser.add_argument("--reference-days", type=int, default=28)
    parser.add_argument("--reference-rows", type=int, default=25_000)
    args = parser.parse_args()

    by_day, drift_start, data_stats = simulate(args.reference_days, args.days)
    reference_window = pl.concat(
        [by_day[START + dt.timedelta(days=i)] for i in range(args.reference_days)]
    )
    reference = reference_sample(reference_window, args.reference_rows, seed=SEED)
    small_reference = reference_sample(reference_window, 10_000, seed=SEED)
    days = sorted(d for d in by_day if d >= START + dt.timedelta(days=args.reference_days))
    print(json.dumps({
        "stage": "data", **data_stats, "reference_rows": reference.height,
        "rows_per_day_mean": round(statistics.fmean(by_day[d].height for d in days)),
        "peak_rss_mb": peak_rss_mb(),
    }), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "drift_report.html"
        fixed: dict = {}
        with timed(fixed, "import_evidently"):
            import evidently  # noqa: F401
        with timed(fixed, "first_call"):
            drift_summary(reference, by_day[days[0]], DRIFT_COLUMNS, html_path=html)
        print(json.dumps({
            "stage": "fixed", **{f"{k}_s": round(wall, 2) for k, (wall, _) in fixed.items()},
        }), flush=True)

        from evidently.metrics import DriftedColumnsCount, ValueDrift
        from evidently.presets import DataDriftPreset

        all_columns = (*FEATURE_COLUMNS, SCORE_COLUMN)
        options = {
            "preset_html (baseline)": lambda cur: evidently_report(
                [DataDriftPreset()], reference, cur, html
            ),
            "count_and_value_drift_html": lambda cur: evidently_report(
                [DriftedColumnsCount(), *(ValueDrift(column=c) for c in DRIFT_COLUMNS)],
                reference, cur, html,
            ),
            "drift_summary_no_html": lambda cur: drift_summary(reference, cur, DRIFT_COLUMNS),
            "drift_summary_html": lambda cur: drift_summary(
                reference, cur, DRIFT_COLUMNS, html_path=html
            ),
            "drift_summary_html_reference_10k": lambda cur: drift_summary(
                small_reference, cur, DRIFT_COLUMNS, html_path=html
            ),
            "drift_summary_html_23_columns": lambda cur: drift_summary(
                reference, cur, all_columns, html_path=html
            ),
        }
        compare = {}
        for name, run in options.items():
            samples: list = []
            for day in days[: args.compare_days]:
                one: dict = {}
                with timed(one, "s"):
                    run(by_day[day])
                samples.append(one["s"])
            compare[name] = per_day(samples)
        print(json.dumps({
            "stage": "compare", "days": min(args.compare_days, len(days)),
            "reference_rows": reference.height, "columns": len(DRIFT_COLUMNS), **compare,
        }), flush=True)

        samples, rows = [], []
        t0 = time.perf_counter()
        for day in days:
            one = {}
            with timed(one, "s"):
                summary = drift_summary(reference, by_day[day], DRIFT_COLUMNS, html_path=html)
            samples.append(one["s"])
            rows.append({
                "day": day, "after_drift_start": day >= drift_start,
                "share": summary.share_drifted_columns, "dataset_drift": summary.dataset_drift,
                "drifted": summary.drifted_columns,
            })
        wall = time.perf_counter() - t0
        print(json.dumps({
            "stage": "backfill", "days": len(days), "wall_s": round(wall, 1),
            "days_per_s": round(len(days) / wall, 3), **per_day(samples),
            "html_mb": round(html.stat().st_size / 1e6, 2), "peak_rss_mb": peak_rss_mb(),
        }), flush=True)

    daily = pl.DataFrame(rows)
    summary = {"stage": "drift", "drift_start": drift_start.isoformat()}
    for label, part in daily.group_by("after_drift_start"):
        key = "after" if label[0] else "before"
        summary[key] = {
            "days": part.height,
            "share_mean": round(part["share"].mean(), 3),
            "share_min": round(part["share"].min(), 3),
            "share_max": round(part["share"].max(), 3),
            "dataset_drift_days": int(part["dataset_drift"].sum()),
            "columns_drifted_days": dict(
                part.explode("drifted").drop_nulls("drifted")["drifted"].value_counts(sort=True)
                .iter_rows()
            ),
        }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
