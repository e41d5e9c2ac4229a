"""The model: trained on a window of daily features, evaluated on held-out days against the champion.

Both assets are unpartitioned and read exactly the days their config names from the daily assets'
storage (not every partition), through the same IO manager that wrote them.
"""


import base64
import datetime as dt
from typing import Literal

import dagster as dg
import polars as pl
from dagster_mlflow.resources import MlFlow
from pydantic import Field

from fraud_dagster.assets.features import FEATURES
from fraud_dagster.assets.labels import FRAUD_LABELS, read_labels
from fraud_dagster.core.drift import reference_sample
from fraud_dagster.core.labels import (
    LABEL_MATURITY_DAYS,
    known_compromised_by,
    known_labels,
    label_coverage,
)
from fraud_dagster.core.metrics import (
    ThresholdObjective,
    evaluation_metrics,
    per_day_table,
    without_known_compromised,
)
from fraud_dagster.core.training import (
    BALANCING,
    MODELS,
    CandidateSettings,
    TrainingPlan,
    Window,
    candidate_names,
    train,
)
from fraud_dagster.jobs import RETRAIN_POOL
from fraud_dagster.metadata import as_table
from fraud_dagster.registry import TrainedVersion
from fraud_dagster.resources import AlertSink, DailyTables, ModelRegistry

_OBJECTIVE = ThresholdObjective()
REFERENCE_ROWS = 25_000
"""Rows of the training window kept, with their scores, as the drift reference."""


class FraudModelConfig(dg.Config):
    """The training window and the model search (the launchpad shows each field's description)."""

    as_of: str | None = Field(
        default=None,
        description="The day (ISO date) whose end the model is trained as of: it tests on the"
        " newest window whose labels have matured by then (ending LABEL_MATURITY_DAYS before it)"
        " and trains on the window that ends LABEL_MATURITY_DAYS before the test window, with the"
        " labels known then. Default: the newest day of fraud_labels materialised.")
    train_days: int = Field(default=7, description="Days in the training window (and in each"
                            " validation fold's training part).")
    test_days: int = Field(default=7, description="Days in the test window (and in each validation"
                           " fold's validation part).")
    validation_folds: int = Field(default=4, description="Validation folds the candidates are"
                                  " compared on, sliding back `test_days` at a time.")
    models: list[str] = Field(default=list(MODELS), description="Classifiers to try, among "
                              + ", ".join(MODELS) + ". Fewer makes the search faster.")
    balancing: list[str] = Field(default=list(BALANCING), description="Class-imbalance treatments"
                                 " to try with each model, among " + ", ".join(BALANCING) + ".")
    threshold_objective: Literal["cost", "recall_at_precision", "alert_budget"] = Field(
        default=_OBJECTIVE.kind,
        description="How the decision threshold is chosen on the validation scores: `cost` (the"
        " cheapest, by `cost_missed_fraud` and `cost_false_alarm`), `recall_at_precision` (the"
        " best recall at `target_precision`) or `alert_budget` (at most `alert_budget_cards`"
        " cards flagged a day).")
    cost_missed_fraud: float = Field(default=_OBJECTIVE.cost_missed_fraud,
                                     description="Cost of a missed fraud (objective `cost`).")
    cost_false_alarm: float = Field(default=_OBJECTIVE.cost_false_alarm,
                                    description="Cost of a false alarm (objective `cost`).")
    target_precision: float = Field(default=_OBJECTIVE.target_precision,
                                    description="Precision to reach (objective"
                                    " `recall_at_precision`; also marked on the PR curve).")
    alert_budget_cards: int = Field(default=_OBJECTIVE.daily_cards,
                                    description="For `alert_budget`: at most this many cards"
                                    " flagged a day (the investigators' capacity).")
    seed: int = Field(default=42, description="Random seed of the models, the resampling and the"
                      " drift reference sample.")

    def objective(self) -> ThresholdObjective:
        return ThresholdObjective(
            kind=self.threshold_objective,
            cost_missed_fraud=self.cost_missed_fraud,
            cost_false_alarm=self.cost_false_alarm,
            target_precision=self.target_precision,
            daily_cards=self.alert_budget_cards,
        )


def newest_labelled_day(instance: dg.DagsterInstance) -> dt.date:
    """The newest day whose label reports are materialised: the default ``as_of``."""
    days = instance.get_materialized_partitions(FRAUD_LABELS)
    if not days:
        raise dg.Failure("fraud_labels has no materialised day yet: run ingest_job first")
    return dt.date.fromisoformat(max(days))


def plan_of(config: FraudModelConfig, as_of: dt.date, folds: int) -> TrainingPlan:
    return TrainingPlan.mature_at(as_of, config.train_days, config.test_days, folds,
                                  LABEL_MATURITY_DAYS)


def labelled_features(daily_tables: DailyTables, window: Window, as_of: dt.date
                      ) -> tuple[pl.DataFrame, dict[str, int]]:
    """Features of the window's days with ``tx_fraud`` as known at the end of ``as_of``; rows
    whose label is still unknown are left out and counted (``label_coverage``)."""
    features = daily_tables.read_days(FEATURES, window.days())
    labels = known_labels(features, read_labels(daily_tables, window.first, as_of), as_of)
    return (features.with_columns(tx_fraud=labels).filter(pl.col("tx_fraud").is_not_null()),
            label_coverage(labels))


def _png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


@dg.asset(
    deps=[FEATURES, FRAUD_LABELS],
    io_manager_key="model_io_manager",
    group_name="model",
    kinds={"scikitlearn", "xgboost", "mlflow"},
    pool=RETRAIN_POOL,
)
def fraud_model(
    context: dg.AssetExecutionContext,
    config: FraudModelConfig,
    daily_tables: DailyTables,
    model_registry: ModelRegistry,
    mlflow: dg.ResourceParam[MlFlow],
) -> dg.Output[TrainedVersion]:
    """The best of the candidate classifiers on prequential validation folds, refitted on the
    training window, with its decision threshold; logged to MLflow, registered as `challenger`.
    Trained and validated only on the labels known on the eve of its test window."""
    # `mlflow` is not called: asking for it opens this Dagster run's MLflow run (dagster-mlflow),
    # the one model_registry.register logs into.
    as_of = (dt.date.fromisoformat(config.as_of) if config.as_of
             else newest_labelled_day(context.instance))
    plan = plan_of(config, as_of, config.validation_folds)
    labelled, coverage = labelled_features(daily_tables, plan.labelled_window(),
                                           plan.training_labels_as_of())
    candidates = candidate_names(config.models, config.balancing)
    context.log.info(f"model search: {len(candidates)} candidates x {plan.folds} validation folds"
                     f" on {plan.labelled_window()} ({labelled.height} labelled rows)")
    trained = train(
        labelled,
        plan,
        candidates=candidates,
        objective=config.objective(),
        settings=CandidateSettings(seed=config.seed),
        progress=context.log.info,
    )
    train_days = labelled.filter(pl.col("tx_datetime").dt.date().is_between(
        plan.train_window().first, plan.train_window().last))
    reference = reference_sample(train_days.with_columns(score=trained.predict_proba(train_days)),
                                 REFERENCE_ROWS, config.seed)
    registered = model_registry.register(trained, reference, {"dagster_run_id": context.run.run_id})
    return dg.Output(
        registered,
        metadata={
            "candidate": trained.candidate,
            "validation_average_precision": trained.validation_average_precision,
            "threshold": trained.threshold,
            "as_of": str(plan.as_of()),
            "train_window": str(plan.train_window()),
            "test_window": str(plan.test_window()),
            "training_labels_as_of": str(plan.training_labels_as_of()),
            **{f"training_labels_{k}": v for k, v in coverage.items()},
            "training_rows": trained.training_rows,
            "training_frauds": trained.training_frauds,
            "model_selection": as_table(trained.selection),
            "mlflow_run_id": registered.run_id,
            "registered_version": registered.version,
        },
    )


class EvaluationConfig(dg.Config):
    min_average_precision_gain: float = Field(
        default=0.0,
        description="The challenger becomes champion only if its test average precision beats the"
        " champion's by more than this.")
    card_precision_k: int = Field(default=100, description="The investigators' daily capacity:"
                                  " the k of card precision@k.")


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no champion"


def _curve(scored: pl.DataFrame):
    return scored["tx_fraud"].to_numpy(), scored["score"].to_numpy()


def _scored(frame: pl.DataFrame, scores) -> pl.DataFrame:
    return frame.select("transaction_id", "tx_datetime", "customer_id", "tx_fraud").with_columns(
        score=pl.Series(scores, dtype=pl.Float64)
    )


@dg.asset(
    deps=[FEATURES, FRAUD_LABELS],
    group_name="model",
    kinds={"mlflow"},
    pool=RETRAIN_POOL,
    check_specs=[dg.AssetCheckSpec(
        "new_model_is_champion", asset="model_evaluation",
        description="The evaluated model is the champion: it beat the previous one (or there was"
        " none). When not (severity WARN: a refusal is the rule working, the run succeeds), the"
        " description says why and bento_model re-exports nothing.",
    )],
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    daily_tables: DailyTables,
    model_registry: ModelRegistry,
    alerts: AlertSink,
    fraud_model: TrainedVersion,
):
    """The new model on its held-out test window next to the current champion on the same days;
    the new model is promoted to `champion` when it wins by the documented rule. One row per
    test day."""
    challenger_version, challenger_run = fraud_model.version, fraud_model.run_id
    trained = fraud_model.trained
    window = trained.plan.test_window()
    test, coverage = labelled_features(daily_tables, window, trained.plan.as_of())
    # The Handbook's protocol: each test day without the cards a fraud team knows compromised
    # by then (a fraud reported by the day before, since the training window's first day).
    since = trained.plan.train_window().first
    known = known_compromised_by(read_labels(daily_tables, since, window.last), window.days(), since)
    rows_before, test = test.height, without_known_compromised(test, known)
    if test.height == 0 or test["tx_fraud"].sum() == 0:
        raise dg.Failure(f"the test window {window} has no labelled fraud to evaluate on")
    scored = _scored(test, trained.predict_proba(test))
    k = config.card_precision_k
    metrics = evaluation_metrics(scored, trained.threshold, trained.objective, k)
    curves = {f"challenger v{challenger_version}": _curve(scored)}
    thresholds = {f"challenger v{challenger_version}": trained.threshold}

    champion_version = model_registry.champion_version()
    champion_metrics = None
    already_champion = champion_version == challenger_version
    if champion_version is None:
        promoted, reason = True, "there is no champion yet"
    elif already_champion:
        promoted, reason = False, f"v{challenger_version} is already the champion"
    else:
        champion = model_registry.load(champion_version)
        champion_scored = _scored(test, champion.predict_proba(test))
        champion_metrics = evaluation_metrics(champion_scored, champion.threshold,
                                              trained.objective, k)
        curves[f"champion v{champion_version}"] = _curve(champion_scored)
        thresholds[f"champion v{champion_version}"] = champion.threshold
        gain = metrics["average_precision"] - champion_metrics["average_precision"]
        promoted = gain > config.min_average_precision_gain
        reason = (
            f"test average precision {metrics['average_precision']:.4f} vs champion"
            f" v{champion_version}'s {champion_metrics['average_precision']:.4f} on {window}:"
            f" gain {gain:+.4f} {'>' if promoted else '<='} required {config.min_average_precision_gain}"
        )
    if promoted:
        # Compare-and-set: refuse if another run moved the champion since it was read above.
        promoted, found = model_registry.promote_if_champion_is(challenger_version,
                                                                champion_version)
        if not promoted:
            reason = (f"the champion moved from {_v(champion_version)} to {_v(found)} while"
                      f" v{challenger_version} was evaluated (another run promoted it): not"
                      f" promoted; its figures were {reason}")
    refused = not promoted and not already_champion
    if refused:
        alerts.send("challenger_refused", f"fraud_model v{challenger_version} not promoted: {reason}",
                    challenger_version=challenger_version, champion_version=champion_version,
                    run_id=context.run.run_id, test_window=str(window))
    context.log.info(f"v{challenger_version} {'promoted' if promoted else 'not promoted'}: {reason}")

    from fraud_dagster.core import plots  # matplotlib: imported by the run that draws, not on load

    pictures = {
        "precision_recall_curve": plots.pr_curve_png(curves, trained.objective.target_precision),
        "roc_curve": plots.roc_curve_png(curves),
        "threshold_cost_curve": plots.cost_curve_png(curves, thresholds, trained.objective),
    }
    per_day = per_day_table(scored, trained.threshold, trained.objective, k)
    model_registry.log_evaluation(challenger_run, metrics, per_day, pictures)
    compared = {"challenger": metrics, **({"champion": champion_metrics} if champion_metrics else {})}
    yield dg.Output(
        per_day,
        metadata={
            **{name: float(value) for name, value in metrics.items()},
            "test_window": str(window),
            "test_labels_as_of": str(trained.plan.as_of()),
            **{f"test_labels_{k}": v for k, v in coverage.items()},
            "known_compromised_transactions_removed": rows_before - test.height,
            "challenger_version": challenger_version,
            "champion_version": challenger_version if promoted else (champion_version or ""),
            "promoted": promoted,
            "refused": refused,
            "reason": reason,
            "comparison": as_table(
                pl.DataFrame([{"model": who, **m} for who, m in compared.items()])),
            "per_day": as_table(per_day),
            **{name: _png_markdown(png, name) for name, png in pictures.items()},
        },
    )
    yield dg.AssetCheckResult(
        check_name="new_model_is_champion",
        passed=not refused,
        severity=dg.AssetCheckSeverity.WARN,
        description=reason,
        metadata={"challenger_version": challenger_version,
                  "champion_version": champion_version or "", "refused": refused},
    )
