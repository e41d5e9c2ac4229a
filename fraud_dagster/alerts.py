"""Alerts a user can see: failed runs and failed blocking checks, in a file, the logs and a webhook.

``AlertSink`` appends one JSON object per line to ``<data root>/alerts/alerts.jsonl`` and, when
``FRAUD_ALERT_WEBHOOK_URL`` is set, POSTs the same object there. A webhook that is down never loses
the alert: the file has it and the failure to deliver is logged.
"""

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg

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
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(alert, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.webhook_timeout_s) as response:
                response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            log.error("alert webhook %s failed: %s (the alert is in %s)",
                      self.webhook_url, exc, self.alerts_file)


def read_alerts(alerts_file: Path) -> list[dict]:
    if not alerts_file.exists():
        return []
    return [json.loads(line) for line in alerts_file.read_text().splitlines() if line.strip()]
