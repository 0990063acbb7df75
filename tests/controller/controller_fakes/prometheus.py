"""TEST SCAFFOLDING: a fake Prometheus HTTP API answering ``/api/v1/query`` from a script.

The test supplies ``answer(promql) -> float | None``; ``None`` is an empty vector (no samples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from .http import JsonServer


@dataclass
class FakePrometheus(JsonServer):
    """Answers instant queries with ``answer(promql) -> float | None`` (None: empty vector)."""

    answer: Callable[[str], float | None] = lambda query: None
    queries: list[str] = field(default_factory=list)

    def respond(self, method: str, path: str, content_type: str, body: Any) -> tuple[int, Any]:
        url = urlparse(path)
        if (method, url.path) != ("GET", "/api/v1/query"):
            return 404, {"status": "error", "error": f"no route for {method} {url.path}"}
        query = parse_qs(url.query)["query"][0]
        self.queries.append(query)
        value = self.answer(query)
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
