"""ASGI middleware in front of the prediction endpoints: the API token and the request size limit.

Runs before BentoML reads a body, so an oversized request is refused without being held in memory
(BentoML itself reads the whole body, whatever its size) and a request without the token never
reaches the model.
"""

from __future__ import annotations

import hmac
import json


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
    token is set: 401) and bodies that are not JSON (415); on every path, bodies over
    ``max_bytes`` (413)."""

    def __init__(self, app, token: str | None, max_bytes: int, protected: frozenset[str]):
        self.app = app
        self.token = token.encode() if token else None
        self.max_bytes = max_bytes
        self.protected = protected

    def _authorised(self, scope) -> bool:
        headers = dict(scope["headers"])
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token and scope["path"] in self.protected and not self._authorised(scope):
            return await _reply(send, 401, "missing or wrong API token: send the header"
                                " 'Authorization: Bearer <token>' (FRAUD_API_TOKEN)",
                                ((b"www-authenticate", b"Bearer"),))
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"application/json")
        media_type = content_type.split(b";")[0].strip().lower()  # media types ignore case
        if scope["path"] in self.protected and media_type not in (b"application/json", b""):
            return await _reply(send, 415, f"send JSON (Content-Type: application/json),"
                                f" not {media_type.decode(errors='replace')}")
        declared = headers.get(b"content-length")
        too_large = (f"request body over {self.max_bytes} bytes (FRAUD_MAX_REQUEST_BYTES);"
                     " split the batch")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply(send, 413, too_large)
        if declared is not None or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # No length given (chunked): read the body here, up to the limit, then hand it on.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reply(send, 413, too_large)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
