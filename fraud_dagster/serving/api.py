"""The prediction API's requests and responses: pydantic models, which are also its documentation.

A request carries raw transactions with the validated schema's field names and rules (ids
non-negative, amount from 0 to ``MAX_AMOUNT``, a timestamp in range); labels are not accepted, since they are
unknown when a transaction is scored. Anything else is refused with the field named, before any
scoring. Nothing here knows about BentoML, so the benchmark's plain FastAPI app uses the same
models.

The pydantic models are the contract. A batch body is read by ``read_batch``: msgspec decodes a
well-formed one into columns several times faster than pydantic builds 10,000 models (measured in
bento/README.md, "How it is built"), and whatever msgspec
does not accept as plainly valid is judged by ``BatchRequest`` itself, which accepts it or names
the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import operator
import os
import re
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec
import numpy as np
import polars as pl
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from fraud_dagster.core.schema import EARLIEST, LATEST, REQUEST_DTYPES, REQUIRED_COLUMNS
from fraud_dagster.serving.request_fields import msgspec_fields, pydantic_fields
from fraud_dagster.serving.scoring import Scored, Scorer, transactions_frame
from fraud_dagster.serving.store import FeatureStore, Refused

MAX_BATCH_SIZE = int(os.environ.get("FRAUD_MAX_BATCH_SIZE", "10000"))
"""Most transactions one ``/predict_batch`` request may carry (``FRAUD_MAX_BATCH_SIZE``)."""
_JS_SAFE_MAX = 2**53 - 1  # Number.MAX_SAFE_INTEGER

Transaction = create_model(
    "Transaction", __doc__="One raw transaction, as the validated schema names its fields.",
    __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False), **pydantic_fields())


Explain = Literal["flagged", "all"]


class BatchRequest(BaseModel):
    """Transactions to score together, whether to return the features they were scored on, and
    which to explain."""

    model_config = ConfigDict(extra="forbid", strict=True)

    transactions: list[Transaction] = Field(min_length=1, max_length=MAX_BATCH_SIZE)
    include_features: bool = Field(
        False, description="Also return each transaction's features (as the batch asset has them)."
    )
    explain: Explain = Field(
        "flagged", description="`flagged`: `top_contributions` for the transactions flagged"
        " `is_fraud`, null for the others (explaining every row of a day's batch costs more than"
        " the rest of scoring it); `all`: for every transaction, as `/predict` always does.")


class ErrorDetail(BaseModel):
    type: str = Field(description="What is wrong: pydantic's error type (`missing`,"
                      " `int_type`, `less_than_equal`, ...), `number_out_of_range`,"
                      " `duplicate_transaction` or `before_feature_state`.")
    loc: list[str | int] = Field(description="Where: the field (`[\"tx_amount\"]`), in a batch"
                                 " `[\"transactions\", 3, \"tx_amount\"]`; empty for the"
                                 " body as a whole.")
    msg: str


class ErrorBody(BaseModel):
    """A request refused for its content: each error names its field."""

    error: str | None = Field(None, description="A summary (validation errors only).")
    detail: list[ErrorDetail]


class GuardError(BaseModel):
    """A request refused before its content is read (token, media type, size, time)."""

    error: str


_REFUSALS = {
    400: ("Invalid transaction(s): missing, extra or mistyped field, out of range, malformed"
          " JSON", ErrorBody),
    401: ("Missing or wrong API token (FRAUD_API_TOKEN)", GuardError),
    408: ("The body did not arrive whole within FRAUD_BODY_TIMEOUT_SECONDS", GuardError),
    409: ("A transaction_id already scored, or repeated in the request", ErrorBody),
    413: ("Body over FRAUD_MAX_REQUEST_BYTES", GuardError),
    415: ("Not JSON", GuardError),
    422: ("A transaction of the served feature state's day or earlier", ErrorBody),
    431: ("Request line and headers over FRAUD_MAX_HEADER_BYTES", GuardError),
}


def openapi_document(spec: dict, *, title: str, description: str, version: str,
                     example: dict) -> dict:
    """BentoML's OpenAPI document for this service, told what it is: its own title, description
    and version (BentoML's says "a Machine Learning Service created with BentoML", version None),
    a request example the service accepts (``example``, a transaction it would score now), and
    the error bodies the prediction endpoints really answer."""
    if not 0 <= example["transaction_id"] < _JS_SAFE_MAX:
        # Swagger UI reads the document in JavaScript, whose numbers hold integers exactly only
        # up to 2**53 - 1: a larger id is shown and sent rounded, and id + 1 rounds to the same
        # number (the /predict_batch example then gets 409 after /predict's was tried).
        raise ValueError("the example's transaction_id and the next must be below 2**53 - 1")
    spec = {**spec, "info": {"title": title, "description": description, "version": version}}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, GuardError):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    examples = {"/predict": example,
                "/predict_batch": {"transactions": [  # another id: both examples can be tried
                    {**example, "transaction_id": example["transaction_id"] + 1}],
                    "include_features": False, "explain": "flagged"}}
    for path, body in examples.items():
        operation = spec["paths"][path]["post"]
        operation["requestBody"]["content"]["application/json"]["example"] = body
        # BentoML's keys are ints (400, 404): as strings, so that the 400 below replaces its own
        # instead of sitting beside it as a second "400" key in the JSON, which Swagger UI
        # refuses to render ("Parser error: duplicated mapping key").
        responses = operation["responses"] = {
            str(status): body for status, body in operation["responses"].items()}
        responses.pop("404", None)
        for status, (text, model) in _REFUSALS.items():
            responses[str(status)] = {"description": text, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    return spec


def example_transaction(state_date: dt.date | None, newest: dt.datetime | None,
                        transaction_id: int) -> dict:
    """A transaction the service would score now: after its feature state's day and its newest
    transaction, under an id nobody has sent."""
    when = max(dt.datetime.combine(state_date + dt.timedelta(days=1), dt.time(12))
               if state_date else EARLIEST, newest or EARLIEST)
    when = min(when.replace(microsecond=0) + dt.timedelta(seconds=1),
               LATEST - dt.timedelta(seconds=1))
    return {"transaction_id": transaction_id, "tx_datetime": when.isoformat(),
            "customer_id": 42, "terminal_id": 4017, "tx_amount": 310.5}


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
        " has no exact contributions (see `contributions`), and in a batch for a transaction not"
        " flagged unless it asked `explain: all`."
    )
    state_lag_days: int = Field(
        0, description="Days between the feature state's next day and the transaction's: 0, the"
        " features are exactly the batch ones; more, the pipeline has not yet materialised the"
        " states in between, and the 7- and 30-day windows and the terminal risk lag by that much."
    )
    features: dict[str, float] | None = Field(
        None, description="Every feature the model read, when `include_features` is set."
    )


class ModelFacts(BaseModel):
    model_version: str = Field(description="The MLflow registered version of `fraud_model`.")
    threshold: float
    contributions: str = Field(description="What `top_contributions` are, or why there are none.")
    state_date: str | None = Field(
        description="The day of the feature state the features were computed from: exact for"
        " transactions of the next day (see `state_lag_days`)."
    )


class Prediction(ScoredTransaction, ModelFacts):
    """The score of one transaction."""


class BatchPrediction(ModelFacts):
    """The scores of a batch, in request order."""

    predictions: list[ScoredTransaction]


class ModelMetadata(ModelFacts):
    """The served model: what it is, where it comes from, what it was exported with."""

    bentoml_tag: str
    feature_columns: list[str]
    feature_store: str = Field(description="`memory` or `redis` (FRAUD_ONLINE_STORE).")
    newest_transaction: str | None = Field(
        description="The latest `tx_datetime` the store has applied: how fresh the customer"
        " windows are."
    )
    transactions_applied: int = Field(
        description="Transactions applied to the store since the feature state's day."
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


_PlainTransaction = msgspec.defstruct(
    "_PlainTransaction", msgspec_fields(), module=__name__, forbid_unknown_fields=True,
    gc=False,  # numbers and text only, no cycles: 10,000 of them cost the collector nothing
    namespace={"__doc__": "``Transaction`` for msgspec, the timestamp kept as text (see"
               " ``_PLAIN_DATETIME``)."})


class _PlainBatch(msgspec.Struct, forbid_unknown_fields=True):
    transactions: Annotated[list[_PlainTransaction],
                            msgspec.Meta(min_length=1, max_length=MAX_BATCH_SIZE)]
    include_features: bool = False
    explain: Explain = "flagged"


_BATCH_DECODER = msgspec.json.Decoder(_PlainBatch)
# The one form the fast path parses: a valid hour, minute and second (polars, like chrono, would
# take a leap second), at most microseconds. Any other form goes to pydantic.
_PLAIN_DATETIME = r"^\d{4}-\d{2}-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?$"


def _plain_batch(body: bytes) -> ScoringJob | None:
    """The fast path of ``read_batch``, or None for anything but a plainly valid body."""
    try:
        batch = _BATCH_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    rows = batch.transactions
    columns = {name: list(map(operator.attrgetter(name), rows))
               for name in _PlainTransaction.__struct_fields__}
    stamps = columns.pop("tx_datetime")
    if not pl.Series(stamps, dtype=pl.String).str.contains(_PLAIN_DATETIME).all():
        return None
    try:  # numpy parses ISO 8601 several times faster than polars' strptime, to the same values
        parsed = pl.Series("tx_datetime", np.array(stamps, dtype="datetime64[us]"))
    except ValueError:  # a day that does not exist
        return None
    if not parsed.is_between(EARLIEST, LATEST, closed="left").all():
        return None
    frame = pl.DataFrame(columns, schema={k: v for k, v in REQUEST_DTYPES.items() if k in columns})
    return ScoringJob(frame.insert_column(1, parsed.cast(REQUEST_DTYPES["tx_datetime"])),
                      batch.include_features, explain_all=batch.explain == "all")


_OUT_OF_RANGE = re.compile(r"number out of range at line (\d+) column (\d+)")
_NUMBER = frozenset(b"0123456789+-.eE")
_SENTINEL = "number out of range"


def _out_of_range_span(body: bytes, error: dict) -> tuple[int, int] | None:
    """Where in ``body`` the number is that pydantic's JSON parser could not hold (it names no
    field for it, only a line and column), or None for any other error."""
    found = _OUT_OF_RANGE.search(error.get("msg", "")) if error["type"] == "json_invalid" else None
    if found is None:
        return None
    line, column = int(found[1]), int(found[2])
    offset = sum(len(text) + 1 for text in body.split(b"\n", line - 1)[:line - 1]) + column - 1
    offset = min(offset, len(body) - 1)
    while offset > 0 and body[offset] not in _NUMBER:
        offset -= 1
    if body[offset] not in _NUMBER:
        return None
    start, end = offset, offset
    while start > 0 and body[start - 1] in _NUMBER:
        start -= 1
    while end < len(body) and body[end] in _NUMBER:
        end += 1
    return start, end


def validate_json(model: type[BaseModel], body: bytes) -> BaseModel:
    """``model.model_validate_json(body)``, except that a number too large for any field (a
    5000-digit id: pydantic's parser reports it at a line and column) is refused naming its field,
    as every other error is."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise _located(model, body, error) from None


def _located(model: type[BaseModel], body: bytes, error: ValidationError) -> ValidationError:
    replaced = 0
    while replaced < 1_000:  # each pass finds the next such number
        [first, *_] = error.errors()
        span = _out_of_range_span(body, first)
        if span is None:
            break
        body = body[:span[0]] + json.dumps(_SENTINEL).encode() + body[span[1]:]
        replaced += 1
        try:
            model.model_validate_json(body)
        except ValidationError as again:
            error = again
        else:  # not reachable: a string is no number
            break
    if not replaced:
        return error
    details = []
    for detail in error.errors():
        if detail.get("input") == _SENTINEL:
            details.append({"type": pydantic_core.PydanticCustomError(
                "number_out_of_range", "Number out of range: far too large for this field"),
                "loc": detail["loc"], "input": None})
        else:
            details.append({key: detail[key] for key in ("type", "loc", "input", "ctx")
                            if key in detail})
    return ValidationError.from_exception_data(error.title, details)


_TRANSACTION_DECODER = msgspec.json.Decoder(_PlainTransaction)
_PLAIN_DATETIME_RE = re.compile(_PLAIN_DATETIME)


def read_transaction(body: bytes) -> dict:
    """A ``/predict`` body as the ``Transaction`` fields' values; raises pydantic's
    ``ValidationError`` naming each bad field. A plainly valid body is read by msgspec (what
    ``read_batch`` does for each row: the same rules), anything else judged by ``Transaction``."""
    try:
        row = _TRANSACTION_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        row = None
    if row is not None and _PLAIN_DATETIME_RE.match(row.tx_datetime):
        try:
            stamp = dt.datetime.fromisoformat(row.tx_datetime)
        except ValueError:  # a day that does not exist
            stamp = None
        if stamp is not None and EARLIEST <= stamp < LATEST:
            return {"transaction_id": row.transaction_id, "tx_datetime": stamp,
                    "customer_id": row.customer_id, "terminal_id": row.terminal_id,
                    "tx_amount": float(row.tx_amount)}
    return dict(validate_json(Transaction, body).__dict__)


def read_batch(body: bytes) -> ScoringJob:
    """A ``/predict_batch`` body as a job: a frame of ``REQUIRED_COLUMNS`` (the validated schema's
    dtypes) and what it asks for; raises pydantic's ``ValidationError`` naming each bad field."""
    plain = _plain_batch(body)
    return plain if plain is not None else pydantic_batch(body)


def pydantic_batch(body: bytes) -> ScoringJob:
    """``read_batch`` through the pydantic models alone: the contract the fast path keeps."""
    request = validate_json(BatchRequest, body)
    return ScoringJob(transactions_frame(request_rows(request.transactions)),
                      request.include_features, explain_all=request.explain == "all")


def facts(scorer: Scorer, state_date) -> dict:
    """What every answer says about how it was scored."""
    return {"model_version": scorer.model_version, "threshold": scorer.threshold,
            "contributions": scorer.contribution_note,
            "state_date": state_date.isoformat() if state_date else None}


SMALL_ANSWER_ROWS = 256
"""Up to this many rows scored together, features are computed one by one in plain Python
(``online_features``) and answers built as Python objects; more, by polars queries and frames.
Polars has a fixed cost a call whatever the rows, which plain Python beats for a few hundred rows
(measured in bento/README.md, "How it is built")."""

Answer = pl.DataFrame | list[dict]
"""``ScoredTransaction`` rows: a frame for many, plain dicts for a few (the same JSON, tested)."""


def state_lag_days(scored: Scored, state_date) -> pl.Series:
    """``ScoredTransaction.state_lag_days`` of each row."""
    days = scored.features.transactions.get_column("tx_datetime").dt.date()
    if state_date is None:
        return pl.repeat(0, scored.height, dtype=pl.Int64, eager=True).alias("state_lag_days")
    lag = (days - state_date).dt.total_days() - 1
    return lag.clip(lower_bound=0).alias("state_lag_days")


def predictions_frame(scored: Scored, state_date, include_features: bool = False
                      ) -> pl.DataFrame:
    """One ``ScoredTransaction`` per row, as a frame (serialised by polars: a 10,000-row batch as
    pydantic models or dicts costs more than scoring it)."""
    frame = pl.DataFrame({
        "transaction_id": scored.features.transactions["transaction_id"],
        "fraud_probability": scored.probability.astype(np.float64),
        "is_fraud": scored.is_fraud,
        "top_contributions": scored.top_contributions(),
        "state_lag_days": state_lag_days(scored, state_date),
    })
    return frame.hstack([features_struct(scored)]) if include_features else frame


def prediction_rows(scored: Scored, state_date, include_features: bool = False) -> list[dict]:
    """``predictions_frame``'s rows as dicts, in plain Python: for a few rows, a fraction of the
    cost of a frame."""
    transactions = scored.features.transactions
    if state_date is None:
        lags = [0] * scored.height
    else:  # state_lag_days, on Python dates (requests are of 1970 to 2100)
        lags = [max((when.date() - state_date).days - 1, 0)
                for when in transactions.get_column("tx_datetime").to_list()]
    rows = [
        {"transaction_id": transaction_id, "fraud_probability": probability, "is_fraud": is_fraud,
         "top_contributions": top, "state_lag_days": lag}
        for transaction_id, probability, is_fraud, top, lag in zip(
            transactions.get_column("transaction_id").to_list(),
            scored.probability.astype(np.float64).tolist(), scored.is_fraud.tolist(),
            scored.top_contribution_rows(), lags)
    ]
    if include_features:
        for row, values in zip(rows, scored.x.tolist()):
            row["features"] = dict(zip(scored.feature_names, values))
    return rows


def features_struct(scored: Scored, start: int = 0, rows: int | None = None) -> pl.Series:
    """The ``features`` column of rows ``start``..``start + rows`` of an answer."""
    return (scored.features.frame.slice(start, rows).select(pl.struct(scored.feature_names))
            .to_series().alias("features"))


def prediction_body(answered: Answered) -> bytes:
    """A ``Prediction``: the facts and the one row of an answer."""
    prediction = answered.predictions
    if isinstance(prediction, pl.DataFrame):
        [row] = json.loads(prediction.write_json())
    else:
        [row] = prediction
    return pydantic_core.to_json({**answered.facts, **row})


def batch_body(answered: Answered) -> bytes:
    """A ``BatchPrediction``; a frame's rows serialised by polars (exact shortest floats)."""
    predictions = answered.predictions
    if not isinstance(predictions, pl.DataFrame):
        return pydantic_core.to_json({**answered.facts, "predictions": predictions})
    body = io.BytesIO()
    body.write(pydantic_core.to_json(answered.facts)[:-1] + b',"predictions":')
    predictions.write_json(body)
    body.write(b"}")
    return body.getvalue()


def refusal_body(refused: Refused, single: bool) -> bytes:
    """The ``detail`` of a refusal, as validation errors are: for ``/predict`` the location is
    the transaction's own field."""
    errors = [{**e, "loc": e["loc"][2:]} if single else e for e in refused.errors]
    return pydantic_core.to_json({"detail": errors})


@dataclasses.dataclass(frozen=True)
class ScoringJob:
    """One request's transactions and what it asked for: a frame of ``REQUIRED_COLUMNS``, or
    ``/predict``'s one transaction as a tuple of their values. A micro-batch of single rows
    becomes one frame (``_required``): a frame per request cost more than scoring it."""

    transactions: pl.DataFrame | tuple
    include_features: bool = False
    explain_all: bool = True
    """Contributions for every row; else only for the flagged ones."""

    @property
    def rows(self) -> int:
        return 1 if isinstance(self.transactions, tuple) else self.transactions.height

    @property
    def frame(self) -> pl.DataFrame:
        if isinstance(self.transactions, tuple):
            return transactions_frame([self.transactions])
        return self.transactions


def _required(jobs: list[ScoringJob]) -> pl.DataFrame:
    """The jobs' transactions as one frame of ``REQUIRED_COLUMNS``."""
    if all(isinstance(job.transactions, tuple) for job in jobs):
        return transactions_frame([job.transactions for job in jobs])
    transactions = (pl.concat([job.frame for job in jobs], rechunk=False)
                    if len(jobs) > 1 else jobs[0].frame)
    if transactions.columns != list(REQUIRED_COLUMNS):
        transactions = transactions.select(REQUIRED_COLUMNS)
    return transactions


@dataclasses.dataclass(frozen=True)
class Answered:
    """A request's answer: the facts of how it was scored and its rows."""

    facts: dict
    predictions: Answer


def answer_jobs(scorer: Scorer, store: FeatureStore, jobs: list[ScoringJob],
                on_scored: Callable[[Scored], None] | None = None) -> list[Answered | Refused]:
    """Score the transactions of several requests in one call; each request's rows, in order.

    A request the store refuses (a duplicate or too old a transaction) gets its ``Refused`` and
    the others are scored together without it. ``on_scored`` (the prediction log) sees every
    scored row before any answer is handed back.

    The store refuses a call as a whole and applies nothing then, so all requests are first
    scored together, in one call (on Redis, one round trip), and only when that is refused is
    each one checked to find which.
    """
    refused: dict[int, Refused] = {}
    try:
        features, state_date = store.score_features(_required(jobs), SMALL_ANSWER_ROWS)
    except Refused as refusal:
        if len(jobs) == 1:
            return [refusal]
        seen: set[int] = set()
        for i, job in enumerate(jobs):
            refusal = store.refusal(job.frame, seen)
            if refusal is not None:
                refused[i] = refusal
            else:
                seen.update(job.frame.get_column("transaction_id").to_list())
        accepted = [job for i, job in enumerate(jobs) if i not in refused]
        if not accepted:
            return [refused[i] for i in range(len(jobs))]
        features, state_date = store.score_features(_required(accepted), SMALL_ANSWER_ROWS)
    else:
        accepted = jobs
    explain = (None if all(job.explain_all for job in accepted) else
               np.concatenate([np.full(job.rows, job.explain_all) for job in accepted]))
    scored = scorer.score(features, explain)
    if on_scored is not None:
        on_scored(scored)
    model = facts(scorer, state_date)
    parts, start = [], 0
    if scored.height <= SMALL_ANSWER_ROWS:
        rows = prediction_rows(scored, state_date,
                               include_features=any(j.include_features for j in accepted))
        for job in accepted:
            part = rows[start:start + job.rows]
            if not job.include_features:
                part = [{k: v for k, v in row.items() if k != "features"} for row in part]
            parts.append(Answered(model, part))
            start += job.rows
    else:
        predictions = predictions_frame(scored, state_date)  # once: a frame per request costs each
        for job in accepted:
            part = predictions.slice(start, job.rows)
            if job.include_features:
                part = part.hstack([features_struct(scored, start, job.rows)])
            parts.append(Answered(model, part))
            start += job.rows
    answers = iter(parts)
    return [refused[i] if i in refused else next(answers) for i in range(len(jobs))]
