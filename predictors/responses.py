"""JSON answers rendered with orjson, and quiet about kserve's use of FastAPI's deprecated one.

FastAPI deprecated ``ORJSONResponse`` (it serializes through pydantic when a route declares a
response model); maas's routes are plain Starlette routes that answer ready-made dicts, so they
use this small ``Response`` of their own. kserve 0.21 still answers its routes (V1 predict, health,
model lists) with ``ORJSONResponse``, which warns once per route and process: ``quiet_kserve_warnings``
ignores exactly that warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import orjson
from starlette.responses import Response

ORJSON_DEPRECATED = "ORJSONResponse is deprecated"


class JSONResponse(Response):
    """``content`` as JSON (numpy arrays and non-string keys allowed), rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def quiet_kserve_warnings() -> None:
    """Ignore FastAPI's deprecation of ``ORJSONResponse``, which kserve's own routes instantiate."""
    from fastapi.exceptions import FastAPIDeprecationWarning

    warnings.filterwarnings("ignore", message=ORJSON_DEPRECATED, category=FastAPIDeprecationWarning)
