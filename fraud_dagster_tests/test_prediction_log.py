"""The prediction log, on real files: what ``append`` returned from is written and readable by any
process, a torn tail costs only the batch it tore, no validated timestamp stops the log, and the
online store can replay every day after its snapshot."""

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from fraud_dagster.serving.prediction_log import (
    MAX_OPEN_DAYS, PredictionLog, read_day, read_since)
from fraud_dagster_tests.served_rows import DAY, served_rows

REPO = Path(__file__).resolve().parents[1]
NEXT = DAY + dt.timedelta(days=1)


def ids(frame: pl.DataFrame | None) -> list[int]:
    return [] if frame is None else frame["transaction_id"].to_list()


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


READ_ELSEWHERE = """
import datetime as dt, json, sys
from fraud_dagster.serving.prediction_log import read_day
frame = read_day(sys.argv[1], dt.date.fromisoformat(sys.argv[2]))
print(json.dumps([] if frame is None else frame["transaction_id"].to_list()))
"""


def ids_read_by_another_process(folder: Path, day: dt.date) -> list[int]:
    return json.loads(run_python(READ_ELSEWHERE, str(folder), day.isoformat()).stdout)


@pytest.mark.slow  # reads in new processes
def test_every_appended_row_is_readable_as_soon_as_append_returns_in_any_process(tmp_path):
    log = PredictionLog(tmp_path)
    log.append(served_rows(DAY, 10))
    assert ids(read_day(tmp_path, DAY)) == list(range(10))
    assert ids_read_by_another_process(tmp_path, DAY) == list(range(10))
    log.append(pl.concat([served_rows(DAY, 3, 10), served_rows(NEXT, 2, 13)]))
    assert ids(read_day(tmp_path, DAY)) == list(range(13))
    assert ids_read_by_another_process(tmp_path, NEXT) == [13, 14]
    # One file per process and day, appended to: nothing was closed, nothing renamed.
    assert [len(list((tmp_path / d.isoformat()).iterdir())) for d in (DAY, NEXT)] == [1, 1]
    log.close()
    assert ids(read_day(tmp_path, DAY)) == list(range(13))


def test_a_file_torn_anywhere_reads_as_the_batches_written_whole_before_the_tear(tmp_path):
    log = PredictionLog(tmp_path / "log")
    batch_ends, written = [], []
    for start, n in ((0, 2), (2, 3), (5, 4)):
        log.append(served_rows(DAY, n, start))
        [path] = (tmp_path / "log" / DAY.isoformat()).iterdir()
        batch_ends.append(path.stat().st_size)
        written.append(list(range(start + n)))
    whole = path.read_bytes()  # as a process killed now leaves it: no end-of-stream marker
    torn = tmp_path / "torn" / DAY.isoformat()
    torn.mkdir(parents=True)
    for cut in range(len(whole) + 1):
        (torn / path.name).write_bytes(whole[:cut])
        complete = [rows for end, rows in zip(batch_ends, written) if end <= cut]
        assert ids(read_day(tmp_path / "torn", DAY)) == (complete[-1] if complete else []), cut


def test_a_new_log_never_appends_to_a_file_an_earlier_process_tore(tmp_path):
    first = PredictionLog(tmp_path)
    first.append(served_rows(DAY, 2))
    first.append(served_rows(DAY, 3, 2))
    [torn] = (tmp_path / DAY.isoformat()).iterdir()
    with torn.open("r+b") as file:  # killed in the middle of its second append
        file.truncate(torn.stat().st_size - 20)
    size = torn.stat().st_size
    second = PredictionLog(tmp_path)
    second.append(served_rows(DAY, 3, 5))
    second.close()
    assert torn.stat().st_size == size
    assert len(list((tmp_path / DAY.isoformat()).iterdir())) == 2
    assert sorted(ids(read_day(tmp_path, DAY))) == [0, 1, 5, 6, 7]


# Files cannot grow past 4 KiB during the second append (what a full disk does to a write): it
# raises, the day's file keeps a torn batch and is abandoned, the third append opens a new file.
FAILING_WRITE = """
import datetime as dt, resource, signal, sys
from pathlib import Path
from fraud_dagster.serving.prediction_log import PredictionLog
from fraud_dagster_tests.served_rows import DAY, served_rows
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
log = PredictionLog(Path(sys.argv[1]))
log.append(served_rows(DAY, 2))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
try:
    log.append(served_rows(DAY, 1000, 2))
except OSError as error:
    print("raised", error.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.append(served_rows(DAY, 3, 1002))
"""


def test_a_write_that_fails_raises_and_the_log_goes_on_in_a_new_file(tmp_path):
    import errno

    done = run_python(FAILING_WRITE, str(tmp_path))
    assert done.stdout.split() == ["raised", str(errno.EFBIG)]
    files = sorted((tmp_path / DAY.isoformat()).iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert len(files) == 2 and files[0].stat().st_size == 4096  # the torn one, left alone
    assert ids(read_day(tmp_path, DAY)) == [0, 1, 1002, 1003, 1004]


def test_the_day_is_taken_by_polars_so_a_year_0_row_is_logged_and_the_log_goes_on(tmp_path):
    """Python's ``date`` cannot hold year 0; polars can, and /predict_batch accepts it."""
    year_0 = served_rows(DAY, 1).with_columns(
        pl.lit("0000-01-01T00:00:00").str.to_datetime(time_unit="us").alias("tx_datetime"))
    log = PredictionLog(tmp_path)
    log.append(year_0)
    log.append(served_rows(DAY, 1, 1))
    log.close()
    [path] = (tmp_path / "0000-01-01").iterdir()
    assert pl.read_ipc_stream(path).equals(year_0)
    assert ids(read_day(tmp_path, DAY)) == [1]


def test_appends_from_many_threads_are_each_logged_whole_and_once(tmp_path):
    log = PredictionLog(tmp_path)

    def serve(thread: int) -> None:
        for call in range(25):
            start = (thread * 25 + call) * 3
            log.append(served_rows(DAY if call % 2 else NEXT, 3, start))

    threads = [threading.Thread(target=serve, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert sorted(ids(read_day(tmp_path, DAY)) + ids(read_day(tmp_path, NEXT))) == list(range(600))


def test_rows_of_other_columns_go_to_a_new_file_and_read_back_with_the_first(tmp_path):
    log = PredictionLog(tmp_path)
    log.append(served_rows(DAY, 2))
    log.append(served_rows(DAY, 1, 2).with_columns(pl.lit("4").alias("model_version")))
    assert len(list((tmp_path / DAY.isoformat()).iterdir())) == 2
    both = read_day(tmp_path, DAY).sort("transaction_id")
    assert both["model_version"].to_list() == [None, None, "4"]


def open_files_under(folder: Path) -> int:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sum(target.startswith(f"{folder}/") for target in targets)


def test_a_batch_of_many_days_keeps_few_files_open_and_logs_every_day(tmp_path):
    days = [DAY + dt.timedelta(days=i) for i in range(3 * MAX_OPEN_DAYS)]
    log = PredictionLog(tmp_path)
    log.append(pl.concat([served_rows(day, 2, 2 * i) for i, day in enumerate(days)]))
    assert open_files_under(tmp_path) == MAX_OPEN_DAYS
    log.append(served_rows(days[0], 1, 100))  # its file was closed: a new one
    log.close()
    assert open_files_under(tmp_path) == 0
    assert [ids(read_day(tmp_path, day)) for day in days[1:]] == [
        [2 * i, 2 * i + 1] for i in range(1, len(days))]
    assert ids(read_day(tmp_path, days[0])) == [0, 1, 100]


def test_the_older_logs_parquet_files_are_read_with_the_stream_files(tmp_path):
    (tmp_path / DAY.isoformat()).mkdir()
    served_rows(DAY, 2).write_parquet(tmp_path / DAY.isoformat() / "0a1b2c.parquet")
    log = PredictionLog(tmp_path)
    log.append(served_rows(DAY, 2, 2))
    assert sorted(ids(read_day(tmp_path, DAY))) == [0, 1, 2, 3]
    assert read_day(tmp_path, NEXT) is None


def test_read_since_replays_every_row_of_the_days_after_a_snapshot_and_only_those(tmp_path):
    log = PredictionLog(tmp_path)
    for i in range(-1, 3):
        log.append(served_rows(DAY + dt.timedelta(days=i), 2, 10 * (i + 1)))
    later = DAY + dt.timedelta(days=2)
    served_rows(later, 1, 99).write_parquet(tmp_path / later.isoformat() / "legacy.parquet")
    (tmp_path / "not-a-day").mkdir()
    replayed = read_since(tmp_path, DAY)
    assert replayed.columns[:5] == ["transaction_id", "tx_datetime", "customer_id",
                                    "terminal_id", "tx_amount"]
    assert ids(replayed) == [20, 21, 30, 31, 99]  # day by day
    assert ids(read_since(tmp_path, DAY - dt.timedelta(days=2))) == [0, 1, 10, 11, 20, 21, 30, 31,
                                                                      99]
    assert read_since(tmp_path, later) is None
    assert read_since(tmp_path / "never-served", DAY) is None


def test_a_stream_file_is_plain_arrow_ipc(tmp_path):
    """Any Arrow reader reads the log: one record batch per append."""
    log = PredictionLog(tmp_path)
    log.append(served_rows(DAY, 2))
    log.append(served_rows(DAY, 3, 2))
    log.close()
    [path] = (tmp_path / DAY.isoformat()).iterdir()
    assert path.suffix == ".arrows"
    with pa.ipc.open_stream(path.read_bytes()) as reader:
        assert [batch.num_rows for batch in reader] == [2, 3]
