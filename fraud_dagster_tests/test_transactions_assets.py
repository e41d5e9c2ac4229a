"""The daily transaction assets, materialised for real into a temporary instance and data root."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from fraud_dagster.assets.transactions import validated_transactions
from fraud_dagster.core.labels import simulated_reports
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.definitions import make_definitions
from fraud_dagster.io_managers import PolarsParquetIOManager
from fraud_dagster.partitions import daily_partitions, partition_range_tags
from fraud_dagster.resources import LandingSource, local_resources
from fraud_dagster_tests.pipeline import read_partition, run_ingest
from fraud_dagster_tests.landing_files import corrupt_amounts, handbook_frame, land_accepted

FIRST, LAST = dt.date(2025, 1, 6), dt.date(2025, 1, 10)
DAILY_ASSETS = ("raw_transactions", "validated_transactions", "quarantined_transactions")


def test_a_range_of_days_is_one_run_with_one_file_per_asset_and_day(simulator_defs, instance, assets_dir):
    result = run_ingest(simulator_defs, instance, FIRST, LAST)
    assert result.success
    assert len(instance.get_runs()) == 1
    days = [FIRST + dt.timedelta(days=i) for i in range(5)]
    for asset in DAILY_ASSETS:
        assert sorted(p.name for p in (assets_dir / asset).iterdir()) == [f"{d}.parquet" for d in days]
        materialised = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert materialised == {d.isoformat() for d in days}


def test_raw_day_is_the_simulator_day(simulator_defs, instance, assets_dir):
    run_ingest(simulator_defs, instance, FIRST, LAST)
    # The simulator's day as delivered: each fraud with the report it will get (core.labels).
    expected = simulated_reports(Simulator(
        SimulatorConfig(n_customers=500, n_terminals=1_000, drift_start=dt.date(2025, 3, 1))
    ).day(LAST), seed=42)
    raw = read_partition(assets_dir, "raw_transactions", LAST)
    assert raw.drop("partition_date", "source", "parse_errors").equals(expected)
    assert read_partition(assets_dir, "validated_transactions", LAST).equals(expected)


def test_checks_pass_on_clean_days(simulator_defs, instance):
    result = run_ingest(simulator_defs, instance, FIRST, LAST)
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "schema_valid",
        "quarantine_rate_below_threshold",
        "transaction_ids_unique",
        "timestamps_inside_day",
    }
    assert all(e.passed for e in evaluations)


def test_raw_rows_are_validated_plus_quarantined_for_every_day(landing_defs, instance, assets_dir, landing_dir):
    land_accepted(landing_dir, FIRST, corrupt_amounts(handbook_frame(FIRST, 300), 4))
    land_accepted(landing_dir, LAST, handbook_frame(LAST, 300))
    assert run_ingest(landing_defs, instance, FIRST, LAST).success
    for day in (FIRST, LAST):
        raw = read_partition(assets_dir, "raw_transactions", day)
        valid = read_partition(assets_dir, "validated_transactions", day)
        bad = read_partition(assets_dir, "quarantined_transactions", day)
        assert raw.height == valid.height + bad.height
    assert read_partition(assets_dir, "quarantined_transactions", FIRST).height == 4
    # Days without files are materialised empty, not skipped.
    assert read_partition(assets_dir, "raw_transactions", FIRST + dt.timedelta(days=1)).height == 0


@dg.asset(partitions_def=validated_transactions.partitions_def, backfill_policy=dg.BackfillPolicy.single_run())
def downstream_of_validated(validated_transactions: pl.DataFrame) -> None:
    """Stands in for the features asset: it must not run when a blocking check fails."""


def test_a_failed_blocking_check_stops_downstream_assets(data_dir, assets_dir, landing_dir, instance):
    land_accepted(landing_dir, FIRST, corrupt_amounts(handbook_frame(FIRST, 100), 20))
    defs = dg.Definitions.merge(
        make_definitions(local_resources(data_dir, LandingSource(landing_dir=str(landing_dir)))),
        dg.Definitions(
            assets=[downstream_of_validated],
            jobs=[
                dg.define_asset_job(
                    "with_downstream",
                    selection=dg.AssetSelection.groups("transactions")
                    | dg.AssetSelection.assets(downstream_of_validated),
                )
            ],
        ),
    )
    result = defs.resolve_job_def("with_downstream").execute_in_process(
        instance=instance, tags=partition_range_tags(FIRST, FIRST), raise_on_error=False
    )
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"quarantine_rate_below_threshold"}
    assert not result.success
    assert instance.get_materialized_partitions(dg.AssetKey("downstream_of_validated")) == set()
    # The day itself is still recorded, quarantine included, for someone to look at.
    assert read_partition(assets_dir, "quarantined_transactions", FIRST).height == 20


def test_quarantine_threshold_is_configurable(landing_defs, instance, landing_dir):
    land_accepted(landing_dir, FIRST, corrupt_amounts(handbook_frame(FIRST, 100), 20))
    check_op = "validated_transactions_quarantine_rate_below_threshold"
    config = {"ops": {check_op: {"config": {"max_quarantine_rate": 0.25}}}}
    result = run_ingest(landing_defs, instance, FIRST, FIRST, run_config=config)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_the_checks_judge_the_stored_files(simulator_defs, instance, assets_dir):
    """A stored day that was tampered with after validation fails the checks that read it back."""
    assert run_ingest(simulator_defs, instance, FIRST, LAST).success
    path = assets_dir / "validated_transactions" / f"{LAST}.parquet"
    good = pl.read_parquet(path)
    tampered = pl.concat(
        [
            good,
            good.head(3),  # repeated ids
            good.head(2).with_columns(  # a later day's rows and a negative amount
                transaction_id=pl.col("transaction_id") + 500_000,
                tx_datetime=pl.col("tx_datetime") + dt.timedelta(days=3),
                tx_amount=pl.lit(-1.0),
            ),
        ]
    )
    tampered.write_parquet(path)
    checks_only = dg.define_asset_job(
        "checks_only", selection=dg.AssetSelection.checks_for_assets("validated_transactions")
    )
    defs = dg.Definitions.merge(simulator_defs, dg.Definitions(jobs=[checks_only]))
    result = defs.resolve_job_def("checks_only").execute_in_process(
        instance=instance, tags=partition_range_tags(LAST, LAST), raise_on_error=False
    )
    verdicts = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {name for name, e in verdicts.items() if not e.passed} == {
        "schema_valid",
        "transaction_ids_unique",
        "timestamps_inside_day",
    }
    assert verdicts["transaction_ids_unique"].metadata["repeated_ids"].value == 3
    assert verdicts["timestamps_inside_day"].metadata["rows_outside_their_day"].value == 2


def _store_days(base_path, frame: pl.DataFrame, first: dt.date, last: dt.date):
    """What a single-run backfill of first..last does with an asset's frame."""
    context = dg.build_output_context(
        asset_key="daily_asset",
        definition_metadata={"partition_expr": "day"},
        asset_partitions_def=daily_partitions,
        asset_partition_key_range=dg.PartitionKeyRange(first.isoformat(), last.isoformat()),
    )
    PolarsParquetIOManager(base_path=str(base_path)).handle_output(context, frame)
    return base_path / "daily_asset"


def test_each_day_file_keeps_its_rows_in_order_whatever_the_frame_order(tmp_path):
    days = [FIRST + dt.timedelta(days=i) for i in range(3)]
    day_by_day = pl.DataFrame({"day": [days[0]] * 2 + [days[2]] * 3, "x": [1, 2, 3, 4, 5]})
    interleaved = day_by_day[[2, 0, 3, 1, 4]]
    for name, frame in (("day_by_day", day_by_day), ("interleaved", interleaved)):
        folder = _store_days(tmp_path / name, frame, days[0], days[-1])
        assert sorted(p.name for p in folder.iterdir()) == [f"{d}.parquet" for d in days]
        for day in days:  # days[1] has no rows: its file is empty
            stored = pl.read_parquet(folder / f"{day}.parquet")
            assert stored.equals(frame.filter(pl.col("day") == day))


def test_rows_outside_the_run_days_or_without_a_day_are_not_written(tmp_path):
    later = FIRST + dt.timedelta(days=5)
    for frame in (
        pl.DataFrame({"day": [FIRST, later], "x": [1, 2]}),
        pl.DataFrame({"day": [FIRST, None], "x": [1, 2]}, schema={"day": pl.Date, "x": pl.Int64}),
    ):
        with pytest.raises(dg.DagsterInvariantViolationError, match="1 rows of daily_asset"):
            _store_days(tmp_path, frame, FIRST, FIRST)
    assert not (tmp_path / "daily_asset").exists()


def test_an_id_validated_on_another_day_is_quarantined(landing_defs, instance, assets_dir, landing_dir):
    """The same transaction delivered on two days is validated once: the day validated first keeps it."""
    land_accepted(landing_dir, FIRST, handbook_frame(FIRST, 50))
    assert run_ingest(landing_defs, instance, FIRST, FIRST).success
    again = handbook_frame(FIRST, 50).head(2).with_columns(
        TX_DATETIME=pl.col("TX_DATETIME").str.replace(FIRST.isoformat(), LAST.isoformat())
    )
    land_accepted(landing_dir, LAST, pl.concat([handbook_frame(LAST, 98), again]))
    assert run_ingest(landing_defs, instance, LAST, LAST).success
    bad = read_partition(assets_dir, "quarantined_transactions", LAST)
    assert bad["quarantine_reason"].to_list() == [f"duplicate transaction_id (validated on {FIRST})"] * 2
    assert read_partition(assets_dir, "validated_transactions", LAST).height == 98
    assert read_partition(assets_dir, "validated_transactions", FIRST).height == 50
    # Re-running the first day does not count its own stored rows as duplicates.
    assert run_ingest(landing_defs, instance, FIRST, FIRST).success
    assert read_partition(assets_dir, "validated_transactions", FIRST).height == 50
