"""The served model, over HTTP: a real pipeline exported by ``bento_model``, served by ``bentoml
serve`` from ``bento/`` in a subprocess on a free loopback port with its own ``BENTOML_HOME``."""

import concurrent.futures
import dataclasses
import datetime as dt
import itertools
import json
import math
import os
import random
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from fraud_dagster import registry
from fraud_dagster.core.features import FEATURE_COLUMNS, features_for_day
from fraud_dagster.core.schema import REQUIRED_COLUMNS
from fraud_dagster.resources import PredictionLogStore, SimulatorSource, local_resources
from fraud_dagster.serving.prediction_log import read_day
from fraud_dagster.serving.scoring import STATE_FILE
from fraud_dagster_tests.pipeline import LAST, SMALL_SIMULATOR, STATE_DAY, copy_project, read_partition
from fraud_dagster_tests.pipeline import retrain as retrain_in
from fraud_dagster_tests.processes import BentoServer

REPO = Path(__file__).resolve().parents[1]
HELD_OUT, STATE_DAY = LAST, STATE_DAY  # the shared project's last day, and the state's
TOKEN = "s3cret-token"
MAX_BATCH, MAX_BYTES = 2_000, 1_000_000
BODY_TIMEOUT = 2


@dataclasses.dataclass
class Project:
    data_dir: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    retrain: dg.ExecuteInProcessResult

    @property
    def bentoml_home(self) -> Path:
        return self.data_dir / "bentoml"

    def model_dirs(self) -> list[Path]:
        return sorted(p for p in (self.bentoml_home / "models" / "fraud_model").iterdir()
                      if p.name != "latest")


def retrain(defs, instance, models=("xgboost",), min_gain=0.0):
    return retrain_in(defs, instance, models, min_gain, state_date=STATE_DAY)


@pytest.fixture(scope="module")
def project(shared_project, tmp_path_factory):
    """A copy of the shared project: 75 days of a small simulator, a champion trained and
    exported with the state of the day before ``HELD_OUT``, a day of its test window that no
    model was trained on."""
    with copy_project(shared_project, tmp_path_factory.mktemp("serving") / "project") as copy:
        yield Project(copy.data_dir, copy.instance, copy.defs, copy.first_retrain)


@pytest.fixture(scope="module")
def started(project, held_out, tmp_path_factory):
    """The service with a token and small limits, on the state exported with the model (its
    feature-state folder is empty: the pipeline's own are of later days), and its answer to the
    held-out day, sent whole with its features as the server's first traffic: the service applies
    every transaction it scores, so the other tests' transactions (some of them rows of that day
    under new ids) would change the features it gives the day's later ones, in whatever order
    the tests run."""
    folder = tmp_path_factory.mktemp("server")
    client = MlflowClient(f"sqlite:///{project.data_dir / 'mlflow' / 'mlflow.db'}")
    champion = registry.load_version(client, registry.alias_version(client, registry.CHAMPION))
    served = BentoServer(project.bentoml_home, project.data_dir, folder / "server.log",
                         FRAUD_API_TOKEN=TOKEN, FRAUD_MAX_BATCH_SIZE=str(MAX_BATCH),
                         FRAUD_MAX_REQUEST_BYTES=str(MAX_BYTES),
                         FRAUD_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
                         FRAUD_FEATURE_STATE_DIR=str(folder / "no_states"))
    with served.running():
        response = httpx.post(f"{served.url}/predict_batch", timeout=120,
                              headers={"Authorization": f"Bearer {TOKEN}"},
                              json={"transactions": request_rows(held_out),
                                    "include_features": True})
        assert response.json()["model_version"] == champion.version
        yield served, response, champion


@pytest.fixture(scope="module")
def server(started):
    return started[0]


@pytest.fixture(scope="module")
def held_out_answer(started) -> httpx.Response:
    return started[1]


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http


def request_rows(transactions: pl.DataFrame) -> list[dict]:
    return [{**row, "tx_datetime": row["tx_datetime"].isoformat()}
            for row in transactions.select(REQUIRED_COLUMNS).iter_rows(named=True)]


@pytest.fixture(scope="module")
def held_out(project):
    return read_partition(project.data_dir / "assets", "validated_transactions", HELD_OUT)


@pytest.fixture(scope="module")
def champion(started):
    """The champion the server started with: tests that retrain may promote another later."""
    return started[2]


GOOD = {"transaction_id": 7, "tx_datetime": "2025-03-15T14:03:07", "customer_id": 3,
        "terminal_id": 5, "tx_amount": 42.5}


_fresh_ids = itertools.count(10**15)


def good(**changes) -> dict:
    """``GOOD`` under a transaction id never sent before: the service scores each id once."""
    return {**GOOD, "transaction_id": next(_fresh_ids), **changes}


def assert_still_answers(client):
    response = client.post("/predict", json=good())
    assert response.status_code == 200, response.text


# The export

def test_bento_model_holds_the_champion_its_state_and_lineage(project, champion):
    [model_dir] = project.model_dirs()
    info = json.loads((model_dir / "serving.json").read_text())
    assert info["registered_version"] == champion.version
    assert info["mlflow_run_id"] == champion.run_id
    assert info["threshold"] == champion.threshold
    assert tuple(info["feature_columns"]) == champion.feature_columns
    assert info["state_date"] == STATE_DAY.isoformat()
    assert info["train_window"] == champion.tags["train_window"]
    assert info["export_dagster_run_id"] == project.retrain.run_id
    assert set(info["libraries"]) >= {"python", "polars", "scikit-learn", "xgboost"}
    stored_state = read_partition(project.data_dir / "assets", "feature_state", STATE_DAY)
    assert pl.read_parquet(model_dir / STATE_FILE).equals(stored_state)
    import yaml

    labels = yaml.safe_load((model_dir / "model.yaml").read_text())["labels"]
    assert labels["training_dagster_run_id"] == champion.tags["dagster_run_id"]
    assert labels["export_dagster_run_id"] == project.retrain.run_id
    assert labels["mlflow_run_id"] == champion.run_id
    assert labels["state_date"] == STATE_DAY.isoformat()
    [materialization] = project.retrain.asset_materializations_for_node("bento_model")
    assert materialization.metadata["bentoml_tag"].value == f"fraud_model:{model_dir.name}"


def test_bentoml_build_packs_the_service_its_code_and_the_exported_model(project, tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(project.bentoml_home), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml = [sys.executable, "-m", "bentoml"]
    built = subprocess.run([*bentoml, "build", "-f", "bento/bentofile.yaml", "."], cwd=REPO,
                           env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    exported = tmp_path / "fraud_service.bento"
    done = subprocess.run([*bentoml, "export", "fraud_service:latest", str(exported)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with tarfile.open(exported) as bento:
        names = {name.removeprefix("./") for name in bento.getnames()}
    [model_dir] = project.model_dirs()
    assert f"models/fraud_model/{model_dir.name}/pipeline.skops" in names
    assert f"models/fraud_model/{model_dir.name}/feature_state.parquet" in names
    assert {"src/bento/service.py", "src/bento/guard.py", "src/fraud_dagster/serving/scoring.py",
            "src/fraud_dagster/serving/api.py", "src/fraud_dagster/serving/microbatch.py",
            "src/fraud_dagster/serving/prediction_log.py", "src/fraud_dagster/serving/__init__.py",
            "src/fraud_dagster/core/features.py", "bento.yaml"} <= names
    assert not any(name.startswith(("src/data", "src/.venv", "src/fraud_dagster_tests"))
                   for name in names)


def test_the_bento_pins_the_versions_the_project_locks_and_everything_serving_imports():
    import importlib.metadata
    import re

    import yaml

    spec = yaml.safe_load((REPO / "bento" / "bentofile.yaml").read_text())
    pins = dict(re.match(r"([\w-]+)(?:\[\w+\])?==(.+)", p).groups()
                for p in spec["python"]["packages"])
    assert {name: importlib.metadata.version(name) for name in pins} == pins
    # What bento/service.py imports, directly or through fraud_dagster, besides BentoML's own.
    assert {"polars", "numpy", "scikit-learn", "xgboost", "pydantic", "fastapi", "msgspec",
            "skops"} <= set(pins)


# What the service answers

def test_swagger_at_the_root_documents_every_endpoint(client):
    assert client.get("/").status_code == 200
    spec = client.get("/docs.json").json()
    paths = spec["paths"]
    assert {"/predict", "/predict_batch", "/metadata", "/healthz", "/readyz", "/livez",
            "/metrics"} <= set(paths)
    assert {"get", "post"} <= set(paths["/metadata"])
    schemas = spec["components"]["schemas"]
    assert any("tx_amount" in json.dumps(s) for name, s in schemas.items()
               if name.startswith("Transaction"))
    assert any("top_contributions" in json.dumps(s) for s in schemas.values())
    # Swagger renders descriptions as Markdown: reStructuredText's ``x`` is for code comments.
    described = [where for where, text in _descriptions(spec) if "``" in text]
    assert described == [], described


def _descriptions(node, where=()):
    """(path in the document, text) of every description in an OpenAPI document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield "/".join(map(str, where)), value
            else:
                yield from _descriptions(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _descriptions(value, (*where, i))


def test_swagger_ui_can_parse_the_document_no_key_twice(client):
    """Swagger UI parses /docs.json as YAML, which refuses a key given twice ("Parser error:
    duplicated mapping key", nothing rendered); Python's json keeps the last one silently. Two
    "400"s came from BentoML's int response keys beside the service's str ones."""
    def no_repeats(pairs):
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
        return dict(pairs)

    spec = json.loads(client.get("/docs.json").text, object_pairs_hook=no_repeats)
    for path in ("/predict", "/predict_batch"):
        responses = spec["paths"][path]["post"]["responses"]
        assert responses["400"]["description"].startswith("Invalid transaction(s)")
        assert "404" not in responses  # BentoML's, never answered by these endpoints
    # ...and reads numbers as JavaScript does (doubles): the examples' ids must survive that,
    # or Swagger shows and sends a rounded id and both examples send the same one (409).
    ids = [spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "example"]["transaction_id"]] + [t["transaction_id"] for t in spec["paths"][
            "/predict_batch"]["post"]["requestBody"]["content"]["application/json"]["example"][
            "transactions"]]
    assert [int(float(i)) for i in ids] == ids and len(set(ids)) == 2, ids


def test_swagger_names_the_service_its_example_is_accepted_and_its_errors_are_as_answered(
    client,
):
    spec = client.get("/docs.json").json()
    info = spec["info"]
    assert info["title"] == "Fraud detection (fraud_service)"
    assert info["version"] not in ("None", "", None)
    assert "Machine Learning Service created with BentoML" not in info["description"]
    assert "Fraud probability" in info["description"]
    schemas = spec["components"]["schemas"]
    for path in ("/predict", "/predict_batch"):
        operation = spec["paths"][path]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]
        response = client.post(path, json=example)  # what Swagger's "Try it out" sends
        assert response.status_code == 200, response.text
        documented = {status: r["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
                      for status, r in operation["responses"].items() if status != "200"}
        assert {"400", "401", "408", "409", "413", "415", "422", "431"} <= set(documented)
        # The documented 400 body is what a bad request gets: detail is a list of errors.
        refused = client.post(path, json={"transactions": [{**good(), "tx_amount": "x"}]}
                              if path == "/predict_batch" else {**good(), "tx_amount": "x"})
        assert refused.status_code == 400
        body_schema = schemas[documented["400"]]
        assert body_schema["properties"]["detail"]["type"] == "array"
        detail_item = schemas[body_schema["properties"]["detail"]["items"]["$ref"].split("/")[-1]]
        assert set(refused.json()) <= set(body_schema["properties"])
        assert isinstance(refused.json()["detail"], list)
        for error in refused.json()["detail"]:
            assert set(detail_item["required"]) <= set(error)
        again = client.post(path, json=example)  # the same id again: 409, as documented
        assert again.status_code == 409 and documented["409"] == documented["400"]
        assert isinstance(again.json()["detail"], list)


def test_health_readiness_and_prometheus_metrics_stay_on(client):
    for path in ("/healthz", "/readyz", "/livez"):
        assert client.get(path).status_code == 200
    client.post("/predict", json=good())
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text


def test_metadata_names_the_served_model_and_its_lineage(client, champion):
    for method in ("GET", "POST"):
        response = client.request(method, "/metadata")
        assert response.status_code == 200, response.text
        metadata = response.json()
        assert metadata["model_version"] == champion.version
        assert metadata["threshold"] == champion.threshold
        assert metadata["state_date"] == STATE_DAY.isoformat()
        assert metadata["lineage"]["mlflow_run_id"] == champion.run_id
        assert metadata["library_mismatches"] == {}
        assert metadata["max_batch_size"] == MAX_BATCH


def test_a_prediction_has_probability_decision_version_and_top_contributions(client, champion):
    sent = good(tx_amount=900.0)
    response = client.post("/predict", json=sent)
    assert response.status_code == 200, response.text
    prediction = response.json()
    assert prediction["transaction_id"] == sent["transaction_id"]
    assert 0 <= prediction["fraud_probability"] <= 1
    assert prediction["is_fraud"] == (prediction["fraud_probability"] >= champion.threshold)
    assert prediction["model_version"] == champion.version
    assert "pred_contribs" in prediction["contributions"]
    top = prediction["top_contributions"]
    assert len(top) == 5 and {c["feature"] for c in top} <= set(FEATURE_COLUMNS)
    magnitudes = [abs(c["contribution"]) for c in top]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert all(c["value"] == 900.0 for c in top if c["feature"] == "tx_amount")


def test_features_through_the_service_equal_the_batch_features_of_a_held_out_day(
    held_out_answer, project, held_out, champion
):
    response = held_out_answer
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert [p["transaction_id"] for p in served] == held_out["transaction_id"].to_list()
    batch = read_partition(project.data_dir / "assets", "transaction_features", HELD_OUT)
    batch_rows = {row["transaction_id"]: row for row in batch.iter_rows(named=True)}
    assert len(served) == len(batch_rows) == held_out.height > 500
    mismatches = [
        (p["transaction_id"], name, p["features"][name], batch_rows[p["transaction_id"]][name])
        for p in served for name in FEATURE_COLUMNS
        if p["features"][name] != batch_rows[p["transaction_id"]][name]
    ]
    assert mismatches == []
    ordered = batch.join(held_out.select("transaction_id"), on="transaction_id",
                         maintain_order="right")
    expected = champion.predict_proba(ordered)
    got = np.array([p["fraud_probability"] for p in served])
    assert np.max(np.abs(got - expected)) <= 1e-9
    assert [p["is_fraud"] for p in served] == (expected >= champion.threshold).tolist()


def test_unknown_customers_and_terminals_get_the_features_the_batch_path_gives_them(
    client, project, held_out
):
    state = pl.read_parquet(project.model_dirs()[0] / STATE_FILE)
    # A customer of the state that no other test sends transactions for.
    customers = state.filter(pl.col("entity") == "customer")["customer_id"]
    quiet = customers.filter(~customers.is_in(held_out["customer_id"].implode())
                             & (customers != GOOD["customer_id"]))[0]
    unknown = [good(customer_id=10**12), good(customer_id=quiet, terminal_id=10**12),
               good(customer_id=10**12 + 1, terminal_id=10**12)]
    response = client.post("/predict_batch", json={"transactions": unknown,
                                                   "include_features": True})
    assert response.status_code == 200, response.text
    frame = pl.DataFrame(unknown).with_columns(
        pl.col("tx_datetime").str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us"))
    expected = features_for_day(frame, state)
    for prediction, row in zip(response.json()["predictions"], expected.iter_rows(named=True)):
        assert prediction["features"] == {name: row[name] for name in FEATURE_COLUMNS}
    assert response.json()["predictions"][2]["features"]["customer_nb_tx_30d"] == 0


# Bad input: a 4xx naming the field, never a 500, and the server keeps answering

BAD_TRANSACTIONS = {
    "missing_field": ({k: v for k, v in GOOD.items() if k != "customer_id"}, "customer_id"),
    "extra_field": ({**GOOD, "tx_fraud": 0}, "tx_fraud"),
    "string_amount": ({**GOOD, "tx_amount": "abc"}, "tx_amount"),
    "string_id": ({**GOOD, "terminal_id": "12"}, "terminal_id"),
    "float_id": ({**GOOD, "transaction_id": 1.5}, "transaction_id"),
    "negative_amount": ({**GOOD, "tx_amount": -5.0}, "tx_amount"),
    "amount_over_the_maximum": ({**GOOD, "tx_amount": 1_000_000.01}, "tx_amount"),
    "amount_past_float32": ({**GOOD, "tx_amount": 3.5e38}, "tx_amount"),
    "negative_id": ({**GOOD, "customer_id": -1}, "customer_id"),
    "id_past_int64": ({**GOOD, "customer_id": 2**63}, "customer_id"),
    "not_a_timestamp": ({**GOOD, "tx_datetime": "yesterday"}, "tx_datetime"),
    "timestamp_with_zone": ({**GOOD, "tx_datetime": "2025-03-15T14:03:07+02:00"}, "tx_datetime"),
    "null_amount": ({**GOOD, "tx_amount": None}, "tx_amount"),
}


@pytest.mark.parametrize("case", list(BAD_TRANSACTIONS))
def test_a_bad_transaction_gets_400_naming_the_field(client, case):
    body, field = BAD_TRANSACTIONS[case]
    for path, payload, location in (("/predict", body, [field]),
                                    ("/predict_batch", {"transactions": [good(), body]},
                                     ["transactions", 1, field])):
        response = client.post(path, json=payload)
        assert response.status_code == 400, response.text
        assert [e["loc"] for e in response.json()["detail"]] == [location]
    assert_still_answers(client)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinite_amounts_get_400_naming_the_amount(client, literal):
    body = json.dumps(GOOD).replace('"tx_amount": 42.5', f'"tx_amount": {literal}')
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["loc"] == ["tx_amount"]
    assert "finite" in response.json()["detail"][0]["msg"]
    assert_still_answers(client)


@pytest.mark.parametrize("field", ["transaction_id", "customer_id", "terminal_id", "tx_amount",
                                   "tx_datetime"])
def test_a_number_of_5000_digits_gets_400_naming_its_field_without_echoing_it(client, field):
    huge = "9" * 5000
    body = json.dumps({**good(), field: 0}).replace(f'"{field}": 0', f'"{field}": {huge}')
    for path, content, location in (
            ("/predict", body, [field]),
            ("/predict_batch", f'{{"transactions": [{json.dumps(good())}, {body}]}}',
             ["transactions", 1, field])):
        response = client.post(path, content=content,
                               headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert [e["loc"] for e in response.json()["detail"]] == [location]
        assert response.json()["detail"][0]["type"] == "number_out_of_range"
        assert len(response.content) < 1000 and huge[:50] not in response.text
    assert_still_answers(client)


def _raw_exchange(server, request: bytes, wait: float) -> tuple[bytes, bool]:
    """Send ``request`` on a fresh connection; what came back within ``wait`` s and whether the
    server closed the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, False
        return answer, True


def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closed(server,
                                                                                    client):
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 500\r\n\r\n")
    answer, closed = _raw_exchange(server, head + b'{"transaction_id": 1', wait=60)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"FRAUD_BODY_TIMEOUT_SECONDS" in answer and closed
    assert_still_answers(client)


def test_headers_over_the_size_limit_get_431_and_the_connection_closed(server, client):
    for path in (b"/predict", b"/readyz"):
        request = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20_000
                   + b"\r\nContent-Length: 2\r\n\r\n{}")
        answer, closed = _raw_exchange(server, request, wait=60)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
        assert b"FRAUD_MAX_HEADER_BYTES" in answer and closed
    many = {f"x-h{i}": "v" * 100 for i in range(200)}  # many small ones add up
    assert client.get("/readyz", headers=many).status_code == 431
    assert client.get("/readyz", headers={"x-h": "v" * 1000}).status_code == 200
    assert_still_answers(client)


def test_an_empty_batch_gets_400_naming_transactions(client):
    response = client.post("/predict_batch", json={"transactions": []})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["transactions"]


def test_a_batch_over_the_configured_size_gets_400_naming_transactions(client):
    rows = [{**GOOD, "transaction_id": i} for i in range(MAX_BATCH + 1)]
    response = client.post("/predict_batch", json={"transactions": rows})
    assert response.status_code == 400
    [error] = response.json()["detail"]
    assert error["loc"] == ["transactions"] and str(MAX_BATCH) in error["msg"]
    assert client.post("/predict_batch", json={"transactions": rows[:-1]}).status_code == 200


def test_malformed_json_gets_400_saying_so(client):
    response = client.post("/predict", content=b'{"transaction_id": 7,',
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"][0]["type"] == "json_invalid"
    for body in (b"[1, 2]", b'"text"', b""):
        response = client.post("/predict", content=body,
                               headers={"content-type": "application/json"})
        assert response.status_code == 400, (body, response.text)
    assert_still_answers(client)


def test_a_body_over_the_size_limit_gets_413_declared_or_streamed(client):
    huge = b'{"transactions": [' + b" " * (MAX_BYTES + 1) + b"]}"
    response = client.post("/predict_batch", content=huge,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "FRAUD_MAX_REQUEST_BYTES" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(MAX_BYTES // 10_000 + 2):
            yield b" " * 10_000

    response = client.post("/predict_batch", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert_still_answers(client)


def test_a_body_that_is_not_json_gets_415(client):
    response = client.post("/predict", data={"transaction_id": "7"})  # a form
    assert response.status_code == 415
    assert_still_answers(client)


def test_a_zero_amount_card_verification_is_scored(client):
    for path, body in (("/predict", good(tx_amount=0)),
                       ("/predict_batch", {"transactions": [good(tx_amount=0.0)]})):
        response = client.post(path, json=body)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("media_type", ["Application/JSON", "application/json; charset=UTF-8"])
def test_media_types_are_read_whatever_their_case(client, media_type):
    for path, body in (("/predict", good()), ("/predict_batch", {"transactions": [good()]})):
        response = client.post(path, content=json.dumps(body),
                               headers={"Content-Type": media_type})
        assert response.status_code == 200, response.text


def test_prediction_endpoints_need_the_token_when_one_is_set(server):
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for path, body in (("/predict", good()), ("/predict_batch", {"transactions": [good()]})):
                response = anonymous.post(path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert "FRAUD_API_TOKEN" in response.json()["error"]
        assert anonymous.get("/metadata").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        response = anonymous.post("/predict", json=good(),
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200


# The prediction log

def logged(data_dir: Path, day: dt.date = HELD_OUT) -> pl.DataFrame:
    """What the service logged for transactions of ``day``, read as ``served_drift_report``
    reads it."""
    frame = read_day(data_dir / "predictions", day)
    return pl.DataFrame(schema={"transaction_id": pl.Int64}) if frame is None else frame


def test_served_predictions_are_logged_under_the_data_root_before_they_are_answered(
    client, project, held_out
):
    rows = [{**row, "transaction_id": 800_000 + i}  # ids no other test sends
            for i, row in enumerate(request_rows(held_out.head(20)))]
    response = client.post("/predict_batch", json={"transactions": rows})
    scores = {p["transaction_id"]: p["fraud_probability"] for p in response.json()["predictions"]}
    day_folder = project.data_dir / "predictions" / HELD_OUT.isoformat()
    assert any(day_folder.glob("*.arrows"))
    log = logged(project.data_dir).filter(pl.col("transaction_id").is_in(list(scores)))
    assert sorted(log["transaction_id"].to_list()) == sorted(scores)
    assert set(log.columns) >= {*REQUIRED_COLUMNS, *FEATURE_COLUMNS, "fraud_probability",
                                "is_fraud", "model_version", "scored_at"}
    for row in log.iter_rows(named=True):
        assert math.isclose(row["fraud_probability"], scores[row["transaction_id"]], abs_tol=1e-9)


def test_without_a_token_none_is_needed_and_with_fsync_the_log_is_the_same(project, tmp_path):
    data_dir = tmp_path / "data"
    served = BentoServer(project.bentoml_home, data_dir, tmp_path / "server.log",
                    FRAUD_PREDICTION_LOG_FSYNC="1")
    with served.running():
        response = httpx.post(f"{served.url}/predict", json=GOOD, timeout=60)
        assert response.status_code == 200, response.text
        assert logged(data_dir)["transaction_id"].to_list() == [GOOD["transaction_id"]]
        again = httpx.post(f"{served.url}/predict", json=GOOD, timeout=60)
        assert again.status_code == 409, again.text  # a retry is not applied twice
        assert again.json()["detail"][0]["loc"] == ["transaction_id"]
    assert served.process.returncode is not None
    assert logged(data_dir)["transaction_id"].to_list() == [GOOD["transaction_id"]]


def test_a_server_killed_with_sigkill_has_logged_every_prediction_it_answered(
    project, held_out, tmp_path
):
    data_dir = tmp_path / "data"
    served = BentoServer(project.bentoml_home, data_dir, tmp_path / "server.log")
    rows = request_rows(held_out.head(300))
    served.start()
    try:
        served.wait_ready()
        with httpx.Client(base_url=served.url, timeout=60) as http:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:  # scored in micro-batches
                singles = list(pool.map(lambda row: http.post("/predict", json=row), rows[:200]))
            batch = http.post("/predict_batch", json={"transactions": rows[200:]})
        served.kill()  # the server and its workers: no shutdown hook, no buffer flushed
    finally:
        served.stop()
    assert [r.status_code for r in singles] == [200] * 200 and batch.status_code == 200
    answered = [r.json()["transaction_id"] for r in singles] + [
        p["transaction_id"] for p in batch.json()["predictions"]]
    assert sorted(logged(data_dir)["transaction_id"].to_list()) == sorted(answered)


@pytest.mark.parametrize("path", ["/predict", "/predict_batch"])
@pytest.mark.parametrize("stamp", ["0000-01-01T00:00:00", "1969-12-31T23:59:59",
                                   "2100-01-01T00:00:00", "9999-12-31T23:59:59"])
def test_a_timestamp_outside_the_documented_range_gets_400_on_both_endpoints(
    client, project, path, stamp
):
    """Python's ``date`` has no year 0: it once killed the log's writer thread for good."""
    transaction = good(tx_datetime=stamp)
    body = transaction if path == "/predict" else {"transactions": [transaction]}
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["loc"][-1] == "tx_datetime"
    assert_still_answers(client)


def test_a_prediction_that_cannot_be_logged_is_answered_500_and_the_rest_still_works(
    project, tmp_path
):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "predictions").write_text("not a folder: no day folder can be made in it")
    served = BentoServer(project.bentoml_home, data_dir, tmp_path / "server.log")
    with served.running(), httpx.Client(base_url=served.url, timeout=60) as http:
        for path, body in (("/predict", good()), ("/predict_batch", {"transactions": [good()]})):
            response = http.post(path, json=body)
            assert response.status_code == 500, response.text
            assert "fraud_probability" not in response.text
        assert http.post("/predict", json={**GOOD, "tx_amount": -1}).status_code == 400
        assert http.get("/metadata").status_code == 200
        assert http.get("/readyz").status_code == 200


def test_drift_of_served_traffic_is_the_drift_of_the_same_day_in_the_batch(
    project, held_out, champion, tmp_path
):
    """``served_drift_report`` reads what the service logged; the service computes the batch
    features and scores, so for a day served whole its drift is that day's ``drift_report``."""
    from fraud_dagster.assets import features, model, monitoring, serving, transactions

    data_dir = tmp_path / "data"
    served = BentoServer(project.bentoml_home, data_dir, tmp_path / "server.log")
    with served.running():
        response = httpx.post(f"{served.url}/predict_batch", timeout=120,
                              json={"transactions": request_rows(held_out)})
        assert response.status_code == 200, response.text
    resources = {**local_resources(project.data_dir, SimulatorSource(**SMALL_SIMULATOR)),
                 "prediction_logs": PredictionLogStore(folder=str(data_dir / "predictions"))}
    result = dg.materialize(
        dg.load_assets_from_modules([transactions, features, model, serving, monitoring]),
        selection=["drift_report", "served_drift_report"],
        partition_key=HELD_OUT.isoformat(), resources=resources, instance=project.instance,
    )
    assert result.success
    batch = read_partition(project.data_dir / "assets", "drift_report", HELD_OUT).row(0, named=True)
    traffic = read_partition(project.data_dir / "assets", "served_drift_report", HELD_OUT).row(
        0, named=True)
    assert traffic["transactions"] == batch["transactions"] == held_out.height
    assert traffic["served_model_versions"] == champion.version
    assert traffic["drifted_columns"] == batch["drifted_columns"]
    assert math.isclose(traffic["share_drifted_columns"], batch["share_drifted_columns"])
    assert math.isclose(traffic["mean_score"], batch["mean_score"], rel_tol=1e-9)
    html = project.data_dir / "monitoring" / "served_drift_reports" / f"{HELD_OUT}.html"
    assert traffic["html_report"] == str(html) and "<html" in html.read_text()[:3000].lower()
    metadata = result.asset_materializations_for_node("served_drift_report")[0].metadata
    assert metadata["served_model_versions"].value == champion.version


@pytest.mark.slow  # starts bentoml serve
def test_a_missing_model_store_stops_start_up_with_a_clear_message(tmp_path):
    served = BentoServer(tmp_path / "empty_bentoml", tmp_path / "data", tmp_path / "server.log")
    assert served.exit_code() != 0
    output = served.output()
    assert "no model fraud_model:latest in the BentoML model store" in output
    assert "bento_model" in output and "BENTOML_HOME" in output


@pytest.mark.parametrize("env, message", [
    ({"FRAUD_WORKERS": "2"}, "FRAUD_WORKERS=2 with FRAUD_ONLINE_STORE=memory"),
    ({"FRAUD_ONLINE_STORE": "sqlite"}, "FRAUD_ONLINE_STORE must be one of memory, redis"),
    ({"FRAUD_ONLINE_STORE": "redis"}, "FRAUD_ONLINE_STORE=redis needs FRAUD_REDIS_URL"),
    ({"FRAUD_ACCESS_LOG": "yes"}, "FRAUD_ACCESS_LOG must be 0, 1 or all, not 'yes'"),
])
def test_a_setting_that_cannot_work_stops_start_up_saying_why(project, tmp_path, env,
                                                              message):
    served = BentoServer(project.bentoml_home, tmp_path / "data", tmp_path / "server.log", **env)
    assert served.exit_code() != 0
    assert message in served.output()


# Re-export only on promotion

def test_an_empty_feature_state_is_refused_and_the_store_is_left_as_it_was(project, tmp_path):
    from fraud_dagster.assets import features, model, monitoring, serving, transactions

    day = HELD_OUT + dt.timedelta(days=60)
    state = read_partition(project.data_dir / "assets", "feature_state", STATE_DAY)
    empty = project.data_dir / "assets" / "feature_state" / f"{day}.parquet"
    state.clear().write_parquet(empty)
    before = project.model_dirs()
    try:
        result = dg.materialize(
            dg.load_assets_from_modules([transactions, features, model, serving, monitoring]),
            selection=["bento_model"], instance=project.instance, raise_on_error=False,
            resources=local_resources(project.data_dir, SimulatorSource(**SMALL_SIMULATOR)),
            run_config={"ops": {"bento_model": {"config": {"state_date": day.isoformat()}}}},
        )
    finally:
        empty.unlink()
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "has no customers or terminals" in str(failure.step_failure_data.error)
    assert project.model_dirs() == before


def test_a_challenger_that_is_not_promoted_is_not_exported(project):
    before = project.model_dirs()
    result = retrain(project.defs, project.instance, models=("xgboost",), min_gain=0.5)
    assert result.success  # a refusal is a verdict, not a failure
    assert result.asset_materializations_for_node("bento_model") == []
    assert project.model_dirs() == before


# Fuzzing: bad requests of every kind, from a seeded generator

NUMERIC = ("transaction_id", "customer_id", "terminal_id", "tx_amount")
IDS = ("transaction_id", "customer_id", "terminal_id")


def _field_cases(rng: random.Random) -> list[tuple[str, str]]:
    """(field, JSON text of a value that field must refuse)."""
    cases = []
    for field in IDS:
        cases += [(field, '"12"'), (field, "1.5"), (field, "true"), (field, "[]"), (field, "{}"),
                  (field, "null"), (field, "-1"), (field, str(2**63)), (field, "1e400"),
                  (field, "9" * rng.randint(20, 6000)), (field, "-" + "9" * rng.randint(20, 6000)),
                  (field, "NaN"), (field, "Infinity"), (field, '"' + "x" * 5000 + '"')]
    cases += [("tx_amount", v) for v in (
        '"abc"', "true", "[]", "null", "NaN", "Infinity", "-Infinity", "1e999", "-0.01",
        "3.5e38", "1000000.01", "9" * rng.randint(400, 6000), '{"a": 1}')]
    cases += [("tx_datetime", json.dumps(v)) for v in (
        "2025-02-30T00:00:00", "2025-13-01T00:00:00", "yesterday", "2025-03-15T14:03:07+02:00",
        "2025-03-15T14:03:07Z", "0000-01-01T00:00:00", "2100-01-01T00:00:00",
        "1969-12-31T23:59:59", "2025-03-15T25:00:00", "", "2025-03-15T14:03:07.1234567x",
        "9" * 5000)]
    cases += [("tx_datetime", v) for v in ("123", "true", "null", "[]", "1" + "0" * 5000)]
    return cases


def _with(row: dict, field: str, value_json: str) -> str:
    """``row`` as JSON with ``field``'s value replaced by the raw JSON text ``value_json``."""
    text = json.dumps({**row, field: "__FUZZ__"})
    return text.replace('"__FUZZ__"', value_json)


def fuzz_requests(seed: int = 20261201):
    """Bad requests, ~150: (name, path, body bytes, content type, expected status or None for
    any 4xx, the ``loc`` expected when one field is at fault)."""
    rng = random.Random(seed)
    requests = []
    for field, value in _field_cases(rng):
        single = _with(good(), field, value)
        requests.append((f"{field}={value[:20]}", "/predict", single, "application/json", 400,
                         [field]))
        batch = [json.dumps(good()) for _ in range(rng.randint(0, 3))]
        at = rng.randint(0, len(batch))
        batch.insert(at, single)
        requests.append((f"batch {field}={value[:20]}", "/predict_batch",
                         '{"transactions": [' + ", ".join(batch) + "]}", "application/json",
                         400, ["transactions", at, field]))
    for field in REQUIRED_COLUMNS:
        missing = json.dumps({k: v for k, v in good().items() if k != field})
        requests.append((f"missing {field}", "/predict", missing, "application/json", 400,
                         [field]))
        requests.append((f"batch missing {field}", "/predict_batch",
                         f'{{"transactions": [{missing}]}}', "application/json", 400,
                         ["transactions", 0, field]))
    for extra in ("tx_fraud", "x" * 300, "transaction id", "__proto__"):
        requests.append((f"extra {extra[:20]}", "/predict", json.dumps({**good(), extra: 1}),
                         "application/json", 400, [extra]))
    requests.append(("batch include_features", "/predict_batch",
                     json.dumps({"transactions": [good()], "include_features": "yes"}),
                     "application/json", 400, ["include_features"]))
    requests.append(("batch transactions not a list", "/predict_batch",
                     '{"transactions": {"a": 1}}', "application/json", 400, ["transactions"]))
    requests.append(("batch empty", "/predict_batch", '{"transactions": []}', "application/json",
                     400, ["transactions"]))
    requests.append(("batch row not an object", "/predict_batch", '{"transactions": [7]}',
                     "application/json", 400, ["transactions", 0]))
    junk = [b'{"transaction_id": 7,', b"{'transaction_id': 7}", b"{,}", b"nul", b"\xff\xfe\x00",
            b'{"a": 1} trailing', b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
            b"", b"[]", b'"text"', b"7", b"null", b'{"transactions": [[1, 2]]}',
            bytes(rng.randrange(256) for _ in range(300)),
            json.dumps({"transactions": [{"nested": {"deep": [good()] * 3}}]}).encode(),
            b'{"transactions": [' + b"{}," * 3000 + b"{}]}"]
    for path in ("/predict", "/predict_batch"):
        for body in junk:
            requests.append((f"junk {body[:20]!r}", path, body, "application/json", 400, None))
        for media in ("text/plain", "application/xml", "multipart/form-data; boundary=x",
                      "application/x-www-form-urlencoded", "image/png"):
            requests.append((f"media {media}", path, json.dumps(good()), media, 415, None))
        requests.append(("huge body", path, b'{"transactions": [' + b" " * (MAX_BYTES + 10)
                         + b"]}", "application/json", 413, None))
    requests.append(("batch over the limit", "/predict_batch", json.dumps(
        {"transactions": [good() for _ in range(MAX_BATCH + 1)]}), "application/json", 400,
        ["transactions"]))
    rng.shuffle(requests)
    return [(name, path, body if isinstance(body, bytes) else body.encode(), media, status, loc)
            for name, path, body, media, status, loc in requests]


def test_fuzzed_bad_requests_get_a_4xx_naming_their_field_and_never_a_5xx(client, server):
    requests = fuzz_requests()
    assert len(requests) >= 100 and {r[1] for r in requests} == {"/predict", "/predict_batch"}
    failures = []
    for name, path, body, media, status, loc in requests:
        response = client.post(path, content=body, headers={"content-type": media})
        if not 400 <= response.status_code < 500 or (status and response.status_code != status):
            failures.append((name, path, response.status_code, response.text[:200]))
            continue
        if len(response.content) > 4000:  # nothing of a large input echoed back
            failures.append((name, path, "answer of", len(response.content), "bytes"))
        if loc is not None:
            got = [e["loc"] for e in response.json()["detail"]]
            if got != [loc]:
                failures.append((name, path, "loc", got, "expected", [loc]))
    assert failures == [], f"{len(failures)} of {len(requests)}: {failures[:10]}"
    assert_still_answers(client)
    assert "Traceback" not in server.output()


def test_poison_rows_are_refused_before_scoring_and_never_break_a_micro_batch(
    project, held_out, tmp_path
):
    """Eight clients sending rows that once failed a micro-batch (an amount past float32, which
    made every neighbour rescored alone with a traceback each), 5000-digit ids and NaN, beside
    eight good clients: every good request is scored in micro-batches that never fail, no poison
    row reaches the scorer. Counted, not timed."""
    data_dir = tmp_path / "data"
    served = BentoServer(project.bentoml_home, data_dir, tmp_path / "server.log",
                         FRAUD_FEATURE_STATE_DIR=str(tmp_path / "no_states"))
    rows = [{**row, "transaction_id": 900_000 + i}
            for i, row in enumerate(request_rows(held_out.head(400)))]
    poison = [json.dumps({**good(), "tx_amount": 3.5e38}),
              json.dumps(good()).replace('"customer_id": 3', '"customer_id": ' + "9" * 5000),
              json.dumps(good()).replace('"tx_amount": 42.5', '"tx_amount": NaN'),
              json.dumps({"transactions": [good(), {**good(), "tx_amount": 1e300}]})]
    with served.running(), httpx.Client(base_url=served.url, timeout=120) as http:
        def send_good(i):
            return http.post("/predict", json=rows[i]).status_code

        def send_poison(i):
            body = poison[i % len(poison)]
            path = "/predict_batch" if body.startswith('{"transactions"') else "/predict"
            return http.post(path, content=body,
                             headers={"content-type": "application/json"}).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            good_answers = pool.map(send_good, range(len(rows)))
            poison_answers = pool.map(send_poison, range(len(rows)))
            good_answers, poison_answers = list(good_answers), list(poison_answers)
    assert good_answers == [200] * len(rows)
    assert poison_answers == [400] * len(rows)
    output = served.output()
    assert "scoring each alone" not in output and "Traceback" not in output
    logged_ids = sorted(logged(data_dir)["transaction_id"].to_list())
    assert logged_ids == sorted(r["transaction_id"] for r in rows)  # poison never scored


# Per-request costs of the scoring paths

def access_logged_paths(output: str) -> set[str]:
    return {line.split("path=", 1)[1].split(",", 1)[0] for line in output.splitlines()
            if "(scheme=http,method=" in line}


@pytest.mark.parametrize("env, scoring_paths_seen", [
    ({}, False),
    ({"FRAUD_ACCESS_LOG": "all", "FRAUD_UNTRACED_PATHS": ""}, True),
])
def test_the_scoring_paths_are_access_logged_and_traced_only_when_asked(
    project, tmp_path, env, scoring_paths_seen
):
    """By default neither: BentoML's access-log line and OpenTelemetry span cost, per request,
    about what scoring one costs in a micro-batch, and the prediction log records every scored
    transaction. The log is read once the server has stopped (its output is buffered)."""
    served = BentoServer(project.bentoml_home, tmp_path / "data", tmp_path / "server.log",
                         FRAUD_FEATURE_STATE_DIR=str(tmp_path / "no_states"), **env)
    with served.running(), httpx.Client(base_url=served.url, timeout=120) as http:
        scored = http.post("/predict", json=good())
        batch = http.post("/predict_batch", json={"transactions": [good()]})
        metadata = http.get("/metadata")
    assert scored.status_code == batch.status_code == metadata.status_code == 200
    assert ("x-bentoml-request-id" in scored.headers) is scoring_paths_seen
    assert ("x-bentoml-request-id" in batch.headers) is scoring_paths_seen
    paths = access_logged_paths(served.output())
    assert "/metadata" in paths
    assert ({"/predict", "/predict_batch"} <= paths) is scoring_paths_seen
    assert (not paths & {"/predict", "/predict_batch"}) is not scoring_paths_seen
