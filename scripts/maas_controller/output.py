"""Printing results as a table, JSON or YAML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "json", "yaml")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned table, like kubectl's."""
    cells = [[c.upper() for c in columns]]
    cells += [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("   ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def render(data: Any, fmt: str, as_table: str) -> str:
    """``data`` as JSON or YAML, or ``as_table`` (already formatted) for ``table``."""
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False).rstrip()
    return as_table


def status_table(status: dict[str, Any]) -> str:
    head = (
        f"{status['namespace']}/{status['name']}  mode={status['mode']}  "
        f"ready={status['ready']} ({status['reason']})  "
        f"generation={status['generation']} observed={status['observedGeneration']}"
    )
    versions = [dict(v, role=role) for role in ("stable", "canary") if (v := status[role])]
    parts = [head, "", table(versions, ["role", "version", "percent", "storageUri"])]
    if status["traffic"]:
        parts += ["", table(status["traffic"], ["target", "percent", "role"])]
    return "\n".join(parts)
