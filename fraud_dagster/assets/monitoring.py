"""Daily drift reports against the champion's training reference (a stored sample).

``drift_report``: a day's batch features and the champion's scores on them, and the champion's
label-based performance on the day whose labels have just matured (``LABEL_MATURITY_DAYS`` before,
with the reports made by the report's day),
so concept drift is seen and not only data drift. ``served_drift_report``: the transactions the
BentoML service scored that day (its prediction log, ``prediction_log``) and the scores it gave,
so drift is measured on real traffic too.
"""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from fraud_dagster.core.drift import DRIFT_COLUMNS, SCORE_COLUMN, drift_summary
from fraud_dagster.assets.features import FEATURES
from fraud_dagster.assets.labels import FRAUD_LABELS, read_labels
from fraud_dagster.core.labels import LABEL_MATURITY_DAYS, known_labels
from fraud_dagster.core.metrics import average_precision
from fraud_dagster.partitions import daily_partitions, window_days
from fraud_dagster.metadata import as_table
from fraud_dagster.resources import DailyTables, ModelRegistry, PredictionLogStore


# No `deps=[bento_model]`: with the spec in Definitions, that unpartitioned upstream made a UI
# backfill of the monitoring group leave served_drift_report out of its targets
# (test_a_ui_backfill_of_a_date_range_targets_exactly_those_days).
prediction_log = dg.AssetSpec(
    "prediction_log",
    group_name="serving",
    partitions_def=daily_partitions,
    kinds={"bentoml", "arrow"},
    description="What bento/service.py served: each transaction's features, probability, decision"
    " and model version, under `<data root>/predictions/<transaction day>/` (Arrow IPC streams)."
    " Written by the service before it answers, not by Dagster.",
)


def _champion_or_warn(context: dg.AssetExecutionContext, model_registry: ModelRegistry):
    """``ModelRegistry.champion_and_reference``, saying why no report is made when there is no
    champion yet."""
    compared = model_registry.champion_and_reference()
    if compared is None:
        context.log.warning("no champion model yet: run retrain_job first; no drift report made")
    return compared


class DriftReportConfig(dg.Config):
    drift_share: float = Field(
        default=0.5,
        description="Evidently's dataset-drift rule: at least this share of the columns drifted.")


def _labelled_performance(tables: DailyTables, model, as_of: dt.date) -> dict:
    """The champion's average precision and recall at its threshold on the day that matured at
    the end of ``as_of``, with the labels known then, if that day is stored."""
    day = as_of - dt.timedelta(days=LABEL_MATURITY_DAYS)
    try:
        frame = tables.read_days(FEATURES, [day])
    except FileNotFoundError:
        return {"labelled_day": None, "labelled_average_precision": None, "labelled_recall": None}
    frame = frame.with_columns(tx_fraud=known_labels(frame, read_labels(tables, day, as_of), as_of))
    scores = model.predict_proba(frame)
    y = frame["tx_fraud"].to_numpy()
    frauds = int(y.sum())
    return {
        "labelled_day": day,
        "labelled_average_precision": average_precision(y, scores) if frauds else None,
        "labelled_recall": float(((scores >= model.threshold) & (y == 1)).sum() / frauds)
        if frauds else None,
    }


DAILY_REPORT = {
    "partitions_def": daily_partitions,
    "backfill_policy": dg.BackfillPolicy.single_run(),
    "group_name": "monitoring",
    "metadata": {"partition_expr": "day"},
    "kinds": {"evidently", "parquet"},
    "output_required": False,  # no champion yet, or no day with rows: nothing is materialised
}


def _drifted_columns(summary) -> dg.MetadataValue:
    """The drifted columns with their scores, or a line saying that none drifted."""
    if summary.drifted.is_empty():
        return dg.MetadataValue.text(f"No drifted columns (0 of {summary.n_columns}).")
    return as_table(summary.drifted)


@dg.asset(deps=[FRAUD_LABELS], **DAILY_REPORT)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftReportConfig,
    transaction_features: pl.DataFrame,
    daily_tables: DailyTables,
    model_registry: ModelRegistry,
):
    """Per day: Evidently drift of the features and champion scores against the champion's
    training reference (HTML report under the data root), and the champion's performance on the
    day whose labels have just arrived. Nothing is materialised before there is a champion."""
    compared = _champion_or_warn(context, model_registry)
    if compared is None:
        return
    champion, reference, champion_ap = compared
    first, last = window_days(context.partition_time_window)
    by_day = transaction_features.with_columns(_day=pl.col("tx_datetime").dt.date()).partition_by(
        "_day", as_dict=True, include_key=False
    ) if transaction_features.height else {}
    rows, summaries = [], {}
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        features = by_day.get((day,))
        if features is None or features.height == 0:
            context.log.warning(f"{day}: no transactions, no drift report")
            continue
        current = features.with_columns(score=champion.predict_proba(features))
        summary = drift_summary(reference, current, DRIFT_COLUMNS,
                                html_path=model_registry.report_path(day),
                                drift_share=config.drift_share)
        rows.append({
            **_drift_row(day, champion, champion_ap, current, summary),
            **_labelled_performance(daily_tables, champion, day),
            "html_report": str(summary.html_path),
        })
        summaries[day] = summary
        context.log.info(f"{day}: {summary.n_drifted} of {summary.n_columns} columns drifted")
    if rows:
        yield _report_output(context, rows, champion, summaries,
                             [first + dt.timedelta(days=i) for i in range((last - first).days + 1)])


def _drift_row(day: dt.date, champion, champion_ap, current: pl.DataFrame, summary) -> dict:
    return {
        "day": day,
        "champion_version": champion.version,
        "champion_test_average_precision": champion_ap,
        "transactions": current.height,
        "share_drifted_columns": summary.share_drifted_columns,
        "dataset_drift": summary.dataset_drift,
        "drifted_columns": ", ".join(summary.drifted_columns),
        "mean_score": float(current["score"].mean()),
    }


def _report_output(context: dg.AssetExecutionContext, rows: list[dict], champion, summaries: dict,
                   days: list[dt.date] | None = None) -> dg.Output:
    """The days' rows as the asset's table. Each partition gets its own metadata (its share of
    drifted columns, drifted columns, HTML path, labelled figures); a day of ``days`` without a
    row says so (``transactions`` 0)."""
    table = pl.DataFrame(rows) if rows else pl.DataFrame(schema={"day": pl.Date})
    by_day = {row["day"]: row for row in rows}
    for day in days or sorted(by_day):
        row = by_day.get(day)
        if row is None:
            metadata = {"transactions": 0, "note": "nothing to report on this day (no rows)"}
        else:
            metadata = {
                "transactions": row["transactions"],
                "share_drifted_columns": float(row["share_drifted_columns"]),
                "dataset_drift": bool(row["dataset_drift"]),
                "html_report": dg.MetadataValue.path(row["html_report"]),
                "drifted_columns": _drifted_columns(summaries[day]),
            }
            for key, value in row.items():
                if key.startswith(("labelled_", "served_")) and value is not None:
                    metadata[key] = value if isinstance(value, (int, float)) else str(value)
        context.add_asset_metadata(metadata, partition_key=day.isoformat())
    metadata = {"champion_version": champion.version, "days_reported": len(rows)}
    if len(rows) > 1:
        metadata["per_day"] = as_table(table.drop("html_report"))
    return dg.Output(table, metadata=metadata)


@dg.asset(deps=[prediction_log], **DAILY_REPORT)
def served_drift_report(
    context: dg.AssetExecutionContext,
    config: DriftReportConfig,
    prediction_logs: PredictionLogStore,
    model_registry: ModelRegistry,
):
    """Per day: the transactions the BentoML service scored (its prediction log) and the
    probabilities it answered, against the champion's training reference (HTML report under
    the data root, beside `drift_report`'s). A day nothing was served for is a no-op that
    still materialises (an empty file, metadata `transactions` 0), so a backfill over days
    nobody served succeeds."""
    compared = _champion_or_warn(context, model_registry)
    if compared is None:
        return
    champion, reference, champion_ap = compared
    first, last = window_days(context.partition_time_window)
    rows, summaries = [], {}
    days = [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        served = prediction_logs.read_day(day)
        if served is None or served.height == 0:
            context.log.info(f"{day}: nothing served, no drift report")
            continue
        current = served.rename({"fraud_probability": SCORE_COLUMN})
        columns = [c for c in DRIFT_COLUMNS if c in current.columns and c in reference.columns]
        summary = drift_summary(reference, current, columns,
                                html_path=model_registry.report_path(day, "served_drift_reports"),
                                drift_share=config.drift_share)
        versions = sorted(served["model_version"].unique().to_list())
        if versions != [champion.version]:
            context.log.warning(f"{day}: served by model version(s) {versions}, compared with the"
                                f" reference of the champion, version {champion.version}")
        rows.append({
            **_drift_row(day, champion, champion_ap, current, summary),
            "served_model_versions": ", ".join(versions),
            "served_share_flagged": float(served["is_fraud"].mean()),
            "html_report": str(summary.html_path),
        })
        summaries[day] = summary
        context.log.info(f"{day}: {summary.n_drifted} of {summary.n_columns} served columns drifted")
    yield _report_output(context, rows, champion, summaries, days)
