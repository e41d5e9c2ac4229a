"""Serving benchmark: the stateful online service, in process and behind HTTP, against a minimal
FastAPI app doing the same work.

    python3 -m uv run --locked python benchmarks/serving.py [--bentoml-home PATH] [--seconds 10]
        [--warmup 5]

Without ``--bentoml-home``, first builds a project in a temporary folder (75 days of the default
simulator, an XGBoost champion, ``bento_model`` with the state of the day before the last), about
half a minute. Every server and in-process run gets a fresh feature store loaded with the state
exported with the model (day S), and every request is a fresh, valid transaction: the store scores
an id once (a repeat is 409) and refuses a transaction of day S or before (422). The requests are
one *stream* of days: the simulator's day S + 1, and for pass k over it the same traffic shifted
by k days with ids offset by k days' worth (the simulator's own id scheme), so that each day of
the stream holds one real day's traffic and a customer's same-day history stays realistic. All
measurements of one server draw from that stream in order (singles at concurrency 1, 8, 32, then
whole-day batches, each batch a day of its own); each server starts the stream over on its own
fresh store. The bodies are generated before any timing, more than the fastest measurement can
use; any answer but 200 is counted as an error (0 expected), and a stream that runs out is
flagged (``stream_exhausted``).

Measurements, one JSON line each, every one with p50/p99, throughput, errors, the machine's load
average and the share of CPU time the hypervisor stole meanwhile (``cpu_steal_percent``):

- in process (``floor``, a subprocess), on a
  ``MemoryStore`` and on a ``RedisStore`` against a ``redis-server`` the benchmark starts on a
  free loopback port: one row *scored* (``score_features`` + ``Scorer.score``), *answered
  without the log* (``answer_jobs`` and the ``/predict`` body) and *answered* (also the
  prediction-log append, a ``PredictionLog`` in a temporary folder, as the service logs), each
  over ``--rows`` rows; the same for whole-day batches (rows/s), explaining the flagged rows as
  ``/predict_batch`` does by default, and answered explaining every row (``"explain": "all"``);
- ``bentoml serve`` from ``bento/`` (memory store, one worker) and the baseline, a plain FastAPI
  app on uvicorn doing the same work per request (the same pydantic models, its own
  ``MemoryStore`` loaded with the same state and the same ``Scorer``, answers through the same
  ``answer_jobs`` and bodies; batches read through pydantic; no micro-batching, no prediction
  log, no token or size checks): closed-loop ``/predict`` at concurrency 1, 8 and 32, and
  ``/predict_batch`` with whole-day batches at concurrency 1 (rows/s), by default and with
  ``"explain": "all"``;
- ``bentoml serve`` with ``FRAUD_ONLINE_STORE=redis``, one worker and two, ``/predict`` at
  concurrency 1 and 32, and how much the Redis backend costs against the memory store (p50 and
  req/s).

Each HTTP measurement runs ``--warmup`` seconds of the same load first, unmeasured. A small
keep-alive HTTP client in this process generates the load: a general-purpose client costs as much
CPU per request as the servers being measured, on the same two cores. Then one line per floor
(measured, target, met).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fraud_dagster_tests.processes import BentoServer, free_port, stop_group, wait_ready  # noqa: E402,I001

CONCURRENCY = (1, 8, 32)
REDIS_CONCURRENCY = (1, 32)
FIRST, LAST = dt.date(2025, 1, 1), dt.date(2025, 3, 15)
MAX_SINGLE_RPS = 6_000
"""Singles generated per server: this rate over every single-row measurement, far above what
two cores serve (a stream that runs out is flagged and its repeats answered 409)."""
BATCH_MARGIN = 1.5
"""Whole-day batches generated per server: this much more than the in-process rate (which does
less per batch than any server) would use."""


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def build_project(root: Path) -> Path:
    """Ingest, train and export into ``root``; returns its BentoML home."""
    import dagster as dg

    from fraud_dagster.definitions import make_definitions
    from fraud_dagster.partitions import partition_range_tags
    from fraud_dagster.resources import SimulatorSource, local_resources

    defs = make_definitions(local_resources(root / "data", SimulatorSource()))
    with dg.DagsterInstance.ephemeral() as instance:
        ingest = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=instance, tags=partition_range_tags(FIRST, LAST))
        assert ingest.success
        retrain = defs.resolve_job_def("retrain_job").execute_in_process(
            instance=instance,
            run_config={"ops": {
                "fraud_model": {"config": {"models": ["xgboost"], "balancing": ["none"],
                                           "validation_folds": 2}},
                "bento_model": {"config": {
                    "state_date": (LAST - dt.timedelta(days=1)).isoformat()}},
            }},
        )
        assert retrain.success
    return root / "data" / "bentoml"


def latest_model_dir(home: Path) -> Path:
    folder = home / "models" / "fraud_model"
    return folder / (folder / "latest").read_text().strip()


# The request stream --------------------------------------------------------------------------


class Stream:
    """The simulator's transactions of the day after the model's state date (pass 0), and that
    day's traffic shifted by k days, ids by k days' worth, for pass k."""

    def __init__(self, model_dir: Path):
        from fraud_dagster.core.schema import REQUIRED_COLUMNS
        from fraud_dagster.core.simulator import (
            TRANSACTION_IDS_PER_DAY, Simulator, SimulatorConfig)
        from fraud_dagster.core.validation import split_transactions

        info = json.loads((model_dir / "serving.json").read_text())
        self.state_date = dt.date.fromisoformat(info["state_date"])
        self.first_day = self.state_date + dt.timedelta(days=1)
        raw = Simulator(SimulatorConfig()).day(self.first_day).with_columns(
            partition_date=pl.lit(self.first_day), source=pl.lit("simulator"),
            parse_errors=pl.lit(None, pl.Utf8))
        base = split_transactions(raw).validated.select(REQUIRED_COLUMNS)
        days = base.get_column("tx_datetime").dt.date().unique().to_list()
        assert days == [self.first_day], f"the simulator's day {self.first_day} holds {days}"
        self.base = base.sort("tx_datetime", maintain_order=True)  # arrival order
        self.rows = self.base.height
        self.id_step = TRANSACTION_IDS_PER_DAY
        ids = self.base.get_column("transaction_id")
        assert ids.max() - ids.min() < self.id_step

    def day(self, k: int) -> dt.date:
        return self.first_day + dt.timedelta(days=k)

    def frame(self, k: int) -> pl.DataFrame:
        """Pass ``k``: ``REQUIRED_COLUMNS`` of day S + 1 + k."""
        return self.base.with_columns(
            pl.col("transaction_id") + k * self.id_step,
            pl.col("tx_datetime") + dt.timedelta(days=k))

    def rows_of(self, first_pass: int, n: int) -> list[tuple]:
        """``n`` consecutive rows of the stream from pass ``first_pass`` on, in arrival order."""
        out: list[tuple] = []
        k = first_pass
        while len(out) < n:
            out.extend(self.frame(k).iter_rows())
            k += 1
        return out[:n]

    def single_bodies(self, n: int) -> list[bytes]:
        """The first ``n`` singles of the stream (passes 0, 1, ...) as ``/predict`` bodies."""
        template = []
        for transaction_id, when, customer, terminal, amount in self.base.iter_rows():
            template.append((transaction_id, when.isoformat()[10:], customer, terminal,
                             repr(amount)))
        bodies = []
        for k in range(math.ceil(n / self.rows)):
            day, offset = self.day(k).isoformat(), k * self.id_step
            bodies.extend(
                b'{"transaction_id":%d,"tx_datetime":"%s%s","customer_id":%d,"terminal_id":%d,'
                b'"tx_amount":%s}' % (i + offset, day.encode(), t.encode(), c, term, a.encode())
                for i, t, c, term, a in template)
        return bodies[:n]

    def batch_body(self, k: int, explain_all: bool = False) -> bytes:
        """Pass ``k`` as one ``/predict_batch`` body (explaining the flagged rows, the default,
        or every row)."""
        frame = self.frame(k).with_columns(
            pl.col("tx_datetime").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f"))
        return (b'{"transactions":' + frame.write_json().encode()
                + (b',"explain":"all"}' if explain_all else b"}"))


# A small HTTP/1.1 keep-alive client -----------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length, chunked = None, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    elif length:
        await reader.readexactly(length)
    return status


class Requests:
    """HTTP requests drawn in order by every user of every measurement on one server. Past the
    last one it starts over (the server answers 409: errors) and says so."""

    def __init__(self, path: str, bodies: list[bytes]):
        head = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                % path.encode())
        self.requests = [head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                         for body in bodies]
        self.next = 0
        self.exhausted = False

    def take(self) -> bytes:
        if self.next == len(self.requests):
            self.next, self.exhausted = 0, True
        request = self.requests[self.next]
        self.next += 1
        return request


async def _user(port: int, requests: Requests, until: float, measure_from: float,
                latencies: list[float], errors: list[int], warmup_errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (now := time.perf_counter()) < until:
            writer.write(requests.take())
            status = await _read_response(reader)
            done = time.perf_counter()
            if now >= measure_from:
                latencies.append(done - now)
                if status != 200:
                    errors.append(status)
            elif status != 200:
                warmup_errors.append(status)
    finally:
        writer.close()


def cpu_times() -> list[int]:
    """The machine's CPU time counters (``/proc/stat``: user ... steal), in ticks."""
    with open("/proc/stat") as stat:
        return [int(x) for x in stat.readline().split()[1:9]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor took from this machine between two ``cpu_times``: on a
    shared VM, latency figures are only comparable between runs with similar steal."""
    spent = [b - a for a, b in zip(before, after)]
    return round(100 * spent[7] / max(sum(spent), 1), 1)


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def timed(call, frames, n: int) -> tuple[list[float], float]:
    """Seconds of each of ``n`` calls, each on the next of ``frames``, and the CPU steal meanwhile."""
    times, before = [], cpu_times()
    for _ in range(n):
        frame = next(frames)
        start = time.perf_counter()
        call(frame)
        times.append(time.perf_counter() - start)
    return times, steal_percent(before, cpu_times())


def closed_loop(port: int, requests: Requests, concurrency: int, seconds: float,
                warmup: float) -> dict:
    latencies: list[float] = []
    errors: list[int] = []
    warmup_errors: list[int] = []
    first = requests.next

    async def run():
        start = time.perf_counter()
        await asyncio.gather(*(
            _user(port, requests, start + warmup + seconds, start + warmup, latencies, errors,
                  warmup_errors) for _ in range(concurrency)))

    before = cpu_times()
    asyncio.run(run())
    steal = steal_percent(before, cpu_times())
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "warmup_errors": len(warmup_errors),
        "error_statuses": sorted(set(errors + warmup_errors)),
        **percentiles(latencies),
        "throughput_rps": round(len(latencies) / seconds, 1),
        "stream_used": [first, requests.next],
        "stream_exhausted": requests.exhausted,
        "cpu_steal_percent": steal,
        "load_1m": load_now(),
    }


# Servers ---------------------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` on a free loopback port, nothing persisted."""

    def __init__(self, folder: Path):
        import redis

        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server is not on the PATH (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "redis.log").open("wb") as log:
            self.process = subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(folder)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not answer PING:\n"
                                       + (folder / "redis.log").read_text()[-3000:]) from None
                time.sleep(0.05)

    def flush(self) -> None:
        self.client.flushdb()

    def stop(self) -> None:
        self.client.close()
        stop_group(self.process, timeout=30)


def start_fastapi(model_dir: Path, port: int, log: Path, max_batch: int) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, __file__, "fastapi", "--model-dir", str(model_dir),
             "--port", str(port)],
            env={**os.environ, "FRAUD_MAX_BATCH_SIZE": str(max_batch)},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def fastapi_app(model_dir: Path):
    """The baseline: the same request models, scorer, store and answers, one request at a time."""
    from fraud_dagster.serving.api import (
        BatchRequest, ScoringJob, Transaction, answer_jobs, batch_body, prediction_body,
        refusal_body, request_rows)
    from fraud_dagster.serving.scoring import Scorer, bundled_state, transactions_frame
    from fraud_dagster.serving.store import MemoryStore, Refused

    app = FastAPI()
    scorer = Scorer.load(model_dir)
    store = MemoryStore()
    store.load_state(bundled_state(model_dir))

    def answer(rows: list[tuple], include_features: bool = False, explain_all: bool = True):
        [answered] = answer_jobs(scorer, store, [ScoringJob(transactions_frame(rows),
                                                            include_features, explain_all)])
        return answered

    def refused(answered: Refused, single: bool) -> Response:
        return Response(refusal_body(answered, single), status_code=answered.status,
                        media_type="application/json")

    @app.get("/ready")
    def ready() -> dict:
        return {}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        transaction = Transaction.model_validate_json(await request.body())
        answered = await run_in_threadpool(answer, request_rows([transaction]))
        if isinstance(answered, Refused):
            return refused(answered, single=True)
        return Response(prediction_body(answered), media_type="application/json")

    @app.post("/predict_batch")
    async def predict_batch(request: Request) -> Response:
        batch = BatchRequest.model_validate_json(await request.body())
        answered = await run_in_threadpool(answer, request_rows(batch.transactions),
                                           batch.include_features, batch.explain == "all")
        if isinstance(answered, Refused):
            return refused(answered, single=False)
        return Response(batch_body(answered), media_type="application/json")

    return app


def serve_fastapi(model_dir: Path, port: int) -> None:
    import uvicorn

    uvicorn.run(fastapi_app(model_dir), host="127.0.0.1", port=port, log_level="warning")


# In process ----------------------------------------------------------------------------------


def in_process(model_dir: Path, backend: str, redis_url: str | None, n: int,
               batches: int) -> None:
    """One row scored, answered without and with the log, ``n`` rows each; then ``batches``
    whole-day batches scored, and as many answered; on a fresh store of ``backend``."""
    from fraud_dagster.serving.api import (
        SMALL_ANSWER_ROWS, ScoringJob, answer_jobs, batch_body, prediction_body)
    from fraud_dagster.serving.prediction_log import PredictionLog, scored_rows
    from fraud_dagster.serving.scoring import Scorer, bundled_state, transactions_frame
    from fraud_dagster.serving.store import MemoryStore

    scorer = Scorer.load(model_dir)
    if backend == "redis":
        import redis

        from fraud_dagster.serving.redis_store import RedisStore

        redis.Redis.from_url(redis_url).flushdb()
        store = RedisStore(redis_url)
    else:
        store = MemoryStore()
    assert store.load_state(bundled_state(model_dir))
    stream = Stream(model_dir)
    warm = 200
    rows = stream.rows_of(0, warm + 3 * n)
    frames = [transactions_frame([row]) for row in rows]
    after_singles = math.ceil(len(rows) / stream.rows)
    batch_frames = [stream.frame(after_singles + k) for k in range(1 + 3 * batches)]

    with tempfile.TemporaryDirectory(prefix="serving_benchmark_log_") as folder:
        log = PredictionLog(Path(folder))

        def on_scored(scored):
            log.append(scored_rows(scored, scorer.model_version))

        def scored(frame):
            features, _ = store.score_features(frame, SMALL_ANSWER_ROWS)
            return scorer.score(features)

        def answered_no_log(frame):
            [answered] = answer_jobs(scorer, store, [ScoringJob(frame)])
            return prediction_body(answered)

        def answered(frame):
            [answer] = answer_jobs(scorer, store, [ScoringJob(frame)], on_scored=on_scored)
            return prediction_body(answer)

        def batch_scored(frame):  # explaining the flagged rows, as /predict_batch by default
            features, _ = store.score_features(frame, SMALL_ANSWER_ROWS)
            return scorer.score(features, np.zeros(features.height, dtype=bool))

        def batch_answered(frame, explain_all=False):
            [answer] = answer_jobs(scorer, store, [ScoringJob(frame, explain_all=explain_all)],
                                   on_scored=on_scored)
            return batch_body(answer)

        for frame in frames[:warm]:
            answered(frame)
        singles = iter(frames[warm:])
        for what, call in (("scored", scored), ("answered without the log", answered_no_log),
                           ("answered", answered)):
            times, steal = timed(call, singles, n)
            emit({"server": "in_process", "store": backend, "what": f"one row {what}",
                  "rows": n, **percentiles(times),
                  "throughput_rps": round(n / sum(times), 1),
                  "errors": 0, "cpu_steal_percent": steal, "load_1m": load_now()})
        batch = iter(batch_frames)
        batch_answered(next(batch))  # warm-up: the first whole-day query
        for what, call in (("scored", batch_scored), ("answered", batch_answered),
                           ("answered, every row explained",
                            functools.partial(batch_answered, explain_all=True))):
            times, steal = timed(call, batch, batches)
            emit({"server": "in_process", "store": backend, "what": f"whole-day batch {what}",
                  "rows_per_request": stream.rows, "requests": batches, **percentiles(times),
                  "rows_per_s": round(stream.rows * batches / sum(times)), "errors": 0,
                  "cpu_steal_percent": steal, "load_1m": load_now()})
        log.close()


def run_in_process(model_dir: Path, backend: str, redis_url: str | None, rows: int,
                   batches: int) -> list[dict]:
    command = [sys.executable, __file__, "floor", "--model-dir", str(model_dir),
               "--store", backend, "--rows", str(rows), "--batches", str(batches)]
    if redis_url:
        command += ["--redis-url", redis_url]
    done = subprocess.run(command, check=True,
                          capture_output=True, text=True)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for record in records:
        emit(record)
    return records


# Measuring a server ----------------------------------------------------------------------------


def measure_server(name: str, port: int, singles: list[bytes],
                   batches: tuple[list[bytes], list[bytes]] | None, rows: int, seconds: float,
                   warmup: float, concurrency: tuple[int, ...] = CONCURRENCY) -> list[dict]:
    """``/predict`` at each concurrency, then (``batches``: bodies explaining the flagged rows,
    and bodies explaining every row) ``/predict_batch`` at concurrency 1, each way."""
    results = []
    stream = Requests("/predict", singles)
    for level in concurrency:
        record = {"server": name, "endpoint": "/predict",
                  **closed_loop(port, stream, level, seconds, warmup)}
        emit(record)
        results.append(record)
    for bodies, explain in zip(batches or (), ("flagged", "all")):
        record = closed_loop(port, Requests("/predict_batch", bodies), 1, seconds, warmup)
        record = {"server": name, "endpoint": "/predict_batch", "explain": explain,
                  "rows_per_request": rows, **record,
                  "rows_per_s": round(record["throughput_rps"] * rows)}
        emit(record)
        results.append(record)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bentoml-home", type=Path, default=None,
                        help="use the latest fraud_model of this store instead of building one")
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP measurement")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of the same load before each HTTP measurement: the first"
                        " seconds of a fresh server (first queries planned, first allocations)"
                        " have a tail of their own")
    parser.add_argument("--rows", type=int, default=3000,
                        help="rows per in-process single-row measurement")
    parser.add_argument("--batches", type=int, default=5,
                        help="whole-day batches per in-process batch measurement")
    args = parser.parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    with tempfile.TemporaryDirectory(prefix="serving_benchmark_") as tmp:
        tmp = Path(tmp)
        if args.bentoml_home is None:
            start = time.perf_counter()
            home = build_project(tmp / "project")
            emit({"built_project_seconds": round(time.perf_counter() - start, 1)})
        else:
            home = args.bentoml_home.resolve()
        model_dir = latest_model_dir(home)
        stream = Stream(model_dir)
        emit({"model": str(model_dir), "state_date": stream.state_date.isoformat(),
              "first_request_day": stream.first_day.isoformat(),
              "transactions_per_day": stream.rows, "cpus": os.cpu_count(),
              "load_average": os.getloadavg()})

        redis_server = RedisServer(tmp / "redis")
        try:
            in_memory = run_in_process(model_dir, "memory", None, args.rows, args.batches)
            run_in_process(model_dir, "redis", redis_server.url, args.rows, args.batches)

            # Bodies for every measurement of one server, generated before any timing.
            single_seconds = len(CONCURRENCY) * (args.warmup + args.seconds)
            singles = stream.single_bodies(math.ceil(MAX_SINGLE_RPS * single_seconds))
            single_passes = math.ceil(len(singles) / stream.rows)
            batch_rate = max(r["rows_per_s"] for r in in_memory if "rows_per_s" in r)
            n_batches = math.ceil(BATCH_MARGIN * batch_rate / stream.rows
                                  * (args.warmup + args.seconds)) + 2
            batches = ([stream.batch_body(single_passes + k) for k in range(n_batches)],
                       [stream.batch_body(single_passes + n_batches + k, explain_all=True)
                        for k in range(n_batches)])
            emit({"singles_per_server": len(singles), "batches_per_server": n_batches,
                  "batch_request_bytes": len(batches[0][0]),
                  "stream_days": [stream.first_day.isoformat(),
                                  stream.day(single_passes + 2 * n_batches - 1).isoformat()]})

            empty_state_dir = tmp / "no_feature_state"
            empty_state_dir.mkdir()
            measured = {}
            max_batch = max(stream.rows, 10_000)
            servers = [
                ("bentoml", {}, CONCURRENCY, True),
                ("fastapi", None, CONCURRENCY, True),
                ("bentoml_redis_1_worker", {"FRAUD_ONLINE_STORE": "redis", "FRAUD_WORKERS": "1"},
                 REDIS_CONCURRENCY, False),
                ("bentoml_redis_2_workers", {"FRAUD_ONLINE_STORE": "redis",
                                             "FRAUD_WORKERS": "2"}, REDIS_CONCURRENCY, False),
            ]
            for name, env, levels, with_batches in servers:
                redis_server.flush()
                log = tmp / f"{name}.log"
                if env is None:
                    port = free_port()
                    process = start_fastapi(model_dir, port, log, max_batch)
                    stop = functools.partial(stop_group, process)
                    try:
                        wait_ready(f"http://127.0.0.1:{port}/ready", process,
                                   output=functools.partial(log.read_text, errors="replace"))
                    except BaseException:
                        stop()
                        raise
                else:
                    server = BentoServer(
                        home, tmp / f"{name}_data", log,
                        FRAUD_FEATURE_STATE_DIR=str(empty_state_dir),
                        FRAUD_MAX_BATCH_SIZE=str(max_batch),
                        FRAUD_REDIS_URL=redis_server.url, **env)
                    server.start()
                    port, stop = server.port, server.stop
                    try:
                        server.wait_ready()
                    except BaseException:
                        stop()
                        raise
                try:
                    measured[name] = measure_server(
                        name, port, singles, batches if with_batches else None, stream.rows,
                        args.seconds, args.warmup, levels)
                finally:
                    stop()
        finally:
            redis_server.stop()

        ours, baseline = measured["bentoml"], measured["fastapi"]
        by_level = lambda results, c: next(  # noqa: E731
            r for r in results if r["endpoint"] == "/predict" and r["concurrency"] == c)
        for name in ("bentoml_redis_1_worker", "bentoml_redis_2_workers"):
            for level in REDIS_CONCURRENCY:
                memory, redis_ = by_level(ours, level), by_level(measured[name], level)
                emit({"comparison": f"{name} against bentoml (memory store)",
                      "endpoint": "/predict", "concurrency": level,
                      "p50_ms_difference": round(redis_["p50_ms"] - memory["p50_ms"], 3),
                      "throughput_rps_difference": round(
                          redis_["throughput_rps"] - memory["throughput_rps"], 1),
                      "throughput_ratio": round(redis_["throughput_rps"]
                                                / memory["throughput_rps"], 2)})
        one_row = next(r for r in in_memory if r["what"] == "one row scored")
        c1, c32 = by_level(ours, 1), by_level(ours, 32)
        base_32 = by_level(baseline, 32)
        batch = next(r for r in ours if r.get("explain") == "flagged")
        checks = [
            ("one row scored in process (memory store): p99 <= 1 ms", one_row["p99_ms"], 1.0,
             one_row["p99_ms"] <= 1.0),
            ("/predict at concurrency 1: p99 <= 5 ms", c1["p99_ms"], 5.0, c1["p99_ms"] <= 5.0),
            ("/predict at concurrency 32: at least twice the FastAPI app's req/s",
             c32["throughput_rps"], 2 * base_32["throughput_rps"],
             c32["throughput_rps"] >= 2 * base_32["throughput_rps"]),
            ("/predict_batch >= 150,000 rows/s", batch["rows_per_s"], 150_000,
             batch["rows_per_s"] >= 150_000),
        ]
        for floor, value, target, met in checks:
            emit({"floor": floor, "measured": value, "target": target, "met": met})
        errors = sum(r["errors"] + r["warmup_errors"] for results in measured.values()
                     for r in results)
        exhausted = any(r["stream_exhausted"] for results in measured.values() for r in results)
        emit({"non_200_answers": errors, "stream_exhausted": exhausted,
              "load_average_after": os.getloadavg()})
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fastapi", "floor"):
        options = argparse.ArgumentParser()
        options.add_argument("--model-dir", type=Path, required=True)
        options.add_argument("--port", type=int)
        options.add_argument("--store", default="memory")
        options.add_argument("--redis-url")
        options.add_argument("--rows", type=int, default=3000)
        options.add_argument("--batches", type=int, default=5)
        parsed = options.parse_args(sys.argv[2:])
        if sys.argv[1] == "fastapi":
            serve_fastapi(parsed.model_dir, parsed.port)
        else:
            in_process(parsed.model_dir, parsed.store, parsed.redis_url, parsed.rows,
                       parsed.batches)
    else:
        sys.exit(main())
