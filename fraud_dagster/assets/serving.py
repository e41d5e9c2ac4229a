"""The champion, exported into the BentoML model store with everything the online service needs."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from fraud_dagster import registry
from fraud_dagster.assets.features import FEATURE_STATE
from fraud_dagster.jobs import RETRAIN_POOL
from fraud_dagster.resources import BentoStore, DailyTables, ModelRegistry
from fraud_dagster.serving.scoring import save_model_dir

BENTO_MODEL_NAME = "fraud_model"


class BentoModelConfig(dg.Config):
    state_date: str | None = Field(
        default=None,
        description="Day (ISO date) whose end-of-day `feature_state` is bundled: the service"
        " computes exact features for transactions of the next day. Default: the latest"
        " materialised day.")


def _state_date(instance: dg.DagsterInstance, config: BentoModelConfig) -> dt.date:
    if config.state_date:
        return dt.date.fromisoformat(config.state_date)
    days = instance.get_materialized_partitions(FEATURE_STATE)
    if not days:
        raise dg.Failure("feature_state has no materialised day yet: run ingest_job first")
    return dt.date.fromisoformat(max(days))


@dg.asset(
    deps=["model_evaluation", FEATURE_STATE],
    group_name="model",
    kinds={"bentoml"},
    pool=RETRAIN_POOL,
    output_required=False,  # nothing is re-exported after a refused challenger
)
def bento_model(
    context: dg.AssetExecutionContext,
    config: BentoModelConfig,
    daily_tables: DailyTables,
    model_registry: ModelRegistry,
    bento_store: BentoStore,
) -> Iterator[dg.MaterializeResult]:
    """The MLflow `champion` in the BentoML model store as `fraud_model`: its pipeline,
    threshold and feature list, the `feature_state` of one day, the library versions, and labels
    naming its Dagster run, MLflow run, registered version and training window.

    Runs after `model_evaluation`; when this run's evaluation refused its challenger the
    champion is unchanged and nothing is exported (no materialisation, the step succeeds)."""
    import bentoml

    evaluation = context.instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    if evaluation is not None and evaluation.run_id == context.run.run_id:
        refused = evaluation.asset_materialization.metadata.get("refused")
        if refused is not None and refused.value:
            context.log.info("model_evaluation refused the challenger: the champion is"
                             " unchanged, nothing re-exported")
            return

    champion = model_registry.champion()
    if champion is None:
        raise dg.Failure("there is no champion model yet: materialise fraud_model and"
                         " model_evaluation first")
    day = _state_date(context.instance, config)
    state = daily_tables.read_days(FEATURE_STATE, [day])
    if state.height == 0:
        raise dg.Failure(f"feature_state of {day} has no customers or terminals: the service"
                         " would treat every one as unknown. Export the state of an ingested day"
                         " (bento_model's state_date).")
    lineage = {
        "registered_model": registry.REGISTERED_MODEL,
        "registered_version": champion.version,
        "mlflow_run_id": champion.run_id,
        "candidate": champion.tags.get("candidate", ""),
        "train_window": champion.tags.get("train_window", ""),
        "test_window": champion.tags.get("test_window", ""),
        "training_dagster_run_id": champion.tags.get("dagster_run_id", ""),
        "export_dagster_run_id": context.run.run_id,
    }
    with bentoml.models.create(
        BENTO_MODEL_NAME,
        labels={**lineage, "state_date": day.isoformat()},
        _model_store=bento_store.model_store(),
    ) as model:
        info = save_model_dir(
            Path(model.path), champion.pipeline, state, threshold=champion.threshold,
            feature_columns=champion.feature_columns, info=lineage,
        )
        # BentoML's model.yaml takes no null values: it would not load again.
        model.info.metadata.update({k: v for k, v in info.items() if v is not None})
    context.log.info(f"exported champion v{champion.version} with the state of {day}"
                     f" as {model.tag}")
    yield dg.MaterializeResult(metadata={
        "bentoml_tag": str(model.tag),
        "model_store": bento_store.home,
        "state_date": day.isoformat(),
        "state_rows": state.height,
        "threshold": champion.threshold,
        **{key: value for key, value in lineage.items() if key != "registered_model"},
        "libraries": dg.MetadataValue.json(info["libraries"]),
    })
