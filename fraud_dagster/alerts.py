"""Alerts a user can see: failed runs and failed blocking checks, in a file, the logs and a webhook.

The ``AlertSink`` resource (``fraud_dagster.resources``) appends one JSON object per line to
``<data root>/alerts/alerts.jsonl`` and, when ``FRAUD_ALERT_WEBHOOK_URL`` is set, POSTs the same
object there. A webhook that is down never loses the alert: the file has it and the failure to
deliver is logged, the URL redacted (``redact_url``: it carries the webhook's credentials). This
module is the part that knows nothing of Dagster: the redaction, the request, reading the file.
"""

import base64
import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

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


def redacted_error(error: BaseException, url: str) -> str:
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


def webhook_request(url: str, body: bytes) -> urllib.request.Request:
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
