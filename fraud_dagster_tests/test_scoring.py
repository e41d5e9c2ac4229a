"""Scoring, micro-batching and reading requests, without a server: the service's pure parts
(the prediction log has its own tests, test_prediction_log.py)."""

import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
import xgboost

from fraud_dagster.core.labels import delivered_reports
from fraud_dagster.core.features import (
    FEATURE_COLUMNS, batch_features, features_for_day)
from fraud_dagster.core.schema import REQUIRED_COLUMNS
from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.core.training import CandidateSettings, make_pipeline
from fraud_dagster.serving.api import (
    SMALL_ANSWER_ROWS, Answered, ScoringJob, answer_jobs, batch_body, facts, prediction_body)
from fraud_dagster.serving.microbatch import MicroBatcher
from fraud_dagster.serving.scoring import Scorer, save_model_dir
from fraud_dagster.serving.store import Features, MemoryStore

DAY = dt.date(2025, 2, 20)


@pytest.fixture(scope="module")
def history():
    """Features of ten days, the state at the end of the day before ``DAY`` and ``DAY``'s rows."""
    simulator = Simulator(SimulatorConfig(n_customers=300, n_terminals=600))
    transactions = simulator.days(DAY - dt.timedelta(days=50), DAY)
    features, states = batch_features(transactions, DAY - dt.timedelta(days=9), DAY,
                                      labels=delivered_reports(transactions))
    labelled = features.join(transactions.select("transaction_id", "tx_fraud"), on="transaction_id")
    state = states.filter(pl.col("state_date") == DAY - dt.timedelta(days=1))
    day = transactions.filter(pl.col("tx_datetime").dt.date() == DAY)
    return labelled, state, day


def scorer_for(candidate: str, history, tmp_path, exact: bool = False) -> Scorer:
    labelled, state, _ = history
    x = labelled.select(FEATURE_COLUMNS).to_numpy()
    y = labelled["tx_fraud"].to_numpy()
    settings = CandidateSettings(forest_trees=10, resampled_fraud_ratio=0.9)
    pipeline = make_pipeline(candidate, settings, y).fit(x, y)
    save_model_dir(tmp_path, pipeline, state, threshold=0.5, feature_columns=FEATURE_COLUMNS,
                   info={"registered_version": "3"})
    return Scorer.load(tmp_path, exact_contributions=exact)


def as_features(transactions: pl.DataFrame, state: pl.DataFrame) -> Features:
    return Features.from_frame(transactions.select(REQUIRED_COLUMNS),
                               features_for_day(transactions, state))


def store_for(state: pl.DataFrame) -> MemoryStore:
    store = MemoryStore()
    store.load_state(state)
    return store


def test_scores_come_back_in_request_order_with_the_batch_features(history, tmp_path):
    _, state, day = history
    scorer = scorer_for("xgboost+none", history, tmp_path)
    shuffled = day.select(REQUIRED_COLUMNS).sample(fraction=1.0, shuffle=True, seed=1)
    features, state_date = store_for(state).score_features(shuffled, feature_rows=16)
    scored = scorer.score(features)
    assert state_date == DAY - dt.timedelta(days=1)
    assert features.frame["transaction_id"].to_list() == shuffled["transaction_id"].to_list()
    expected = features_for_day(day, state)
    assert features.frame.sort("transaction_id").equals(expected.sort("transaction_id"))
    direct = scorer.pipeline.predict_proba(features.frame.select(FEATURE_COLUMNS).to_numpy())
    assert np.array_equal(scored.probability, direct[:, 1])
    assert np.array_equal(scored.is_fraud, direct[:, 1] >= 0.5)


@pytest.mark.parametrize("exact", [False, True])
def test_xgboost_contributions_are_its_own_and_add_up_to_the_log_odds(history, tmp_path, exact):
    scorer = scorer_for("xgboost+none", history, tmp_path, exact)
    scored = scorer.score(as_features(history[2].head(50), history[1]))
    x = xgboost.DMatrix(scored.x)
    booster = scorer.classifier.get_booster()
    contribs = booster.predict(x, pred_contribs=True, approx_contribs=not exact)
    assert np.array_equal(scored.contributions, contribs[:, :-1])
    assert np.allclose(contribs.sum(axis=1), booster.predict(x, output_margin=True), atol=1e-4)
    assert ("exact TreeSHAP" in scorer.contribution_note) == exact
    top = scored.top_contributions(3).to_list()[0]
    assert [c["feature"] for c in top] == [FEATURE_COLUMNS[j] for j in
                                          np.argsort(-np.abs(contribs[0, :-1]), kind="stable")[:3]]
    assert top[0]["contribution"] == float(contribs[0, FEATURE_COLUMNS.index(top[0]["feature"])])


def test_logistic_regression_contributions_add_up_to_its_log_odds(history, tmp_path):
    scorer = scorer_for("logistic_regression+undersample", history, tmp_path)
    scored = scorer.score(as_features(history[2].head(50), history[1]))
    x = scored.x
    log_odds = scorer.pipeline.decision_function(x)
    intercept = scorer.classifier.intercept_[0]
    assert np.allclose(scored.contributions.sum(axis=1) + intercept, log_odds, atol=1e-9)
    assert "linear" in scorer.contribution_note


def test_random_forest_says_contributions_are_unavailable(history, tmp_path):
    scorer = scorer_for("random_forest+none", history, tmp_path)
    scored = scorer.score(as_features(history[2].head(5), history[1]))
    assert scored.contributions is None
    assert scored.top_contributions().to_list() == [None] * 5
    assert scorer.contribution_note.startswith("unavailable: RandomForestClassifier")


@pytest.mark.parametrize("candidate", ["xgboost+none", "xgboost+smote",
                                       "logistic_regression+undersample", "random_forest+smote"])
def test_the_exported_model_is_loaded_without_pickle_and_gives_the_same_probabilities(
    history, tmp_path, candidate, monkeypatch
):
    import pickle
    import zipfile

    labelled, state, day = history
    x = labelled.select(FEATURE_COLUMNS).to_numpy()
    y = labelled["tx_fraud"].to_numpy()
    pipeline = make_pipeline(candidate, CandidateSettings(forest_trees=10,
                                                          resampled_fraud_ratio=0.9), y).fit(x, y)
    save_model_dir(tmp_path, pipeline, state, threshold=0.5, feature_columns=FEATURE_COLUMNS,
                   info={"registered_version": "3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "feature_state.parquet", "pipeline.skops", "serving.json"]
    with zipfile.ZipFile(tmp_path / "pipeline.skops") as archive:  # skops: JSON and .npy
        assert "schema.json" in archive.namelist()

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded with pickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    scorer = Scorer.load(tmp_path)
    # The scorer runs its classifier on one thread: a forest's parallel sum is not bit-stable.
    pipeline.steps[-1][1].set_params(n_jobs=1)
    rows = features_for_day(day, state).select(FEATURE_COLUMNS).to_numpy()
    assert np.array_equal(scorer.pipeline.predict_proba(rows), pipeline.predict_proba(rows))
    scored = scorer.score(as_features(day, state))
    assert np.array_equal(scored.probability, pipeline.predict_proba(scored.x)[:, 1])


def test_a_model_file_with_a_type_training_never_makes_is_not_loaded(history, tmp_path):
    import collections

    import skops.io
    import skops.io.exceptions

    _, state, _ = history
    save_model_dir(tmp_path, collections.Counter(a=1), state, threshold=0.5,
                   feature_columns=FEATURE_COLUMNS, info={"registered_version": "3"})
    with pytest.raises(skops.io.exceptions.UntrustedTypesFoundException, match="Counter"):
        Scorer.load(tmp_path)


def test_a_model_exported_with_pickle_is_refused_saying_so(history, tmp_path):
    (tmp_path / "pipeline.pkl").write_bytes(b"not loaded")
    (tmp_path / "serving.json").write_text("{}")
    history[1].write_parquet(tmp_path / "feature_state.parquet")
    with pytest.raises(FileNotFoundError, match="pipeline.pkl.*bento_model"):
        Scorer.load(tmp_path)


def test_a_folder_without_a_model_is_refused_with_the_asset_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialise the bento_model asset"):
        Scorer.load(tmp_path)


class SlowScorer:
    """Records the jobs it is given and takes a while, like a real scoring call."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[list[int]] = []
        self.fail_on = fail_on

    def __call__(self, jobs: list[int]) -> list[str]:
        self.calls.append(jobs)
        time.sleep(0.05)
        if self.fail_on in jobs:
            raise ValueError("cannot score")
        return [f"scored {job}" for job in jobs]


def test_requests_arriving_while_scoring_are_scored_together_in_order():
    scorer = SlowScorer()
    batcher = MicroBatcher(scorer, rows=lambda job: 1, max_rows=100)

    async def main():
        first = asyncio.create_task(batcher.score(100))
        await asyncio.sleep(0.01)  # the first is being scored, alone
        rest = await asyncio.gather(*(batcher.score(job) for job in range(20)))
        return await first, rest

    first, rest = asyncio.run(main())
    assert scorer.calls == [[100], list(range(20))]
    assert first == "scored 100"
    assert rest == [f"scored {job}" for job in range(20)]
    batcher.shutdown()


def test_a_batch_never_exceeds_max_rows_and_one_bad_request_fails_alone():
    scorer = SlowScorer(fail_on=7)
    batcher = MicroBatcher(scorer, rows=lambda job: 2, max_rows=8)

    async def main():
        return await asyncio.gather(*(batcher.score(job) for job in range(20)),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert max(len(call) for call in scorer.calls) <= 4
    assert [i for i, r in enumerate(results) if isinstance(r, Exception)] == [7]
    assert results[8] == "scored 8"
    batcher.shutdown()


def as_rows(answer) -> list[dict]:
    return answer.to_dicts() if isinstance(answer, pl.DataFrame) else answer


@pytest.mark.parametrize("n", [7, SMALL_ANSWER_ROWS + 20])  # answers as rows, and as frames
def test_jobs_scored_together_get_their_own_rows_and_features_if_asked(history, tmp_path, n):
    scorer = scorer_for("xgboost+none", history, tmp_path)
    rows = history[2].select(REQUIRED_COLUMNS).head(n)
    jobs = [ScoringJob(rows[:1]), ScoringJob(rows[1:5], include_features=True),
            ScoringJob(rows[5:])]
    answers = [a.predictions for a in answer_jobs(scorer, store_for(history[1]), jobs)]
    one_store = store_for(history[1])
    alone = [answer_jobs(scorer, one_store, [job])[0].predictions for job in jobs]
    assert [as_rows(a) for a in answers] == [as_rows(b) for b in alone]
    assert [len(as_rows(a)) for a in answers] == [1, 4, n - 5]
    assert "features" not in as_rows(answers[0])[0] and "features" in as_rows(answers[1])[0]
    assert as_rows(answers[1])[0]["transaction_id"] == rows["transaction_id"][1]


def test_a_refused_request_fails_alone_and_its_neighbours_are_scored(history, tmp_path):
    scorer = scorer_for("xgboost+none", history, tmp_path)
    store = store_for(history[1])
    rows = history[2].select(REQUIRED_COLUMNS).head(6)
    answer_jobs(scorer, store, [ScoringJob(rows[:1])])
    stale = rows[4:5].with_columns(pl.col("tx_datetime") - dt.timedelta(days=1))
    jobs = [ScoringJob(rows[:1]), ScoringJob(rows[1:3]), ScoringJob(rows[1:2]),
            ScoringJob(stale), ScoringJob(rows[3:4])]
    results = answer_jobs(scorer, store, jobs)
    statuses = [getattr(r, "status", 200) for r in results]
    assert statuses == [409, 200, 409, 422, 200]
    assert results[0].errors[0]["loc"] == ["transactions", 0, "transaction_id"]
    assert results[3].errors[0]["loc"] == ["transactions", 0, "tx_datetime"]
    assert store.info().transactions_applied == 4
    [alone] = answer_jobs(scorer, store, [ScoringJob(rows[1:2])])
    assert alone == store.refusal(rows[1:2], set()) and alone.status == 409


def test_a_requests_logged_rows_are_those_of_its_frame(history, tmp_path):
    """A few rows are logged as a record batch built in Arrow, many through their frame: the
    same columns, types and values, so one day's file takes both."""
    from fraud_dagster.serving.prediction_log import _record_batch, scored_rows

    scorer = scorer_for("xgboost+none", history, tmp_path)
    features, _ = store_for(history[1]).score_features(
        history[2].select(REQUIRED_COLUMNS).head(5), feature_rows=16)
    scored = scorer.score(features)
    few = scored_rows(scored, "3")
    as_frame = dataclasses.replace(scored, features=Features(
        features.transactions, features.values, features.frame))
    many = _record_batch(scored_rows(as_frame, "3"))
    assert few.schema.equals(many.schema, check_metadata=True)
    assert few.drop_columns(["scored_at"]).equals(many.drop_columns(["scored_at"]))
    assert few.column("scored_at").type == many.column("scored_at").type


@pytest.mark.parametrize("candidate", ["xgboost+none", "logistic_regression+undersample"])
def test_a_batch_explains_its_flagged_rows_and_those_asked_for_with_the_full_batch_values(
    history, tmp_path, candidate
):
    scorer = scorer_for(candidate, history, tmp_path)
    features = as_features(history[2].head(200), history[1])
    everything = scorer.score(features)
    flagged = everything.is_fraud
    assert 0 < flagged.sum() < len(flagged), "the sample needs flagged and unflagged rows"
    asked = np.zeros(len(flagged), dtype=bool)
    asked[[0, 7, 50]] = True
    some = scorer.score(features, asked)
    assert np.array_equal(some.explained, flagged | asked)
    assert np.array_equal(some.probability, everything.probability)
    # a row's contributions are the same bits whichever other rows are explained with it
    assert np.array_equal(some.contributions, everything.contributions[some.explained])
    full, partial = everything.top_contributions().to_list(), some.top_contributions().to_list()
    assert partial == [top if yes else None for top, yes in zip(full, some.explained)]
    assert some.top_contribution_rows() == partial
    nothing = scorer.score(Features(features.transactions[:0], features.values[:0]),
                           asked[:0])
    assert nothing.height == 0
    unflagged = np.flatnonzero(~flagged)[:3]
    none_asked = scorer.score(as_features(history[2][unflagged.tolist()], history[1]),
                              np.zeros(3, dtype=bool))
    assert none_asked.top_contribution_rows() == [None] * 3
    assert none_asked.top_contributions().to_list() == [None] * 3


def test_a_micro_batch_explains_each_request_as_it_asked(history, tmp_path):
    scorer = scorer_for("xgboost+none", history, tmp_path)
    rows = history[2].select(REQUIRED_COLUMNS).head(300)
    single = tuple(rows.row(0))
    jobs = [ScoringJob(single), ScoringJob(rows[1:150], explain_all=False),
            ScoringJob(rows[150:], explain_all=True)]
    [one, flagged_only, every] = answer_jobs(scorer, store_for(history[1]), jobs)
    assert as_rows(one.predictions)[0]["top_contributions"] is not None
    answered = as_rows(flagged_only.predictions)
    assert all((row["top_contributions"] is not None) == row["is_fraud"] for row in answered)
    assert any(row["is_fraud"] for row in answered) and not all(r["is_fraud"] for r in answered)
    assert all(row["top_contributions"] is not None for row in as_rows(every.predictions))


@pytest.mark.parametrize("candidate", ["xgboost+none", "random_forest+none"])
@pytest.mark.parametrize("explain_all", [True, False])
def test_answers_as_rows_and_as_frames_are_the_same_json(history, tmp_path, candidate,
                                                         explain_all):
    from fraud_dagster.serving.api import prediction_rows, predictions_frame

    scorer = scorer_for(candidate, history, tmp_path)
    features = as_features(history[2].head(20), history[1])
    scored = scorer.score(features, None if explain_all else np.arange(20) % 3 == 0)
    for day, include_features in itertools.product(
            (DAY - dt.timedelta(days=1), DAY - dt.timedelta(days=4), None), (False, True)):
        model = facts(scorer, day)
        frame = predictions_frame(scored, day, include_features)
        rows = prediction_rows(scored, day, include_features)
        assert rows == frame.to_dicts()
        assert (json.loads(batch_body(Answered(model, rows)))
                == json.loads(batch_body(Answered(model, frame))))
        assert (json.loads(prediction_body(Answered(model, rows[:1])))
                == json.loads(prediction_body(Answered(model, frame.head(1)))))


def test_response_bodies_keep_every_float_exactly(history, tmp_path):
    from fraud_dagster.serving.api import predictions_frame

    scorer = scorer_for("xgboost+none", history, tmp_path)
    day = DAY - dt.timedelta(days=1)
    frame = predictions_frame(scorer.score(as_features(history[2].head(20), history[1])),
                              day, True)
    model = facts(scorer, day)
    batch = json.loads(batch_body(Answered(model, frame)))
    assert batch["predictions"] == frame.to_dicts()
    assert {k: batch[k] for k in model} == model
    single = json.loads(prediction_body(Answered(model, frame.head(1).drop("features"))))
    assert single == {**model, **frame.head(1).drop("features").to_dicts()[0]}


@pytest.mark.slow  # imports the serving package in a new process
def test_the_serving_package_imports_neither_dagster_nor_bentoml():
    """The service's runtime is plain Python: BentoML wires it in, a plain FastAPI app can too."""
    probe = ("import sys, fraud_dagster.serving.api, fraud_dagster.serving.microbatch,"
             " fraud_dagster.serving.prediction_log, fraud_dagster.serving.scoring,"
             " fraud_dagster.serving.store, fraud_dagster.serving.redis_store,"
             " fraud_dagster.serving.live;"
             " print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'bentoml'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_request_columns_are_the_validated_schemas_required_fields():
    from fraud_dagster.serving.api import Transaction, request_rows

    assert tuple(Transaction.model_fields) == REQUIRED_COLUMNS
    given = dict(zip(REQUIRED_COLUMNS, (1, dt.datetime(2025, 3, 4, 5, 6), 2, 3, 4.5)))
    shuffled = dict(reversed(list(given.items())))
    assert request_rows([Transaction.model_validate(shuffled)]) == [tuple(given.values())]


# Reading /predict_batch bodies: the fast path agrees with the pydantic models, or steps aside

def test_a_days_batch_reads_the_same_as_through_the_pydantic_models(history):
    from fraud_dagster.serving.api import _plain_batch, pydantic_batch, read_batch

    day = history[2].select(REQUIRED_COLUMNS)
    rows = [{**row, "tx_datetime": row["tx_datetime"].isoformat()}
            for row in day.iter_rows(named=True)]
    body = json.dumps({"transactions": rows, "include_features": True}).encode()
    assert _plain_batch(body) is not None  # the fast path took it
    job = read_batch(body)
    expected = pydantic_batch(body).transactions
    assert job.include_features is True and job.explain_all is False
    assert job.transactions.schema == expected.schema
    assert job.transactions.equals(expected) and job.transactions.equals(day)


GOOD_ROW = '"transaction_id": 1, "tx_datetime": "2025-03-15T14:03:07", "customer_id": 2,' \
    ' "terminal_id": 3, "tx_amount": 12.5'


@pytest.mark.parametrize("body", [
    '{"transactions": [{%s}]}' % GOOD_ROW,
    '{"transactions": [{%s}], "include_features": false}' % GOOD_ROW,
    '{"transactions": [{%s, "transaction_id": 9}]}' % GOOD_ROW,  # a repeated key: the last wins
    '{"transactions": [{%s}]}' % GOOD_ROW.replace("12.5", "12"),
    '{"transactions": [{%s}]}' % GOOD_ROW.replace("12.5", "5e-324"),
    *('{"transactions": [{%s}]}' % GOOD_ROW.replace("2025-03-15T14:03:07", stamp) for stamp in (
        "2025-03-15 14:03:07", "2025-03-15t14:03:07", "2025-03-15T14:03:07.5",
        "2025-03-15T14:03:07.1234567", "2025-03-15T14:03", "2025-03-15T24:00:00",
        "2025-03-15T23:59:60", "2025-02-30T14:03:07", "2025-3-15T14:03:07", "2025-03-15T14:03:07Z",
        "2025-03-15T14:03:07+01:00", "1742047387", "", "0000-01-01T00:00:00",
        "1969-12-31T23:59:59", "1970-01-01T00:00:00", "2099-12-31T23:59:59.999999",
        "2100-01-01T00:00:00", "2024-02-29T23:59:59.999999", "2023-02-29T00:00:00",
        "2025-04-31T01:00:00", "2025-03-15T14:03:07.000001")),
    *('{"transactions": [{%s}]}' % GOOD_ROW.replace('"customer_id": 2', bad) for bad in (
        '"customer_id": true', '"customer_id": 2.0', '"customer_id": "2"', '"customer_id": -2',
        '"customer_id": 9223372036854775808', '"customer_id": null', '"customer_id": [2]')),
    *('{"transactions": [{%s}]}' % GOOD_ROW.replace('"tx_amount": 12.5', bad) for bad in (
        '"tx_amount": 0', '"tx_amount": -0.0', '"tx_amount": -1', '"tx_amount": 1e400',
        '"tx_amount": 1000000.0', '"tx_amount": 1000000.01', '"tx_amount": 3.5e38',
        '"tx_amount": NaN', '"tx_amount": Infinity', '"tx_amount": "12.5"', '"tx_amount": true')),
    '{"transactions": [{%s, "tx_fraud": 0}]}' % GOOD_ROW,
    '{"transactions": [{%s}]}' % GOOD_ROW.replace('"terminal_id": 3,', ""),
    '{"transactions": [{%s}], "include_features": "yes"}' % GOOD_ROW,
    '{"transactions": [{%s}], "explain": "all"}' % GOOD_ROW,
    '{"transactions": [{%s}], "explain": "flagged", "include_features": true}' % GOOD_ROW,
    '{"transactions": [{%s}], "explain": "none"}' % GOOD_ROW,
    '{"transactions": [{%s}], "explain": true}' % GOOD_ROW,
    '{"transactions": [{%s}], "extra": 1}' % GOOD_ROW,
    '{"transactions": []}', '{"transactions": {}}', '[{"transactions": [{%s}]}]' % GOOD_ROW,
    '{"transactions": [{%s}]' % GOOD_ROW, "", "{}",
])
def test_any_body_reads_as_the_pydantic_models_read_it(body):
    from pydantic import ValidationError

    from fraud_dagster.serving.api import pydantic_batch, read_batch

    try:
        expected = pydantic_batch(body.encode())
    except ValidationError as error:
        with pytest.raises(ValidationError) as raised:
            read_batch(body.encode())
        assert raised.value.errors(include_input=False) == error.errors(include_input=False)
        return
    job = read_batch(body.encode())
    assert job.transactions.equals(expected.transactions)
    assert job.transactions.schema == expected.transactions.schema
    assert (job.include_features, job.explain_all) == (expected.include_features,
                                                       expected.explain_all)


def test_a_batch_over_the_limit_is_refused_by_the_pydantic_model():
    from pydantic import ValidationError

    from fraud_dagster.serving.api import MAX_BATCH_SIZE, read_batch

    body = '{"transactions": [%s]}' % ", ".join(["{%s}" % GOOD_ROW] * (MAX_BATCH_SIZE + 1))
    with pytest.raises(ValidationError, match="at most"):
        read_batch(body.encode())
