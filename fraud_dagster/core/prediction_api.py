"""The prediction API's requests and responses: pydantic models, which are also its documentation.

A request carries raw transactions with the validated schema's field names and rules (ids
non-negative, amount positive and finite, a timestamp); labels are not accepted, since they are
unknown when a transaction is scored. Anything else is refused with the field named, before any
scoring. Nothing here knows about BentoML, so the benchmark's plain FastAPI app uses the same
models.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable
from typing import Annotated

import numpy as np
import polars as pl
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, NaiveDatetime

from fraud_dagster.core.features import KEY_COLUMNS
from fraud_dagster.core.scoring import Scored, Scorer, transactions_frame

MAX_BATCH_SIZE = int(os.environ.get("FRAUD_MAX_BATCH_SIZE", "10000"))
"""Most transactions one ``/predict_batch`` request may carry (``FRAUD_MAX_BATCH_SIZE``)."""
_INT64_MAX = 2**63 - 1

Id = Annotated[int, Field(ge=0, le=_INT64_MAX)]


class Transaction(BaseModel):
    """One raw transaction, as the validated schema names its fields."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    transaction_id: Id = Field(description="Non-negative integer, echoed in the prediction.")
    tx_datetime: NaiveDatetime = Field(
        description="Local time without a time zone, ISO 8601: 2025-03-15T14:03:07."
    )
    customer_id: Id = Field(description="Non-negative integer; unknown customers have no history.")
    terminal_id: Id = Field(description="Non-negative integer; unknown terminals have no history.")
    tx_amount: float = Field(gt=0, description="Positive and finite.")


class BatchRequest(BaseModel):
    """Transactions to score together, and whether to return the features they were scored on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    transactions: list[Transaction] = Field(min_length=1, max_length=MAX_BATCH_SIZE)
    include_features: bool = Field(
        False, description="Also return each transaction's features (as the batch asset has them)."
    )


class Contribution(BaseModel):
    feature: str
    value: float = Field(description="The feature's value for this transaction.")
    contribution: float = Field(description="Its part of the fraud log-odds.")


class ScoredTransaction(BaseModel):
    transaction_id: int
    fraud_probability: float
    is_fraud: bool = Field(description="fraud_probability >= the model's tuned threshold.")
    top_contributions: list[Contribution] | None = Field(
        description="The features that moved the score most, largest first; null when the model"
        " has no exact contributions (see `contributions`)."
    )
    features: dict[str, float] | None = Field(
        None, description="Every feature the model read, when `include_features` is set."
    )


class ModelFacts(BaseModel):
    model_version: str = Field(description="The MLflow registered version of `fraud_model`.")
    threshold: float
    contributions: str = Field(description="What `top_contributions` are, or why there are none.")


class Prediction(ScoredTransaction, ModelFacts):
    """The score of one transaction."""


class BatchPrediction(ModelFacts):
    """The scores of a batch, in request order."""

    predictions: list[ScoredTransaction]


class ModelMetadata(ModelFacts):
    """The served model: what it is, where it comes from, what it was exported with."""

    bentoml_tag: str
    feature_columns: list[str]
    state_date: str | None = Field(
        description="The feature state is as of the end of this day: features are exactly the"
        " batch ones for transactions of the next day, and use older history after that."
    )
    lineage: dict[str, str] = Field(
        description="MLflow run and version, training and test windows, Dagster runs."
    )
    libraries: dict[str, str] = Field(description="Library versions the model was exported with.")
    library_mismatches: dict[str, list[str]] = Field(
        description="Libraries running at another version than at export: [exported, running]."
    )
    max_batch_size: int


def request_rows(transactions: list[Transaction]) -> list[tuple]:
    """Validated transactions as rows of ``REQUIRED_COLUMNS``, for ``transactions_frame``: a model's
    fields are its ``__dict__`` in declaration order (the schema's, tested), twice as fast as
    reading them one by one on a 10,000-row batch."""
    return [tuple(t.__dict__.values()) for t in transactions]


def facts(scorer: Scorer) -> dict:
    return {"model_version": scorer.model_version, "threshold": scorer.threshold,
            "contributions": scorer.contribution_note}


def predictions_frame(scored: Scored, include_features: bool = False) -> pl.DataFrame:
    """One ``ScoredTransaction`` per row, as a frame (serialised by polars: a 10,000-row batch as
    pydantic models or dicts costs more than scoring it)."""
    frame = pl.DataFrame({
        "transaction_id": scored.features["transaction_id"],
        "fraud_probability": scored.probability.astype(np.float64),
        "is_fraud": scored.is_fraud,
        "top_contributions": scored.top_contributions(),
    })
    return frame.hstack([features_struct(scored.features)]) if include_features else frame


def features_struct(features: pl.DataFrame) -> pl.Series:
    names = [c for c in features.columns if c not in KEY_COLUMNS]
    return features.select(pl.struct(names).alias("features")).to_series()


def prediction_body(model: dict, prediction: pl.DataFrame) -> bytes:
    """A ``Prediction``: the model's facts and a one-row ``predictions_frame``."""
    [row] = json.loads(prediction.write_json())  # one small row: simplest exact round trip
    return pydantic_core.to_json({**model, **row})


def batch_body(model: dict, predictions: pl.DataFrame) -> bytes:
    """A ``BatchPrediction``, the rows serialised by polars (exact shortest floats)."""
    body = io.BytesIO()
    body.write(pydantic_core.to_json(model)[:-1] + b',"predictions":')
    predictions.write_json(body)
    body.write(b"}")
    return body.getvalue()


@dataclasses.dataclass(frozen=True)
class ScoringJob:
    """One request's transactions (rows of ``REQUIRED_COLUMNS``) and what it asked for."""

    rows: list[tuple]
    include_features: bool = False


def answer_jobs(scorer: Scorer, jobs: list[ScoringJob],
                on_scored: Callable[[Scored], None] | None = None) -> list[pl.DataFrame]:
    """Score the transactions of several requests in one call; each request's rows, in order."""
    scored = scorer.score(transactions_frame([row for job in jobs for row in job.rows]))
    if on_scored is not None:
        on_scored(scored)
    predictions = predictions_frame(scored)  # once: per request, it would cost ~1 ms each
    answers, start = [], 0
    for job in jobs:
        part = predictions.slice(start, len(job.rows))
        if job.include_features:
            part = part.hstack([features_struct(scored.features.slice(start, len(job.rows)))])
        answers.append(part)
        start += len(job.rows)
    return answers
