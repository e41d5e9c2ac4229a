"""fraud_service: fraud predictions for raw card transactions, from the exported champion model.

Serves the ``fraud_model`` that the ``bento_model`` asset put in the BentoML model store, with the
feature state bundled in it. From this folder: ``bentoml serve`` (see bento/README.md).

Environment: ``BENTOML_HOME`` (BentoML's; the project's store is ``<data root>/bentoml``),
``FRAUD_DATA_DIR`` (data root for the prediction log, default the project's ``data/``),
``FRAUD_MODEL_TAG`` (default ``fraud_model:latest``),
``FRAUD_API_TOKEN`` (unset: no token), ``FRAUD_MAX_BATCH_SIZE``, ``FRAUD_MAX_REQUEST_BYTES``,
``FRAUD_PREDICTION_LOG_FSYNC`` (``1``: the prediction log is synced to disk on every append),
``FRAUD_CONTRIBUTIONS`` (``approximate``, the default, or ``exact`` TreeSHAP: 50x slower),
``POLARS_MAX_THREADS`` (default here 1).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
from pathlib import Path

# Before polars is imported: requests are scored one micro-batch at a time on one thread, and for
# a request's few rows polars' thread pool costs more than it gives (single row: -25 %).
os.environ.setdefault("POLARS_MAX_THREADS", "1")

import bentoml  # noqa: E402
import polars as pl  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

from bento.guard import RequestGuard  # noqa: E402
from fraud_dagster.core.schema import REQUIRED_COLUMNS  # noqa: E402
from fraud_dagster.serving.api import (  # noqa: E402
    MAX_BATCH_SIZE,
    BatchPrediction,
    BatchRequest,
    ModelMetadata,
    Prediction,
    ScoringJob,
    Transaction,
    answer_jobs,
    batch_body,
    facts,
    prediction_body,
    read_batch,
)
from fraud_dagster.serving.microbatch import MicroBatcher  # noqa: E402
from fraud_dagster.serving.prediction_log import PredictionLog  # noqa: E402
from fraud_dagster.serving.scoring import Scored, Scorer, transactions_frame  # noqa: E402

DATA_DIR = Path(os.environ.get("FRAUD_DATA_DIR") or Path(__file__).resolve().parents[1] / "data")
MODEL_TAG = os.environ.get("FRAUD_MODEL_TAG", "fraud_model:latest")
try:  # BentoML's own message would say it also failed to reach BentoCloud
    bentoml.models.get(MODEL_TAG)
except bentoml.exceptions.NotFound:
    raise SystemExit(
        f"fraud_service: no model {MODEL_TAG} in the BentoML model store"
        f" {os.environ.get('BENTOML_HOME', '~/bentoml')}/models. Materialise the bento_model asset"
        " (retrain_job) first, and set BENTOML_HOME to the project's (<data root>/bentoml)."
    ) from None
CONTRIBUTIONS = os.environ.get("FRAUD_CONTRIBUTIONS", "approximate")
if CONTRIBUTIONS not in ("approximate", "exact"):
    raise SystemExit(f"FRAUD_CONTRIBUTIONS must be 'approximate' or 'exact', not {CONTRIBUTIONS!r}")
EXACT_CONTRIBUTIONS = CONTRIBUTIONS == "exact"
logger = logging.getLogger("bentoml.service.fraud")
extra_routes = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class BatchInput(bentoml.IODescriptor, BatchRequest):
    """``BatchRequest`` as BentoML's input spec (Swagger shows its schema), read by ``read_batch``
    into a frame: building 10,000 pydantic models took longer than scoring them."""

    @classmethod
    async def from_http_request(cls, request: Request, serde) -> BatchInput:
        transactions, include_features = read_batch(await request.body())
        return cls.model_construct(transactions=transactions, include_features=include_features)


@bentoml.asgi_app(extra_routes, path="/")
@bentoml.service(
    name="fraud_service",
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 60},
    workers=1,
)
class FraudService:
    """Fraud probability, decision at the tuned threshold, model version and the features that
    weighed most, for raw transactions. Features are computed from the transaction and the
    feature state bundled with the model, by the function the batch pipeline uses."""

    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.scorer = Scorer.load(self.model.path, exact_contributions=EXACT_CONTRIBUTIONS)
        self.log = PredictionLog(DATA_DIR / "predictions",
                                 fsync=os.environ.get("FRAUD_PREDICTION_LOG_FSYNC") == "1")
        self.batcher = MicroBatcher(
            lambda jobs: answer_jobs(self.scorer, jobs, on_scored=self._log),
            rows=lambda job: job.rows, max_rows=MAX_BATCH_SIZE)
        self.facts = facts(self.scorer)
        self.library_mismatches = self.scorer.library_mismatches()
        for name, (exported, running) in self.library_mismatches.items():
            logger.warning("%s was %s when the model was exported, is %s here", name, exported,
                           running)
        logger.info("serving %s (MLflow v%s), feature state as of %s", self.model.tag,
                    self.scorer.model_version, self.scorer.state_date)
        # What is loaded now lives as long as the process: keep the collector from walking it
        # again and again, pausing requests (a 10,000-row batch allocates enough to trigger it).
        gc.collect()
        gc.freeze()

    def _log(self, scored: Scored) -> None:
        """Called in the scoring thread before the answers exist: a prediction is only handed
        back once its row is written, and a failed write fails the requests (500)."""
        n = scored.height
        self.log.append(scored.features.hstack([
            pl.Series("fraud_probability", scored.probability),
            pl.Series("is_fraud", scored.is_fraud),
            pl.repeat(self.scorer.model_version, n, eager=True).alias("model_version"),
            pl.repeat(dt.datetime.now(dt.timezone.utc), n, eager=True).alias("scored_at"),
        ]))

    # Answers are serialised from polars frames (predictions_frame): through pydantic models, a
    # 10,000-row batch costs more than scoring it. The models still document the API.

    @bentoml.api(route="/predict", input_spec=Transaction, output_spec=Prediction)
    async def predict(self, **transaction) -> Response:
        """Score one transaction, a flat JSON object with the validated schema's fields."""
        row = tuple(transaction[name] for name in REQUIRED_COLUMNS)
        prediction = await self.batcher.score(ScoringJob(transactions_frame([row])))
        return Response(prediction_body(self.facts, prediction), media_type="application/json")

    @bentoml.api(route="/predict_batch", input_spec=BatchInput, output_spec=BatchPrediction)
    async def predict_batch(self, transactions: pl.DataFrame,
                            include_features: bool = False) -> Response:
        """Score `{"transactions": [...]}` (at most FRAUD_MAX_BATCH_SIZE), answers in order."""
        predictions = await self.batcher.score(ScoringJob(transactions, include_features))
        return Response(batch_body(self.facts, predictions), media_type="application/json")

    @extra_routes.get("/metadata", response_model=ModelMetadata, operation_id="get_metadata")
    @extra_routes.post("/metadata", response_model=ModelMetadata, operation_id="post_metadata")
    def metadata(self) -> ModelMetadata:
        """The served model: version, threshold, features, feature state date and lineage."""
        info = self.scorer.info
        return ModelMetadata(
            **self.facts,
            bentoml_tag=str(self.model.tag),
            feature_columns=list(self.scorer.feature_columns),
            state_date=info.get("state_date"),
            lineage={k: str(v) for k, v in info.items()
                     if k not in ("threshold", "feature_columns", "state_date", "libraries")},
            libraries=info.get("libraries", {}),
            library_mismatches={k: list(v) for k, v in self.library_mismatches.items()},
            max_batch_size=MAX_BATCH_SIZE,
        )

    @bentoml.on_shutdown
    def close(self) -> None:
        self.batcher.shutdown()
        self.log.close()


FraudService.add_asgi_middleware(
    RequestGuard,
    token=os.environ.get("FRAUD_API_TOKEN") or None,
    max_bytes=int(os.environ.get("FRAUD_MAX_REQUEST_BYTES", str(10 * 2**20))),
    protected=frozenset({"/predict", "/predict_batch"}),
)
