"""landing_sensor end to end: files in, run requests out, partitions materialised, nothing twice."""

import datetime as dt

import dagster as dg

from fraud_dagster.partitions import partition_range_tags
from fraud_dagster.resources import LandingSource, SimulatorSource
from fraud_dagster.sensors import contiguous_ranges, landing_sensor
from fraud_dagster_tests.conftest import read_partition
from fraud_dagster_tests.landing_files import (
    write_empty_file,
    write_garbage_csv,
    write_handbook_csv,
    write_parquet,
    write_truncated_parquet,
)

DAY = dt.date(2025, 3, 4)


def evaluate(instance, landing_dir):
    context = dg.build_sensor_context(
        instance=instance,
        resources={"transaction_source": LandingSource(landing_dir=str(landing_dir))},
    )
    return landing_sensor(context)


def run_requests(result) -> list[dg.RunRequest]:
    return list(result) if isinstance(result, list) else []


def test_a_landed_file_is_ingested_once(landing_defs, instance, landing_dir, assets_dir):
    write_handbook_csv(landing_dir, DAY, n=150)
    (request,) = run_requests(evaluate(instance, landing_dir))
    assert request.tags["dagster/asset_partition_range_start"] == DAY.isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == DAY.isoformat()
    assert not list(landing_dir.glob("*.csv"))
    assert (landing_dir / "_accepted" / DAY.isoformat() / f"{DAY}.csv").exists()

    result = landing_defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, tags=request.tags
    )
    assert result.success
    assert instance.get_materialized_partitions(dg.AssetKey("validated_transactions")) == {
        DAY.isoformat()
    }
    assert read_partition(assets_dir, "validated_transactions", DAY).height == 150

    again = evaluate(instance, landing_dir)
    assert isinstance(again, dg.SkipReason)


def test_contiguous_days_become_one_backfill_run(instance, landing_dir):
    days = [DAY + dt.timedelta(days=i) for i in (0, 1, 2, 3, 7, 8)]
    for day in days:
        write_parquet(landing_dir, day, n=20)
    requests = run_requests(evaluate(instance, landing_dir))
    ranges = sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests
    )
    assert ranges == [
        (str(days[0]), str(days[3])),
        (str(days[4]), str(days[5])),
    ]
    assert len({r.run_key for r in requests}) == 2


def test_bad_files_are_rejected_with_a_reason_and_good_ones_still_ingested(instance, landing_dir):
    good = write_handbook_csv(landing_dir, DAY, n=10)
    bad = {
        write_empty_file(landing_dir, DAY).name: "empty",
        write_truncated_parquet(landing_dir, DAY).name: "cannot read",
        write_garbage_csv(landing_dir, DAY).name: "cannot read",
        write_handbook_csv(landing_dir, dt.date(2024, 12, 31), n=5).name: "outside the partitions",
        write_handbook_csv(landing_dir, dt.date(2030, 1, 1), n=5).name: "outside the partitions",
    }
    (request,) = run_requests(evaluate(instance, landing_dir))
    assert request.tags["fraud/landing_files"] == good.name
    rejected = landing_dir / "_rejected"
    for name, reason in bad.items():
        assert (rejected / name).exists()
        assert reason in (rejected / f"{name}.reason.txt").read_text()
    assert isinstance(evaluate(instance, landing_dir), dg.SkipReason)


def test_a_second_file_for_a_day_reruns_that_day_with_both(landing_defs, instance, landing_dir, assets_dir):
    write_handbook_csv(landing_dir, DAY, n=10)
    (first,) = run_requests(evaluate(instance, landing_dir))
    write_handbook_csv(landing_dir, DAY, n=30, name=f"late_{DAY}.csv")
    (second,) = run_requests(evaluate(instance, landing_dir))
    assert first.run_key != second.run_key
    result = landing_defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, tags=second.tags, raise_on_error=False
    )
    # Both files hold the same first 10 transactions: the repeats are quarantined, not lost,
    # and a day whose rows are 25% repeats fails its blocking check.
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 40
    assert read_partition(assets_dir, "validated_transactions", DAY).height == 30
    assert read_partition(assets_dir, "quarantined_transactions", DAY).height == 10
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"quarantine_rate_below_threshold"}


def test_a_file_with_the_same_name_does_not_overwrite_an_ingested_one(instance, landing_dir):
    write_handbook_csv(landing_dir, DAY, n=10)
    evaluate(instance, landing_dir)
    write_handbook_csv(landing_dir, DAY, n=12)
    evaluate(instance, landing_dir)
    assert len(list((landing_dir / "_accepted" / DAY.isoformat()).iterdir())) == 2


def test_the_sensor_skips_when_the_source_is_the_simulator(instance):
    context = dg.build_sensor_context(
        instance=instance, resources={"transaction_source": SimulatorSource()}
    )
    assert "simulator" in landing_sensor(context).skip_message


def test_contiguous_ranges():
    d = dt.date(2025, 1, 1)
    days = [d + dt.timedelta(days=i) for i in (5, 0, 1, 1, 3)]
    assert contiguous_ranges(days) == [
        (d, d + dt.timedelta(days=1)),
        (d + dt.timedelta(days=3), d + dt.timedelta(days=3)),
        (d + dt.timedelta(days=5), d + dt.timedelta(days=5)),
    ]
    assert partition_range_tags(d, d)["dagster/asset_partition_range_start"] == "2025-01-01"
