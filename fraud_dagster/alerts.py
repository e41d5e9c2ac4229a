"""Alerts a user can see: failed runs and failed blocking checks, in a file, the logs and a webhook.

``AlertSink`` appends one JSON object per line to ``<data root>/alerts/alerts.jsonl`` and, when
``FRAUD_ALERT_WEBHOOK_URL`` is set, POSTs the same object there. A webhook that is down never loses
the alert: the file has it and the failure to deliver is logged, the URL redacted (``redact_url``:
it carries the webhook's credentials).
"""

import base64
import datetime as dt
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import dagster as dg

log = logging.getLogger(__name__)
_PLAIN_SEGMENT = re.compile(r"[a-z_-]{1,15}")
"""A path segment kept as it is in logs (``services``, ``webhooks``, ``alerts``); any other, with
capitals, digits or long (Slack's ``T0/B0/<token>``, Discord's ``<id>/<token>``), may be a secret."""


def redact_url(url: str) -> str:
    """``url`` fit for a log: scheme, host and port kept; user and password, query values,
    fragment and every path segment that may be a token replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not even a URL: nothing of it is safe to show
        return "***"
    if parts.scheme not in ("http", "https") or not host:
        return "***"
    netloc = ("***@" if parts.username or parts.password else "") + (
        f"[{host}]" if ":" in host else host) + port
    path = "/".join(segment if not segment or _PLAIN_SEGMENT.fullmatch(segment) else "***"
                    for segment in parts.path.split("/"))
    query = "&".join(f"{key if _PLAIN_SEGMENT.fullmatch(key) else '***'}=***" for key, _ in urllib.parse.parse_qsl(
        parts.query, keep_blank_values=True)) or ("***" if parts.query else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query,
                                    "***" if parts.fragment else ""))


def _redacted_error(error: BaseException, url: str) -> str:
    """The error's text without the URL or any of its secret parts (some errors quote them)."""
    if redact_url(url) == "***":
        return "the webhook URL is not an http(s) URL with a host"
    text = str(error)
    parts = urllib.parse.urlsplit(url) if url else None
    secrets = [url]
    if parts is not None:
        secrets += [parts.netloc, parts.path, parts.query, parts.fragment]
        secrets += [s for s in (parts.username, parts.password) if s]
        secrets += [s for s in parts.path.split("/") if s and not _PLAIN_SEGMENT.fullmatch(s)]
        secrets += [v for _, v in urllib.parse.parse_qsl(parts.query) if v]
    for secret in sorted({s for s in secrets if s and len(s) > 2}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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
            request = _webhook_request(self.webhook_url, json.dumps(alert, default=str).encode())
            with urllib.request.urlopen(request, timeout=self.webhook_timeout_s) as response:
                response.read()
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            # Never the URL itself: webhook URLs carry their credentials (user and password,
            # a token in the path or the query).
            log.error("alert webhook %s failed: %s: %s (the alert is in %s)",
                      redact_url(self.webhook_url), type(exc).__name__,
                      _redacted_error(exc, self.webhook_url), self.alerts_file)


def _webhook_request(url: str, body: bytes) -> urllib.request.Request:
    """A POST of ``body`` to ``url``; a user and password in the URL are sent as HTTP basic
    authentication (urllib would take them for part of the host name)."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json"}
    if parts.username or parts.password:
        credentials = (f"{urllib.parse.unquote(parts.username or '')}:"
                       f"{urllib.parse.unquote(parts.password or '')}")
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return urllib.request.Request(url, data=body, headers=headers, method="POST")


def read_alerts(alerts_file: Path) -> list[dict]:
    if not alerts_file.exists():
        return []
    return [json.loads(line) for line in alerts_file.read_text().splitlines() if line.strip()]
