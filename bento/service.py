"""fraud_service: fraud predictions for raw card transactions, from the exported champion model.

Serves the ``fraud_model`` that the ``bento_model`` asset put in the BentoML model store, with
features from the online feature store (``fraud_dagster.serving``): the newest materialised
``feature_state`` plus every transaction scored since. A newer model or state is picked up
without a restart. From this folder: ``bentoml serve`` (see bento/README.md).

Environment: ``BENTOML_HOME`` (BentoML's; the project's store is ``<data root>/bentoml``),
``FRAUD_DATA_DIR`` (data root: the pipeline's ``feature_state`` files and the prediction log,
default the project's ``data/``), ``FRAUD_MODEL_TAG`` (default ``fraud_model:latest``),
``FRAUD_ONLINE_STORE`` (``memory``, the default, or ``redis``), ``FRAUD_REDIS_URL``,
``FRAUD_WORKERS`` (default 1; more need ``redis``), ``FRAUD_RELOAD_SECONDS`` (default 10),
``FRAUD_FEATURE_STATE_DIR`` (a folder or an fsspec URL; default
``<FRAUD_STORAGE_URL or data root>/assets/feature_state``),
``FRAUD_API_TOKEN`` (unset: no token), ``FRAUD_MAX_BATCH_SIZE``, ``FRAUD_MAX_REQUEST_BYTES``,
``FRAUD_MAX_HEADER_BYTES`` (16384), ``FRAUD_BODY_TIMEOUT_SECONDS`` (10),
``FRAUD_PREDICTION_LOG_FSYNC`` (``1``: the prediction log is synced to disk on every append),
``FRAUD_ACCESS_LOG`` (``1``: BentoML's access log but for the scoring paths; ``all``; ``0``),
``FRAUD_UNTRACED_PATHS`` (default the scoring paths; empty: trace every path),
``FRAUD_CONTRIBUTIONS`` (``approximate``, the default, or ``exact`` TreeSHAP: 50x slower),
``POLARS_MAX_THREADS`` (polars' own default, a thread per core: a day's batch in half
the time on two cores; a request's few rows are computed in plain Python).
"""

from __future__ import annotations

import gc
import importlib.metadata
import inspect
import logging
import os
import secrets
from pathlib import Path

import bentoml
import polars as pl
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bento.guard import BENTOML_ERROR_LOGGER, ClientErrorsAreNotServerErrors, RequestGuard  # noqa: E501
from fraud_dagster.core.schema import REQUIRED_COLUMNS
from fraud_dagster.serving.api import (
    MAX_BATCH_SIZE,
    BatchPrediction,
    BatchRequest,
    ModelMetadata,
    Prediction,
    ScoringJob,
    Transaction,
    answer_jobs,
    batch_body,
    example_transaction,
    facts,
    openapi_document,
    prediction_body,
    read_batch,
    read_transaction,
    refusal_body,
)
from fraud_dagster.serving.live import Live
from fraud_dagster.serving.microbatch import MicroBatcher
from fraud_dagster.serving.prediction_log import PredictionLog, scored_rows
from fraud_dagster.serving.scoring import Scored, Scorer
from fraud_dagster.serving.store import Refused, open_store, store_settings_error

DATA_DIR = Path(os.environ.get("FRAUD_DATA_DIR") or Path(__file__).resolve().parents[1] / "data")
MODEL_TAG = os.environ.get("FRAUD_MODEL_TAG", "fraud_model:latest")
STORE = os.environ.get("FRAUD_ONLINE_STORE", "memory")
WORKERS = int(os.environ.get("FRAUD_WORKERS", "1"))
try:  # BentoML's own message would say it also failed to reach BentoCloud
    bentoml.models.get(MODEL_TAG)
except bentoml.exceptions.NotFound:
    raise SystemExit(
        f"fraud_service: no model {MODEL_TAG} in the BentoML model store"
        f" {os.environ.get('BENTOML_HOME', '~/bentoml')}/models. Materialise the bento_model asset"
        " (retrain_job) first, and set BENTOML_HOME to the project's (<data root>/bentoml)."
    ) from None
if (error := store_settings_error(STORE, os.environ.get("FRAUD_REDIS_URL"), WORKERS)) is not None:
    raise SystemExit(f"fraud_service: {error}")
CONTRIBUTIONS = os.environ.get("FRAUD_CONTRIBUTIONS", "approximate")
if CONTRIBUTIONS not in ("approximate", "exact"):
    raise SystemExit(f"FRAUD_CONTRIBUTIONS must be 'approximate' or 'exact', not {CONTRIBUTIONS!r}")
EXACT_CONTRIBUTIONS = CONTRIBUTIONS == "exact"
SCORING_PATHS = "/predict,/predict_batch"
# Per request, BentoML's access-log line and OpenTelemetry span each cost about as much CPU as
# scoring the request does in a micro-batch (bento/README.md, "Benchmark"): the scoring paths
# have neither by default. The prediction log records every scored transaction.
ACCESS_LOG = os.environ.get("FRAUD_ACCESS_LOG", "1")
if ACCESS_LOG not in ("0", "1", "all"):
    raise SystemExit(f"FRAUD_ACCESS_LOG must be 0, 1 or all, not {ACCESS_LOG!r}")
UNLOGGED_PATHS = ["/metrics", "/healthz", "/livez", "/readyz",  # BentoML's own default
                  *(SCORING_PATHS.split(",") if ACCESS_LOG == "1" else ())]
UNTRACED_PATHS = os.environ.get("FRAUD_UNTRACED_PATHS", SCORING_PATHS) or None
logger = logging.getLogger("bentoml.service.fraud")
logging.getLogger(BENTOML_ERROR_LOGGER).addFilter(ClientErrorsAreNotServerErrors())
extra_routes = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class BatchInput(bentoml.IODescriptor, BatchRequest):
    """Transactions to score together, whether to return the features they were scored on, and
    which to explain."""

    # BatchRequest as BentoML's input spec (Swagger shows this docstring and the schema), read by
    # read_batch into a frame: building 10,000 pydantic models took longer than scoring them.

    @classmethod
    async def from_http_request(cls, request: Request, serde) -> BatchInput:
        job = read_batch(await request.body())
        return cls.model_construct(transactions=job.transactions,
                                   include_features=job.include_features,
                                   explain="all" if job.explain_all else "flagged")


class TransactionInput(bentoml.IODescriptor, Transaction):
    """One raw transaction, as the validated schema names its fields."""

    # Transaction as BentoML's input spec, read by read_transaction (msgspec; pydantic for
    # anything not plainly valid).

    @classmethod
    async def from_http_request(cls, request: Request, serde) -> TransactionInput:
        return cls.model_construct(**read_transaction(await request.body()))


def service_version() -> str:
    """The Bento's version when served from one, else the project's."""
    if FraudService.bento is not None:
        return str(FraudService.bento.tag.version)
    try:
        return importlib.metadata.version("fraud-dagster")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def newest_model() -> tuple[str, Path]:
    model = bentoml.models.get(MODEL_TAG)
    return str(model.tag), Path(model.path)


@bentoml.asgi_app(extra_routes, path="/")
@bentoml.service(
    name="fraud_service",
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 60},
    workers=WORKERS,
    logging={"access": {"enabled": ACCESS_LOG != "0", "skip_paths": UNLOGGED_PATHS}},
    tracing={"excluded_urls": UNTRACED_PATHS},
)
class FraudService:
    """Fraud probability, decision at the tuned threshold, model version and the features that
    weighed most, for raw transactions. Features are computed from the transaction, the newest
    feature state and the customer's earlier transactions, by the code the batch pipeline runs."""

    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        worker = bentoml.server_context.worker_index or 1
        if STORE == "memory" and worker > 1:
            raise SystemExit("fraud_service: more than one worker with FRAUD_ONLINE_STORE=memory;"
                             " set FRAUD_ONLINE_STORE=redis (see bento/README.md)")
        self.log = PredictionLog(DATA_DIR / "predictions",
                                 fsync=os.environ.get("FRAUD_PREDICTION_LOG_FSYNC") == "1")
        self.live = Live(
            open_store(STORE, os.environ.get("FRAUD_REDIS_URL")),
            state_dir=(os.environ.get("FRAUD_FEATURE_STATE_DIR")
                       or f"{os.environ.get('FRAUD_STORAGE_URL') or DATA_DIR}/assets/feature_state"),
            journal_dir=DATA_DIR / "predictions",
            newest_model=newest_model,
            load_scorer=lambda path: Scorer.load(path, exact_contributions=EXACT_CONTRIBUTIONS),
            interval=float(os.environ.get("FRAUD_RELOAD_SECONDS", "10")),
        )
        self.batcher = MicroBatcher(self._answer, rows=lambda job: job.rows,
                                    max_rows=MAX_BATCH_SIZE)
        scorer = self.live.scorer
        for name, (exported, running) in scorer.library_mismatches().items():
            logger.warning("%s was %s when the model was exported, is %s here", name, exported,
                           running)
        logger.info("serving %s (MLflow v%s), feature state as of %s, %s store", self.live.model.tag,
                    scorer.model_version, self.live.store.state_date, STORE)
        # What is loaded now lives as long as the process: keep the collector from walking it
        # again and again, pausing requests (a 10,000-row batch allocates enough to trigger it).
        gc.collect()
        gc.freeze()
        self.live.start()

    def _answer(self, jobs: list[ScoringJob]):
        model = self.live.model  # one model for the whole micro-batch, whatever the reloads
        return answer_jobs(model.scorer, self.live.store, jobs,
                           on_scored=lambda scored: self._log(scored, model.scorer))

    def _log(self, scored: Scored, scorer: Scorer) -> None:
        """Called in the scoring thread before the answers exist: a prediction is only handed
        back once its row is written, and a failed write fails the requests (500)."""
        self.log.append(scored_rows(scored, scorer.model_version))

    # Answers are serialised from polars frames (predictions_frame): through pydantic models, a
    # 10,000-row batch costs more than scoring it. The models still document the API.

    @bentoml.api(route="/predict", input_spec=TransactionInput,
                 output_spec=Prediction)
    async def predict(self, **transaction) -> Response:
        """Score one transaction, a flat JSON object with the validated schema's fields."""
        row = tuple(transaction[name] for name in REQUIRED_COLUMNS)
        try:
            answered = await self.batcher.score(ScoringJob(row))
        except Refused as refused:
            return Response(refusal_body(refused, single=True), status_code=refused.status,
                            media_type="application/json")
        return Response(prediction_body(answered), media_type="application/json")

    @bentoml.api(route="/predict_batch", input_spec=BatchInput, output_spec=BatchPrediction)
    async def predict_batch(self, transactions: pl.DataFrame, include_features: bool = False,
                            explain: str = "flagged") -> Response:
        """Score `{"transactions": [...]}` (at most FRAUD_MAX_BATCH_SIZE), answers in order;
        `top_contributions` for the flagged ones (`"explain": "all"`: for every one)."""
        try:
            answered = await self.batcher.score(ScoringJob(
                transactions, include_features, explain_all=explain == "all"))
        except Refused as refused:
            return Response(refusal_body(refused, single=False), status_code=refused.status,
                            media_type="application/json")
        return Response(batch_body(answered), media_type="application/json")

    @extra_routes.get("/metadata", response_model=ModelMetadata, operation_id="get_metadata")
    @extra_routes.post("/metadata", response_model=ModelMetadata, operation_id="post_metadata")
    def metadata(self) -> ModelMetadata:
        """The served model (version, threshold, features, lineage) and the feature store's
        state: its day, the newest transaction applied."""
        model, store = self.live.model, self.live.store.info()
        info = model.scorer.info
        return ModelMetadata(
            **facts(model.scorer, store.state_date),
            bentoml_tag=model.tag,
            feature_columns=list(model.scorer.feature_columns),
            feature_store=store.backend,
            newest_transaction=(store.newest_transaction.isoformat()
                                if store.newest_transaction else None),
            transactions_applied=store.transactions_applied,
            lineage={k: str(v) for k, v in info.items()
                     if k not in ("threshold", "feature_columns", "state_date", "libraries")},
            libraries=info.get("libraries", {}),
            library_mismatches={k: list(v) for k, v in
                                model.scorer.library_mismatches().items()},
            max_batch_size=MAX_BATCH_SIZE,
        )

    @extra_routes.get("/docs.json", include_in_schema=False)
    def openapi(self) -> JSONResponse:
        """BentoML's OpenAPI document (Swagger's), with this service's title, version, a working
        example and the error bodies it answers (``openapi_document``)."""
        model, store = self.live.model, self.live.store.info()
        return JSONResponse(openapi_document(
            FraudService.openapi_spec.asdict(), title="Fraud detection (fraud_service)",
            description=f"{inspect.getdoc(FraudService.inner)}\n\nServing model"
            f" v{model.scorer.model_version} ({model.tag}), feature state of"
            f" {store.state_date}. See bento/README.md.",
            version=service_version(),
            example=example_transaction(store.state_date, store.newest_transaction,
                                        2**52 + secrets.randbelow(2**52 - 2))))

    @bentoml.on_shutdown
    def close(self) -> None:
        self.live.close()
        self.batcher.shutdown()
        self.log.close()


FraudService.add_asgi_middleware(
    RequestGuard,
    token=os.environ.get("FRAUD_API_TOKEN") or None,
    max_bytes=int(os.environ.get("FRAUD_MAX_REQUEST_BYTES", str(10 * 2**20))),
    protected=frozenset({"/predict", "/predict_batch"}),
    max_header_bytes=int(os.environ.get("FRAUD_MAX_HEADER_BYTES", "16384")),
    body_timeout=float(os.environ.get("FRAUD_BODY_TIMEOUT_SECONDS", "10")),
)
