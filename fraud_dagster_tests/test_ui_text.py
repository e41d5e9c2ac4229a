"""What the Dagster UI shows a user: descriptions (Markdown, not reStructuredText), launchpad
config fields with their descriptions, the prediction log in the catalog, the model assets' pool."""

import re
from pathlib import Path

import dagster as dg
import pytest
from dagster._config import ConfigType, ConfigTypeKind

from fraud_dagster.definitions import defs
from fraud_dagster.jobs import RETRAIN_POOL

REPO = Path(__file__).resolve().parents[1]
USER_JOBS = ("ingest_job", "daily_job", "retrain_job", "landing_rejections_job")
USER_RESOURCES = ("transaction_source", "drift_policy")
"""Resources whose fields a user edits in the launchpad (the others are paths set by code)."""


def _descriptions():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        yield f"asset {key.to_user_string()}", graph.get(key).description
    for check in graph.asset_check_keys:
        yield f"check {check.name}", graph.get_check_spec(check).description
    for job in (*USER_JOBS, "__ASSET_JOB"):
        yield f"job {job}", defs.resolve_job_def(job).description
        resources = defs.resolve_job_def(job).run_config_schema.config_type.fields["resources"]
        for name, field in resources.config_type.fields.items():
            yield f"resource {name} (job {job})", field.description
    for sensor in defs.sensors:
        yield f"sensor {sensor.name}", sensor.description
    for schedule in defs.schedules:
        yield f"schedule {schedule.name}", schedule.description


def test_descriptions_are_markdown_not_restructuredtext():
    """The UI renders descriptions as Markdown: ``x`` shows its backticks, and a bare
    <placeholder> outside a code span is taken for an HTML tag and vanishes."""
    double = [where for where, text in _descriptions() if text and "``" in text]
    assert double == []
    tags = [where for where, text in _descriptions()
            if text and re.search(r"<[A-Za-z][^>]*>", re.sub(r"`[^`]*`", "", text))]
    assert tags == []


def _fields(config_type: ConfigType, path: str):
    """Every (path, field) of a config type, nested shapes and lists included."""
    if config_type.kind in (ConfigTypeKind.ARRAY, ConfigTypeKind.NONEABLE):
        yield from _fields(config_type.inner_type, path + "[]")
    elif ConfigTypeKind.has_fields(config_type.kind):
        for name, field in config_type.fields.items():
            yield f"{path}.{name}", field
            yield from _fields(field.config_type, f"{path}.{name}")


@pytest.mark.parametrize("job", USER_JOBS)
def test_every_launchpad_field_a_user_sets_has_a_description(job):
    root = defs.resolve_job_def(job).run_config_schema.config_type
    ops = root.fields["ops"].config_type
    fields = [f for name, op in ops.fields.items() for f in _fields(op.config_type, f"ops.{name}")]
    resources = root.fields["resources"].config_type.fields
    for name in USER_RESOURCES:
        if name in resources:
            fields += list(_fields(resources[name].config_type, f"resources.{name}"))
    # Each op's own `config` has fields; the `config` wrapper itself is Dagster's.
    set_by_user = [(path, field) for path, field in fields if not path.endswith(".config")]
    assert set_by_user, f"{job}: no config fields found"
    missing = [path for path, field in set_by_user if not field.description]
    assert missing == []


def test_fraud_model_config_descriptions_reach_the_launchpad():
    ops = defs.resolve_job_def("retrain_job").run_config_schema.config_type.fields["ops"]
    config = ops.config_type.fields["fraud_model"].config_type.fields["config"].config_type
    assert set(config.fields) >= {"as_of", "train_days", "test_days", "validation_folds",
                                  "models", "balancing", "seed"}
    assert "labels" in config.fields["as_of"].description


def test_the_prediction_log_is_in_the_catalog_as_an_external_asset():
    node = defs.resolve_asset_graph().get(dg.AssetKey("prediction_log"))
    assert node.is_external and not node.is_materializable
    assert node.group_name == "serving"
    assert "bento/service.py" in node.description
    assert node.partitions_def is not None


def test_every_model_asset_is_in_the_retrain_pool_counted_per_run(tmp_path):
    """A Materialize of the model group from the UI is one retrain at a time too: its runs do
    not carry retrain_job's tag, but its assets are in the pool that dagster.yaml counts per run."""
    from dagster._core.instance.config import PoolGranularity

    graph = defs.resolve_asset_graph()
    model = dg.AssetSelection.groups("model").resolve(graph)
    assert model >= {dg.AssetKey("fraud_model"), dg.AssetKey("model_evaluation"),
                     dg.AssetKey("bento_model")}
    for key in model:
        assert graph.get(key).pools == {RETRAIN_POOL}
    others = graph.get_all_asset_keys() - model
    assert all(not graph.get(key).pools for key in others)

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.pool_granularity == PoolGranularity.RUN
        assert pools.default_pool_limit == 1


@pytest.mark.slow  # loads the definitions in a new process
@pytest.mark.parametrize("first", [
    "fraud_dagster.definitions",
    "fraud_dagster.assets.model",  # what `fraud-dagster run` imports first
    "fraud_dagster.resources",
    "fraud_dagster.jobs",
])
def test_loading_the_definitions_prints_no_beta_or_preview_warning_blocks(tmp_path, first):
    """Eight blocks of them used to come before a run's first line, whichever module a process
    imports first (the quick start printed them again when the CLI imported an asset module
    before the definitions); other warnings still show."""
    import os
    import subprocess
    import sys

    code = (f"import warnings; import {first}; from fraud_dagster.definitions import defs;"
            " warnings.warn('still shown', UserWarning)")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "FRAUD_DATA_DIR": str(tmp_path / "data"),
           "PYTHONWARNINGS": "default"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, check=True)
    assert "BetaWarning" not in result.stderr and "PreviewWarning" not in result.stderr
    assert "UserWarning: still shown" in result.stderr
