"""The one HTTP client of the tests and the benchmark: stdlib, real HTTP against Daphne, any answer returned."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str | None:
        """`error.code` of the API's one error shape (asserting the shape on the way)."""
        doc = self.json()
        assert set(doc) >= {"error"} and set(doc["error"]) >= {"code", "message"}, doc
        return doc["error"]["code"]


def call(method: str, url: str, *, body: Any = None, raw: bytes | None = None, headers: dict | None = None,
         token: str | None = None, content_type: str = "application/json") -> Reply:
    """One request; `body` is sent as JSON, `raw` as is."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        headers.setdefault("Content-Type", content_type)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def basic(user: str, secret: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def http_get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET; (status, body), 0 when nothing answers (a process still starting)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def json_call(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    """A JSON request with a bearer token; (status, decoded body)."""
    reply = call(method, url, body=body, token=token)
    return reply.status, json.loads(reply.body or b"null")
