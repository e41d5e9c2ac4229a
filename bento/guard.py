"""ASGI middleware in front of the prediction endpoints: the API token, the size of headers and
body, and the time a body may take to arrive.

Runs before BentoML reads a body, so an oversized request is refused without being held in memory
(BentoML itself reads the whole body, whatever its size), a body that never arrives whole (shorter
than its ``Content-Length``) does not hold its connection, and a request without the token never
reaches the model.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

import pydantic


_CLOSE = ((b"connection", b"close"),)
"""Sent with a refusal whose body was not read (whole): the connection cannot be reused."""


async def _reply(send, status: int, error: str, headers: tuple = ()) -> None:
    body = json.dumps({"error": error}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Refuses, on ``protected`` paths, requests without ``Authorization: Bearer <token>`` (when a
    token is set: 401) and bodies that are not JSON (415); on every path, request lines and
    headers over ``max_header_bytes`` together (431), bodies over ``max_bytes`` (413) and bodies
    not received whole within ``body_timeout`` seconds (408, and the connection is closed)."""

    def __init__(self, app, token: str | None, max_bytes: int, protected: frozenset[str],
                 max_header_bytes: int = 16_384, body_timeout: float = 10.0):
        self.app = app
        self.token = token.encode() if token else None
        self.max_bytes = max_bytes
        self.protected = protected
        self.max_header_bytes = max_header_bytes
        self.body_timeout = body_timeout

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) + sum(
            len(name) + len(value) + 4 for name, value in scope["headers"])
        if header_bytes > self.max_header_bytes:
            return await _reply(send, 431, f"request line and headers over {self.max_header_bytes}"
                                " bytes (FRAUD_MAX_HEADER_BYTES)", _CLOSE)
        headers = dict(scope["headers"])
        if self.token and scope["path"] in self.protected and not self._authorised(headers):
            return await _reply(send, 401, "missing or wrong API token: send the header"
                                " 'Authorization: Bearer <token>' (FRAUD_API_TOKEN)",
                                ((b"www-authenticate", b"Bearer"),))
        content_type = headers.get(b"content-type", b"application/json")
        media_type = content_type.split(b";")[0].strip().lower()  # media types ignore case
        if scope["path"] in self.protected and media_type not in (b"application/json", b""):
            return await _reply(send, 415, f"send JSON (Content-Type: application/json),"
                                f" not {media_type.decode(errors='replace')}")
        declared = headers.get(b"content-length")
        too_large = (f"request body over {self.max_bytes} bytes (FRAUD_MAX_REQUEST_BYTES);"
                     " split the batch")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply(send, 413, too_large, _CLOSE)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # The body is read here, up to the limit and within the time allowed, then handed on.
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.max_bytes:
                        return await _reply(send, 413, too_large, _CLOSE)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await _reply(send, 408, f"request body not received whole within"
                                f" {self.body_timeout:g} s (FRAUD_BODY_TIMEOUT_SECONDS)", _CLOSE)
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


class ClientErrorsAreNotServerErrors(logging.Filter):
    """Drops BentoML's ``Exception on /predict [POST]`` records whose exception is a request that
    failed validation: BentoML logs a traceback for every 400 it answers, so a client sending bad
    rows made the server write a traceback per request. The 400 itself stays in the access log
    and the metrics; real errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, pydantic.ValidationError)


BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"
"""The logger of BentoML's ``log_exception`` (its ``api_endpoint_wrapper`` calls it)."""
