"""The operations port of a process without the API: /metrics (Prometheus text) and /healthz (every part's check).

docker-compose's health checks run `gridwatch health`, which asks /healthz here (or the API's /healthz): a
process whose part has died or stopped working answers 503 with the reason, not only "the process exists".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.loop import Check

Checks = Callable[[], list[Check]]


def health_body(checks: list[Check]) -> tuple[int, bytes]:
    """The /healthz status code and JSON body for these checks (shared with the API's /healthz)."""
    ok = all(c.ok for c in checks)
    body = {"status": "ok" if ok else "failing", "parts": {c.name: ("ok" if c.ok else c.detail) for c in checks}}
    return (200 if ok else 503), orjson.dumps(body)


class OpsServer:
    """/metrics and /healthz on a port of their own, in a daemon thread."""

    def __init__(self, port: int, checks: Checks, *, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped
        handler = _handler(checks)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="ops-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(checks: Checks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                status, body, kind = 200, generate_latest(), CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                status, body = health_body(checks())
                kind = "application/json"
            else:
                status, body, kind = 404, b"not found\n", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes and probes every few seconds are not worth a log line."""

    return Handler
