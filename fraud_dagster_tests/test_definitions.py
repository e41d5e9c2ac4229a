import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from upath import UPath

from fraud_dagster.definitions import defs
from fraud_dagster.io_managers import write_parquet_atomically

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} >= {
        "raw_transactions",
        "validated_transactions",
        "quarantined_transactions",
        "transaction_features",
        "feature_state",
        "fraud_model",
        "model_evaluation",
    }
    assert defs.resolve_sensor_def("landing_sensor")
    assert {c.name for c in graph.asset_check_keys} == {
        "schema_valid",
        "quarantine_rate_below_threshold",
        "transaction_ids_unique",
        "timestamps_inside_day",
        "new_model_is_champion",
    }


def test_daily_assets_start_on_a_fixed_date_and_backfill_in_one_run():
    graph = defs.resolve_asset_graph()
    for key in dg.AssetSelection.groups("transactions", "features").resolve(graph):
        node = graph.get(key)
        assert node.partitions_def.get_first_partition_key() == "2025-01-01"
        assert node.backfill_policy == dg.BackfillPolicy.single_run()


def test_a_ui_backfill_of_a_date_range_targets_exactly_those_days():
    """What the UI's Materialize with a date range launches (assets and partition names): every
    daily asset gets those days, none of the days after them (features read their history
    window outside Dagster's partition mapping for this reason)."""
    import time

    from dagster._core.execution.asset_backfill import AssetBackfillData

    graph = defs.resolve_asset_graph()
    daily = sorted(dg.AssetSelection.groups("transactions", "features", "monitoring")
                   .resolve(graph))
    days = [f"2025-04-{d}" for d in range(24, 31)] + [f"2025-05-0{d}" for d in range(1, 8)]
    with dg.instance_for_test() as instance:
        backfill = AssetBackfillData.from_asset_partitions(
            asset_graph=graph, partition_names=days, asset_selection=daily,
            dynamic_partitions_store=instance, backfill_start_timestamp=time.time(),
            all_partitions=False)
    targeted = backfill.target_subset.partitions_subsets_by_asset_key
    assert set(targeted) == set(daily)
    for key, subset in targeted.items():
        assert sorted(subset.get_partition_keys()) == days, key.to_user_string()


def test_the_ui_shows_the_pandera_schemas():
    job = defs.resolve_job_def("ingest_job")
    node_def = job.graph.node_dict["validated_transactions"].definition
    schema = node_def.output_dict["validated_transactions"].dagster_type.metadata["schema"].schema
    columns = {c.name: c for c in schema.columns}
    assert "tx_amount" in columns
    assert not columns["tx_amount"].constraints.nullable


def test_jobs_never_mix_partitionings():
    graph = defs.resolve_asset_graph()
    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__ASSET_JOB"):  # Dagster's implicit job behind the UI's buttons
            continue
        keys = job.asset_layer.executable_asset_keys
        partitionings = {graph.get(k).partitions_def for k in keys}
        assert len(partitionings) <= 1, job.name


def test_an_interrupted_write_leaves_the_previous_file(tmp_path):
    path = UPath(tmp_path) / "raw_transactions" / "2025-01-01.parquet"
    good = pl.DataFrame({"a": [1, 2, 3]})
    write_parquet_atomically(good, path)

    class Exploding(pl.DataFrame):
        def write_parquet(self, file, *args, **kwargs):
            file.write(b"PAR1 half a file")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomically(Exploding({"a": [9]}), path)
    assert pl.read_parquet(path).equals(good)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.slow  # loads the definitions in a new process
def test_loading_the_definitions_imports_no_model_library():
    """Every run, step and code server loads the definitions; training, plotting and saving models
    import scikit-learn, imbalanced-learn, XGBoost, matplotlib and skops when they run, not when
    the definitions are loaded (3.9-4.6 s to load them here, against 7.2-10.2 s with them)."""
    probe = ("import sys, fraud_dagster.definitions;"
             " print(sorted({m.split('.')[0] for m in sys.modules}"
             " & {'sklearn', 'imblearn', 'xgboost', 'matplotlib', 'skops'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow  # runs the README command in a new process
def test_the_readme_command_runs_the_pipeline_into_dagster_home(tmp_path, monkeypatch):
    """What the README's quick start does, in a copy of the project folder's instance config."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "FRAUD_DATA_DIR": str(home / "data"), "DAGSTER_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "fraud_dagster.cli", "run", "--start", "2025-01-01", "--end", "2025-01-03",
         "--no-train"],
        cwd=home, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "succeeded" in done.stdout
    files = sorted(p.name for p in (home / "data" / "assets" / "validated_transactions").iterdir())
    assert files == ["2025-01-01.parquet", "2025-01-02.parquet", "2025-01-03.parquet"]
    assert (home / "data" / "dagster" / "storage").is_dir()
    monkeypatch.chdir(home)  # dagster.yaml's storage paths are relative to the project folder
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.is_success
        assert instance.get_materialized_partitions(dg.AssetKey("raw_transactions")) == {
            "2025-01-01", "2025-01-02", "2025-01-03"
        }
