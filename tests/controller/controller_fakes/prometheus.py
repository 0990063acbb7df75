"""TEST SCAFFOLDING: a fake Prometheus HTTP API answering ``/api/v1/query`` from a script.

The test supplies ``answer(promql) -> float | None``; ``None`` is an empty vector (no samples).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class FakePrometheus:
    """Answers instant queries with ``answer(promql) -> float | None`` (None: empty vector)."""

    answer: Callable[[str], float | None] = lambda query: None
    queries: list[str] = field(default_factory=list)

    def start(self) -> FakePrometheus:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/api/v1/query":
                    self.send_error(404)
                    return
                query = parse_qs(url.query)["query"][0]
                fake.queries.append(query)
                value = fake.answer(query)
                result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
                data = json.dumps({"status": "success", "data": {
                    "resultType": "vector", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"
