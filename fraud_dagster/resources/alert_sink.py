"""The alerts resource: each alert in the alerts file, the log and, when set, a webhook
(what is sent and how: ``fraud_dagster.alerts``)."""

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg

from fraud_dagster.alerts import redact_url, redacted_error, webhook_request

log = logging.getLogger(__name__)


class AlertSink(dg.ConfigurableResource):
    alerts_file: str
    webhook_url: str | None = None
    webhook_timeout_s: float = 5.0

    def send(self, kind: str, summary: str, **details) -> dict:
        alert = {
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "kind": kind,
            "summary": summary,
            **details,
        }
        path = Path(self.alerts_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf8") as handle:
            handle.write(json.dumps(alert, default=str) + "\n")
        log.warning("fraud_dagster alert: %s", summary)
        if self.webhook_url:
            self._post(alert)
        return alert

    def _post(self, alert: dict) -> None:
        try:
            request = webhook_request(self.webhook_url, json.dumps(alert, default=str).encode())
            with urllib.request.urlopen(request, timeout=self.webhook_timeout_s) as response:
                response.read()
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            # Never the URL itself: webhook URLs carry their credentials (user and password,
            # a token in the path or the query).
            log.error("alert webhook %s failed: %s: %s (the alert is in %s)",
                      redact_url(self.webhook_url), type(exc).__name__,
                      redacted_error(exc, self.webhook_url), self.alerts_file)
