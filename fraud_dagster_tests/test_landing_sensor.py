"""landing_sensor end to end: files in, run requests out, runs executed as the daemon would, and
every file accounted for (ingested, rejected with a reason, or reported), nothing twice."""

import datetime as dt
import gzip
import os

import dagster as dg
import polars as pl
import pytest

from fraud_dagster.alerts import read_alerts
from fraud_dagster.partitions import partition_range_tags
from fraud_dagster.resources import LandingSource, SimulatorSource
from fraud_dagster.sensors import contiguous_ranges, landing_sensor
from fraud_dagster_tests.landing_daemon import Daemon
from fraud_dagster_tests.pipeline import read_partition
from fraud_dagster_tests.landing_files import (
    handbook_frame,
    settle,
    write_empty_file,
    write_garbage_csv,
    write_handbook_csv,
    write_list_column_parquet,
    write_parquet,
    write_truncated_parquet,
)

DAY = dt.date(2025, 3, 4)


def requests_of(result) -> list[dg.RunRequest]:
    if isinstance(result, dg.SensorResult):
        return list(result.run_requests or [])
    return list(result) if isinstance(result, list) else []


def ingest_requests(requests):
    return [r for r in requests if (r.job_name or "ingest_job") == "ingest_job"]


@pytest.fixture
def daemon(landing_defs, instance, landing_dir):
    return Daemon(landing_defs, instance, landing_dir)


@pytest.fixture
def alerts_file(data_dir):
    return data_dir / "alerts" / "alerts.jsonl"


def landing_alerts(alerts_file) -> list[dict]:
    return [a for a in read_alerts(alerts_file) if a["kind"].startswith("landing")]


def top_level(landing_dir) -> set[str]:
    return {p.name for p in landing_dir.iterdir()} - {"_accepted", "_rejected"}


def test_a_landed_file_is_ingested_once(daemon, instance, landing_dir, assets_dir):
    settle(write_handbook_csv(landing_dir, DAY, n=150))
    (request,) = ingest_requests(daemon.tick())
    assert request.tags["dagster/asset_partition_range_start"] == DAY.isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == DAY.isoformat()
    assert daemon.results[-1].success
    assert not list(landing_dir.glob("*.csv"))
    assert (landing_dir / "_accepted" / DAY.isoformat() / f"{DAY}.csv").exists()
    assert instance.get_materialized_partitions(dg.AssetKey("validated_transactions")) == {
        DAY.isoformat()
    }
    assert read_partition(assets_dir, "validated_transactions", DAY).height == 150
    assert daemon.tick() == []
    result, _ = daemon.evaluate()
    assert result.skip_reason is not None


def test_contiguous_days_become_one_backfill_run(daemon, landing_dir):
    days = [DAY + dt.timedelta(days=i) for i in (0, 1, 2, 3, 7, 8)]
    settle(*(write_parquet(landing_dir, day, n=20) for day in days))
    result, _ = daemon.evaluate()
    requests = requests_of(result)
    ranges = sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests
    )
    assert ranges == [
        (str(days[0]), str(days[3])),
        (str(days[4]), str(days[5])),
    ]
    assert len({r.run_key for r in requests}) == 2


def test_bad_files_are_rejected_with_a_reason_and_good_ones_still_ingested(daemon, landing_dir, alerts_file):
    good = write_handbook_csv(landing_dir, DAY, n=10)
    bad = {
        write_empty_file(landing_dir, DAY).name: "empty",
        write_truncated_parquet(landing_dir, DAY).name: "cannot read",
        write_garbage_csv(landing_dir, DAY).name: "cannot read",
        write_handbook_csv(landing_dir, dt.date(2024, 12, 31), n=5).name: "outside the partitions",
        write_handbook_csv(landing_dir, dt.date(2030, 1, 1), n=5).name: "outside the partitions",
    }
    settle(*landing_dir.iterdir())
    (request,) = ingest_requests(daemon.tick())
    assert request.tags["fraud/landing_files"] == good.name
    rejected = landing_dir / "_rejected"
    for name, reason in bad.items():
        assert (rejected / name).exists()
        assert reason in (rejected / f"{name}.reason.txt").read_text()
    assert {a["file"] for a in landing_alerts(alerts_file)} == set(bad)
    assert daemon.tick() == []
    assert top_level(landing_dir) == set()


def test_a_second_file_for_a_day_reruns_that_day_with_both(daemon, landing_dir, assets_dir):
    settle(write_handbook_csv(landing_dir, DAY, n=10))
    (first,) = daemon.tick()
    settle(write_handbook_csv(landing_dir, DAY, n=30, name=f"late_{DAY}.csv"))
    (second,) = daemon.tick()
    assert first.run_key != second.run_key
    result = daemon.results[-1]
    # Both files hold the same first 10 transactions: the repeats are quarantined, not lost,
    # and a day whose rows are 25% repeats fails its blocking check.
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 40
    assert read_partition(assets_dir, "validated_transactions", DAY).height == 30
    assert read_partition(assets_dir, "quarantined_transactions", DAY).height == 10
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"quarantine_rate_below_threshold"}
    assert sorted(p.name for p in (landing_dir / "_accepted" / DAY.isoformat()).iterdir()
                  if p.is_file()) == [f"{DAY}.csv", f"late_{DAY}.csv"]


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


# --- The findings, one test each ------------------------------------------------------


def test_an_exception_reading_one_file_rejects_that_file_alone(daemon, landing_dir, assets_dir):
    """A list-typed column used to crash every tick after moving the files sorted before it."""
    before = write_handbook_csv(landing_dir, DAY, n=10, name=f"a_{DAY}.csv")
    broken = write_list_column_parquet(landing_dir, DAY + dt.timedelta(days=1))
    after = write_handbook_csv(landing_dir, DAY + dt.timedelta(days=2), n=10, name="z.csv")
    settle(before, broken, after)
    daemon.tick()
    assert all(r.success for r in daemon.results)
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 10
    assert read_partition(assets_dir, "raw_transactions", DAY + dt.timedelta(days=2)).height == 10
    reason = (landing_dir / "_rejected" / f"{broken.name}.reason.txt").read_text()
    assert "tx_amount" in reason
    assert top_level(landing_dir) == set()


def test_a_file_still_being_written_is_taken_whole_once_it_settles(daemon, landing_dir, assets_dir):
    frame = handbook_frame(DAY, 2_000)
    text = frame.write_csv()
    cut = text.index("\n", len(text) // 2) + 1
    path = landing_dir / f"{DAY}.csv"
    path.write_text(text[:cut])  # a writer half way through: just modified
    assert daemon.tick() == []
    assert path.exists() and not (landing_dir / "_rejected").exists()
    with path.open("a") as handle:
        handle.write(text[cut:])
    settle(path)
    daemon.tick()
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 2_000


def test_a_recent_file_is_taken_only_once_a_second_tick_sees_it_unchanged(daemon, landing_dir, assets_dir):
    """A writer that pauses longer than the settle time is caught by the second look."""
    path = write_handbook_csv(landing_dir, DAY, n=10)
    settle(path, seconds=20)  # settled (> 5 s) but recent
    assert daemon.tick() == []
    with path.open("a") as handle:  # the writer resumes
        handle.write(handbook_frame(DAY, 20).tail(10).write_csv(include_header=False))
    settle(path, seconds=20)
    assert daemon.tick() == []  # changed since the last look
    assert daemon.tick() != []  # unchanged: taken
    assert not path.exists()
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 20


def test_the_settle_time_comes_from_the_environment(monkeypatch, tmp_path):
    from fraud_dagster.resources import transaction_source

    monkeypatch.setenv("FRAUD_SOURCE", "landing")
    monkeypatch.setenv("FRAUD_LANDING_DIR", str(tmp_path))
    assert transaction_source().settle_seconds == 5.0
    monkeypatch.setenv("FRAUD_LANDING_SETTLE_SECONDS", "42")
    assert transaction_source().settle_seconds == 42.0


def test_a_corrected_file_under_the_same_name_replaces_the_earlier_delivery(
    daemon, landing_dir, assets_dir
):
    settle(write_handbook_csv(landing_dir, DAY, n=10))
    (first,) = daemon.tick()
    corrected = handbook_frame(DAY, 12).with_columns(pl.col("TX_AMOUNT") + 1)
    corrected.write_csv(landing_dir / f"{DAY}.csv")
    settle(landing_dir / f"{DAY}.csv")
    (second,) = daemon.tick()
    assert second.run_key != first.run_key
    assert daemon.results[-1].success
    raw = read_partition(assets_dir, "raw_transactions", DAY)
    assert raw.height == 12
    assert raw["tx_amount"].to_list() == corrected["TX_AMOUNT"].to_list()
    day_dir = landing_dir / "_accepted" / DAY.isoformat()
    assert [p.name for p in day_dir.iterdir() if p.is_file()] == [f"{DAY}.csv"]
    assert len(list((day_dir / "_replaced").iterdir())) == 1
    # The same content again is not a new delivery: rejected, saying which file it repeats.
    write_handbook_csv(landing_dir, DAY, n=10, name="again.csv")
    corrected.write_csv(landing_dir / "again.csv")
    settle(landing_dir / "again.csv")
    daemon.tick()
    assert "same content" in (landing_dir / "_rejected" / "again.csv.reason.txt").read_text()


def test_evaluating_the_sensor_changes_nothing(daemon, landing_dir, alerts_file):
    """``dagster sensor preview`` (the UI's "test sensor") evaluates and launches nothing."""
    write_handbook_csv(landing_dir, DAY, n=10)
    write_empty_file(landing_dir, DAY)
    settle(*landing_dir.iterdir())
    before = {p.name: p.read_bytes() for p in landing_dir.iterdir()}
    result, _ = daemon.evaluate()
    assert len(requests_of(result)) == 2  # one ingest, one rejection
    assert {p.name: p.read_bytes() for p in landing_dir.iterdir()} == before
    assert not alerts_file.exists()
    # The real tick afterwards still takes everything.
    daemon.tick()
    assert top_level(landing_dir) == set()


def test_a_symlink_is_rejected_not_followed(daemon, landing_dir, tmp_path, assets_dir):
    outside = tmp_path / "secret.csv"
    outside.write_text("password=hunter2\n")
    good_outside = write_handbook_csv(tmp_path, DAY, n=10)
    (landing_dir / f"link_{DAY}.csv").symlink_to(outside)
    (landing_dir / f"good_link_{DAY}.csv").symlink_to(good_outside)
    settle(*landing_dir.iterdir())
    daemon.tick()
    rejected = landing_dir / "_rejected"
    for name in (f"link_{DAY}.csv", f"good_link_{DAY}.csv"):
        assert (rejected / name).is_symlink()
        reason = (rejected / f"{name}.reason.txt").read_text()
        assert "symbolic link" in reason and "hunter2" not in reason
    assert not (assets_dir / "raw_transactions").exists()
    assert outside.read_text() == "password=hunter2\n" and good_outside.exists()


def test_hidden_files_gz_and_directories_are_each_accounted_for(daemon, landing_dir, assets_dir, alerts_file):
    hidden = landing_dir / f".{DAY}.csv"
    handbook_frame(DAY, 5).write_csv(hidden)
    (landing_dir / f"{DAY}.csv.gz").write_bytes(gzip.compress(handbook_frame(DAY, 7).write_csv().encode()))
    (landing_dir / "folder.csv").mkdir()
    (landing_dir / "folder.csv" / "inside.csv").write_text("x\n")
    (landing_dir / "notes.txt").write_text("hello\n")
    settle(*landing_dir.iterdir())
    daemon.tick()
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 7
    assert (landing_dir / "_rejected" / "folder.csv" / "inside.csv").exists()
    assert "directory" in (landing_dir / "_rejected" / "folder.csv.reason.txt").read_text()
    assert "not a landing file" in (landing_dir / "_rejected" / "notes.txt.reason.txt").read_text()
    # A hidden name is how a writer marks a file in progress: left alone, but reported once it
    # has not changed for long.
    assert hidden.exists()
    by_file = {a["file"]: a for a in landing_alerts(alerts_file)}
    assert set(by_file) == {hidden.name, "folder.csv", "notes.txt"}
    assert "hidden" in by_file[hidden.name]["summary"]
    daemon.tick()
    assert len(landing_alerts(alerts_file)) == 3
    assert top_level(landing_dir) == {hidden.name}


def test_rejections_are_alerted_once_with_their_reason(daemon, landing_dir, alerts_file):
    settle(write_empty_file(landing_dir, DAY))
    daemon.tick()
    daemon.tick()
    [alert] = landing_alerts(alerts_file)
    assert alert["kind"] == "landing_rejected"
    assert alert["file"] == f"empty_{DAY}.csv"
    assert "empty" in alert["reason"]
    assert alert["moved_to"].endswith(f"_rejected/empty_{DAY}.csv")


def test_an_ingest_run_that_fails_leaves_its_files_in_place(
    landing_dir, instance, data_dir, assets_dir
):
    """Files move only after raw_transactions is stored: a failed run keeps them for a re-execution."""
    from fraud_dagster.definitions import make_definitions
    from fraud_dagster.resources import local_resources

    class FailingIOManager(dg.ConfigurableIOManager):
        def handle_output(self, context, obj):
            raise OSError("disk full")

        def load_input(self, context):
            raise AssertionError

    resources = local_resources(data_dir, LandingSource(landing_dir=str(landing_dir)))
    defs = make_definitions({**resources, "io_manager": FailingIOManager()})
    daemon = Daemon(defs, instance, landing_dir)
    path = write_handbook_csv(landing_dir, DAY, n=10)
    settle(path)
    (request,) = daemon.tick()
    assert not daemon.results[-1].success
    assert path.exists()
    assert daemon.tick() == []  # not retried on its own: the failure is alerted
    # Re-executing the failed run (same config) takes the file...
    fixed = make_definitions(resources)
    again = fixed.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags
    )
    assert again.success and not path.exists()
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 10


def test_touching_a_file_whose_run_failed_asks_for_a_new_run(landing_dir, instance, data_dir, assets_dir):
    from fraud_dagster.definitions import make_definitions
    from fraud_dagster.resources import local_resources

    resources = local_resources(data_dir, LandingSource(landing_dir=str(landing_dir)))
    daemon = Daemon(make_definitions(resources), instance, landing_dir)
    path = write_handbook_csv(landing_dir, DAY, n=10)
    settle(path)
    result, _ = daemon.evaluate()
    (request,) = requests_of(result)
    daemon.cursor = result.cursor
    instance.report_run_failed(instance.create_run_for_job(
        daemon.defs.resolve_job_def("ingest_job"), run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key}))
    assert daemon.tick() == []
    settle(path, seconds=100)  # touch
    (retry,) = daemon.tick()
    assert retry.run_key != request.run_key
    assert daemon.results[-1].success and not path.exists()
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 10


def test_a_file_changed_after_the_decision_is_not_taken_by_that_run(daemon, landing_dir, assets_dir):
    path = write_handbook_csv(landing_dir, DAY, n=10)
    settle(path)
    result, _ = daemon.evaluate()
    (request,) = requests_of(result)
    write_handbook_csv(landing_dir, DAY, n=25)  # rewritten before the run started
    daemon.defs.resolve_job_def("ingest_job").execute_in_process(
        instance=daemon.instance, run_config=request.run_config, tags=request.tags
    )
    assert path.exists()
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 0
    settle(path)
    daemon.tick()
    assert read_partition(assets_dir, "raw_transactions", DAY).height == 25


def test_a_day_with_a_run_in_flight_waits_for_it(daemon, landing_dir, instance):
    """Two runs writing one day at once could drop a file's rows: the second waits."""
    settle(write_handbook_csv(landing_dir, DAY, n=10))
    result, _ = daemon.evaluate()
    (first,) = requests_of(result)
    daemon.cursor = result.cursor
    instance.create_run_for_job(  # launched, not finished
        daemon.defs.resolve_job_def("ingest_job"), run_config=first.run_config,
        tags={**first.tags, "dagster/run_key": first.run_key},
    )
    settle(write_handbook_csv(landing_dir, DAY, n=5, name=f"late_{DAY}.csv"))
    result, _ = daemon.evaluate()
    assert requests_of(result) == []
    assert "waiting" in result.skip_reason.skip_message


# --- Every kind of file a user drops: none lost, none wedged ---------------------------------

FIRST = dt.date(2025, 2, 1)


def _csv(folder, name, frame):
    path = folder / name
    frame.write_csv(path)
    return path


def _accepted_kinds(folder):
    """(kind, file names, day, raw rows the day must hold); one day each, consecutive."""
    days = iter(FIRST + dt.timedelta(days=i) for i in range(40))
    kinds = []

    def add(kind, write, rows):
        day = next(days)
        names = write(day)
        kinds.append((kind, names, day, rows))

    add("handbook layout", lambda d: [write_handbook_csv(folder, d, 20).name], 20)
    add("typed parquet", lambda d: [write_parquet(folder, d, 20).name], 20)
    add("pq suffix", lambda d: [_pq(folder, d)], 20)
    add("labels absent", lambda d: [_csv(folder, f"unlabelled_{d}.csv", handbook_frame(d, 20).drop(
        "TX_FRAUD", "TX_FRAUD_SCENARIO")).name], 20)
    add("extra columns", lambda d: [_csv(folder, f"extra_{d}.csv", handbook_frame(d, 20).with_columns(
        merchant=pl.lit("shop"), country=pl.lit("BE"))).name], 20)
    add("wrong types", lambda d: [_csv(folder, f"types_{d}.csv", handbook_frame(d, 20).with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("abc")).otherwise(
            pl.col("TX_AMOUNT").cast(pl.Utf8)).alias("TX_AMOUNT"))).name], 20)
    add("latin-1 in an ignored column", lambda d: [_latin1(folder, d)], 20)
    add("utf-8 BOM", lambda d: [_bytes(folder, f"bom_{d}.csv",
                                       b"\xef\xbb\xbf" + handbook_frame(d, 20).write_csv().encode())], 20)
    add("CRLF line ends", lambda d: [_bytes(folder, f"crlf_{d}.csv", handbook_frame(d, 20).write_csv()
                                            .replace("\n", "\r\n").encode())], 20)
    add("ids written 1234.0", lambda d: [_csv(folder, f"floatids_{d}.csv", handbook_frame(d, 20)
                                              .with_columns(pl.col("TRANSACTION_ID").cast(pl.Float64)))
                                         .name], 20)
    add("huge ids", lambda d: [_csv(folder, f"huge_{d}.csv", handbook_frame(d, 20).with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("99999999999999999999")).otherwise(
            pl.col("TRANSACTION_ID").cast(pl.Utf8)).alias("TRANSACTION_ID"))).name], 20)
    add("rows dated outside the day", lambda d: [_csv(folder, f"outside_{d}.csv", handbook_frame(
        d + dt.timedelta(days=1), 20)).name], 20)
    add("gzip", lambda d: [_bytes(folder, f"{d}.csv.gz",
                                  gzip.compress(handbook_frame(d, 20).write_csv().encode()))], 20)
    add("no date in the name", lambda d: [_csv(folder, f"export_{d.day:02d}x.csv",
                                               handbook_frame(d, 20)).name], 20)
    add("two files one day", lambda d: [
        _csv(folder, f"morning_{d}.csv", handbook_frame(d, 30).head(12)).name,
        _csv(folder, f"evening_{d}.csv", handbook_frame(d, 30).tail(18)).name,
    ], 30)
    add("truncated csv", lambda d: [_bytes(folder, f"cut_{d}.csv",
                                           handbook_frame(d, 20).write_csv().encode()[:-9])], 20)
    add("mixed-case padded headers", lambda d: [_csv(folder, f"case_{d}.csv", handbook_frame(d, 20)
                                                     .rename({"TX_AMOUNT": " Tx_Amount ",
                                                              "CUSTOMER_ID": "customer_ID"})).name], 20)
    add("timezone-aware parquet", lambda d: [_tz_parquet(folder, d)], 20)
    add("list column ignored", lambda d: [_list_ignored(folder, d)], 20)
    add("repeated ids inside a file", lambda d: [_csv(folder, f"repeats_{d}.csv", pl.concat(
        [handbook_frame(d, 20), handbook_frame(d, 20).head(2)])).name], 22)
    add("empty cells", lambda d: [_csv(folder, f"blanks_{d}.csv", handbook_frame(d, 20).with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.col("TX_AMOUNT"))
        .alias("TX_AMOUNT"))).name], 20)
    return kinds


def _bytes(folder, name, data):
    (folder / name).write_bytes(data)
    return name


def _pq(folder, day):
    from fraud_dagster.core.simulator import Simulator

    Simulator().day(day).head(20).write_parquet(folder / f"{day}.pq")
    return f"{day}.pq"


def _latin1(folder, day):
    path = _csv(folder, f"latin1_{day}.csv", handbook_frame(day, 20).with_columns(
        merchant=pl.lit("cafe")))
    path.write_bytes(path.read_bytes().replace(b"cafe", b"caf\xe9"))
    return path.name


def _tz_parquet(folder, day):
    from fraud_dagster.core.simulator import Simulator

    name = f"tz_{day}.parquet"
    Simulator().day(day).head(20).with_columns(
        pl.col("tx_datetime").dt.replace_time_zone("UTC")).write_parquet(folder / name)
    return name


def _list_ignored(folder, day):
    from fraud_dagster.core.simulator import Simulator

    name = f"listextra_{day}.parquet"
    Simulator().day(day).head(20).with_columns(tags=pl.concat_list(pl.lit("a"), pl.lit("b"))) \
        .write_parquet(folder / name)
    return name


def _rejected_kinds(folder, tmp_path):
    """(kind, name at the top level, words the reason must hold)."""
    day = dt.date(2025, 3, 20)
    (tmp_path / "outside.csv").write_text("TRANSACTION_ID\nthe target's first line\n")
    os.mkfifo(folder / f"pipe_{day}.csv")
    (folder / f"dir_{day}.csv").mkdir()
    (folder / f"link_{day}.csv").symlink_to(tmp_path / "outside.csv")
    handbook_frame(day, 5).head(0).write_csv(folder / f"header_only_{day}.csv")
    handbook_frame(day, 5).drop("TX_AMOUNT").write_csv(folder / f"no_amount_{day}.csv")
    handbook_frame(dt.date(2024, 12, 30), 5).write_csv(folder / "2024-12-30.csv")
    handbook_frame(dt.date(2031, 1, 1), 5).write_csv(folder / "2031-01-01.csv")
    handbook_frame(day, 5).write_csv(folder / "2025-02-30.csv")
    (folder / f"ragged_{day}.csv").write_text(handbook_frame(day, 3).write_csv() + "1,2,3,4,5,6,7,8,9,10,11\n")
    (folder / f"{day}.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    return [
        ("empty", write_empty_file(folder, day).name, "empty"),
        ("header only", f"header_only_{day}.csv", "no rows"),
        ("truncated parquet", write_truncated_parquet(folder, day).name, "cannot read"),
        ("binary garbage", write_garbage_csv(folder, day).name, "cannot read"),
        ("missing column", f"no_amount_{day}.csv", "missing required column"),
        ("day before the partitions", "2024-12-30.csv", "outside the partitions"),
        ("day after the partitions", "2031-01-01.csv", "outside the partitions"),
        ("impossible date in the name", "2025-02-30.csv", "not a date"),
        ("list-typed amount", write_list_column_parquet(folder, day).name, "tx_amount"),
        ("more fields than the header", f"ragged_{day}.csv", "cannot read"),
        ("spreadsheet", f"{day}.xlsx", "not a landing file"),
        ("symlink", f"link_{day}.csv", "symbolic link"),
        ("directory", f"dir_{day}.csv", "directory"),
        ("named pipe", f"pipe_{day}.csv", "not a regular file"),
    ]


@pytest.mark.slow  # 37 kinds of files ingested, in several runs
def test_every_kind_of_landing_file_is_ingested_rejected_or_reported(
    daemon, landing_dir, assets_dir, alerts_file, tmp_path
):
    accepted = _accepted_kinds(landing_dir)
    rejected = _rejected_kinds(landing_dir, tmp_path)
    hidden = landing_dir / ".uploading.csv"
    hidden.write_text("half a file")
    writing = landing_dir / "2025-03-01.csv"
    writing.write_text(handbook_frame(dt.date(2025, 3, 1), 50).write_csv()[:2000])
    settle(*(p for p in landing_dir.iterdir() if p != writing))
    kinds = len(accepted) + len(rejected) + 2  # + hidden, + still being written
    assert kinds >= 25

    daemon.tick()
    # A delivery still being written stays, untouched, until it settles; then it is taken.
    assert writing.exists()
    writing.write_text(handbook_frame(dt.date(2025, 3, 1), 50).write_csv())
    settle(writing)
    # A corrected re-send of an ingested day replaces it.
    write_handbook_csv(landing_dir, FIRST, 25)
    settle(landing_dir / f"{FIRST}.csv")
    daemon.tick()
    daemon.tick()
    assert all(r.success for r in daemon.results if r.dagster_run.job_name != "ingest_job")

    def rows(asset, day):
        return read_partition(assets_dir, asset, day).height

    expected = {day: n for _, _, day, n in accepted}
    expected[FIRST] = 25
    expected[dt.date(2025, 3, 1)] = 50
    for day, n in expected.items():
        raw = rows("raw_transactions", day)
        assert raw == n, day
        assert raw == rows("validated_transactions", day) + rows("quarantined_transactions", day)
    for kind, names, day, _ in accepted:
        for name in names:
            assert (landing_dir / "_accepted" / day.isoformat() / name).exists(), kind

    by_file = {}
    for alert in landing_alerts(alerts_file):
        assert alert["file"] not in by_file, f"{alert['file']} reported twice"
        by_file[alert["file"]] = alert
    for kind, name, words in rejected:
        moved = landing_dir / "_rejected" / name
        assert moved.exists() or moved.is_symlink(), kind
        reason = (landing_dir / "_rejected" / f"{name}.reason.txt").read_text()
        assert words in reason, (kind, reason)
        assert "first line" not in reason, kind
        assert words in by_file[name]["reason"], kind
    assert hidden.name in by_file
    assert top_level(landing_dir) == {hidden.name}
    assert set(by_file) == {name for _, name, _ in rejected} | {hidden.name}
