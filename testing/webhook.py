"""A real webhook receiver on a real socket: it records every request, may answer an error, and may be down."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testing.processes import free_port


@dataclass(frozen=True)
class Received:
    """One request as it arrived: its path, headers (lower-case names), raw body and arrival (time.time())."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server on a fixed port that can be stopped (nothing listens) and started again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.status = 200  # what it answers
        self.delay = 0.0  # seconds it takes to answer
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, time.time()))
                if receiver.delay:
                    time.sleep(receiver.delay)  # a slow receiver, so a sender can be killed mid-send
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until `start` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.json() for r in self.received if r.headers.get("content-type") == "application/json"]
