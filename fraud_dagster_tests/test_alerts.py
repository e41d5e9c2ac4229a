"""Failed runs and failed blocking checks end up in the alerts file, and at the webhook when set."""

import base64
import datetime as dt
import http.server
import json
import threading

import dagster as dg
import pytest

from fraud_dagster.alerts import read_alerts
from fraud_dagster.resources import AlertSink
from fraud_dagster.sensors import check_failure_alerts, run_failure_alerts
from fraud_dagster_tests.pipeline import run_ingest
from fraud_dagster_tests.landing_files import corrupt_amounts, handbook_frame, land_accepted

DAY = dt.date(2025, 1, 2)


@pytest.fixture
def failed_ingest(landing_defs, landing_dir, instance):
    """A day with 20 % negative amounts: the quarantine-rate check fails and so does the run."""
    land_accepted(landing_dir, DAY, corrupt_amounts(handbook_frame(DAY, 100), 20))
    result = run_ingest(landing_defs, instance, DAY, DAY)
    assert not result.success
    return result


def test_a_failed_blocking_check_is_recorded_once(failed_ingest, landing_defs, instance, tmp_path):
    sink = AlertSink(alerts_file=str(tmp_path / "alerts.jsonl"))
    context = dg.build_sensor_context(instance=instance, definitions=landing_defs,
                                      resources={"alerts": sink})
    check_failure_alerts(context)
    [alert] = read_alerts(tmp_path / "alerts.jsonl")
    assert alert["kind"] == "check_failure"
    assert alert["check"] == "quarantine_rate_below_threshold"
    assert alert["days"] == DAY.isoformat()
    assert alert["run_id"] == failed_ingest.run_id
    # The cursor moved past it: evaluating again records nothing new.
    again = dg.build_sensor_context(instance=instance, cursor=context.cursor,
                                    definitions=landing_defs, resources={"alerts": sink})
    check_failure_alerts(again)
    assert len(read_alerts(tmp_path / "alerts.jsonl")) == 1


def test_a_failed_run_is_recorded(failed_ingest, instance, tmp_path):
    sink = AlertSink(alerts_file=str(tmp_path / "alerts.jsonl"))
    [failure] = [e for e in failed_ingest.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=failed_ingest.dagster_run,
        resources={"alerts": sink},
    ).for_run_failure()
    run_failure_alerts(context)
    [alert] = read_alerts(tmp_path / "alerts.jsonl")
    assert alert["kind"] == "run_failure"
    assert alert["job"] == "ingest_job"
    assert alert["run_id"] == failed_ingest.run_id


class _Recorder(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alerts_are_posted_to_the_webhook_and_kept_when_it_is_down(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/alerts"
    try:
        AlertSink(alerts_file=str(tmp_path / "a.jsonl"), webhook_url=url).send("test", "hello")
    finally:
        server.shutdown()
    assert [a["summary"] for a in _Recorder.received] == ["hello"]
    # Nothing listens any more: the alert still lands in the file.
    AlertSink(alerts_file=str(tmp_path / "a.jsonl"), webhook_url=url, webhook_timeout_s=1).send(
        "test", "webhook down"
    )
    assert [a["summary"] for a in read_alerts(tmp_path / "a.jsonl")] == ["hello", "webhook down"]


class _Failing(http.server.BaseHTTPRequestHandler):
    authorizations: list[str] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.authorizations.append(self.headers.get("Authorization"))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


SECRETS = ("hookuser", "hunter2pass", "T024BE7LD", "B0GHJ7Q2Z", "xoxb4f9Zk2LpQ7wRtY",
           "sig0Rk9c3Vq", "frag8Secret")


def _secret_url(port: int) -> str:
    return (f"http://hookuser:hunter2pass@127.0.0.1:{port}/services/T024BE7LD/B0GHJ7Q2Z/"
            "xoxb4f9Zk2LpQ7wRtY?sig=sig0Rk9c3Vq&v=1#frag8Secret")


@pytest.mark.parametrize("failure", ["answers_500", "nothing_listens", "not_a_url"])
def test_a_failing_webhook_never_logs_its_url_whole(tmp_path, caplog, failure):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Failing)
    port = server.server_port
    if failure == "answers_500":
        threading.Thread(target=server.serve_forever, daemon=True).start()
    else:
        server.server_close()  # the port is free: the connection is refused
    url = _secret_url(port) if failure != "not_a_url" else "hunter2pass:xoxb4f9Zk2LpQ7wRtY"
    try:
        with caplog.at_level("DEBUG"):
            AlertSink(alerts_file=str(tmp_path / "a.jsonl"), webhook_url=url,
                      webhook_timeout_s=5).send("test", "webhook failing")
    finally:
        if failure == "answers_500":
            server.shutdown()
    [failed] = [r for r in caplog.records if "alert webhook" in r.getMessage()]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [secret for secret in SECRETS if secret in logged], logged
    if failure != "not_a_url":
        assert f"http://***@127.0.0.1:{port}/services/***/***/***?sig=***&v=***#***" in logged
    assert {"answers_500": "HTTP Error 500", "nothing_listens": "refused",
            "not_a_url": "not an http(s) URL"}[failure] in failed.getMessage()
    assert [a["summary"] for a in read_alerts(tmp_path / "a.jsonl")] == ["webhook failing"]
    if failure == "answers_500":  # the URL's user and password went as basic authentication
        assert _Failing.authorizations[-1] == "Basic " + base64.b64encode(
            b"hookuser:hunter2pass").decode()


def test_redact_url_keeps_what_says_where_and_hides_the_rest():
    from fraud_dagster.alerts import redact_url

    assert redact_url("https://hooks.example.com/alerts") == "https://hooks.example.com/alerts"
    assert redact_url("https://u:p@hooks.example.com:8443/api/webhooks/1234/AbCdEf?token=x") == (
        "https://***@hooks.example.com:8443/api/webhooks/***/***?token=***")
    assert redact_url("https://h.example.com/x?secret") == "https://h.example.com/x?secret=***"
    assert redact_url("https://h.example.com/x?Ab12cD34") == "https://h.example.com/x?***=***"
    assert redact_url("http://[::1]:99999/") == "***"
