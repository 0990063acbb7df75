#!/usr/bin/env python3
"""Draw one panel of the maas Grafana dashboard as a PNG, from a Prometheus's range queries.

    python scripts/render_panel.py --prometheus http://localhost:9090 \\
        --panel "Request latency p50 / p95 / p99" --var namespace=models --last 1h --out panel.png

The panel's queries are taken from helm/maas/dashboards/maas.json, Grafana's variables are
filled in (``--var NAME=VALUE``; ``$model`` defaults to every model, ``$__rate_interval`` to
``--rate-interval``), each is asked for with ``/api/v1/query_range``, and every series is drawn
with the panel's legend format. ``--json`` prints what was drawn (a legend, point count and range
per series), so a test can check the picture's content without looking at pixels.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "helm" / "maas" / "dashboards" / "maas.json"
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def seconds(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30s, 15m, 1h)")
    return int(match[1]) * _SECONDS[match[2]]


def find_panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    panels = [p for top in board["panels"] for p in [top, *top.get("panels", [])]]
    for panel in panels:
        if panel.get("title") == title:
            return panel
    titles = "\n  ".join(p["title"] for p in panels if "targets" in p)
    raise SystemExit(f"no panel titled {title!r}; the dashboard has:\n  {titles}")


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step})
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query_range?{params}", timeout=30) as response:
            body = json.load(response)
    except OSError as exc:
        raise SystemExit(f"query to {url} failed: {exc}") from None
    if body.get("status") != "success":
        raise SystemExit(f"Prometheus refused {expr!r}: {body.get('error')}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    return _LEGEND.sub(lambda m: labels.get(m[1], ""), fmt).strip() if fmt else json.dumps(labels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--panel", required=True, help="the panel's title")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON (default: the chart's)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a template variable")
    parser.add_argument("--start", type=float, help="unix time of the first point (default: END - --last)")
    parser.add_argument("--end", type=float, help="unix time of the last point (default: now)")
    parser.add_argument("--last", type=seconds, default=3600.0, help="time range when --start is not given (1h)")
    parser.add_argument("--step", type=seconds, default=None, help="resolution (default: range / 240)")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for (default 1m)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--json", action="store_true", help="print what was drawn as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    variables = {"model": ".*", "namespace": ".*", "__rate_interval": args.rate_interval}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--var {item!r}: expected NAME=VALUE")
        variables[name] = value
    end = args.end if args.end is not None else time.time()
    start = args.start if args.start is not None else end - args.last
    step = args.step or max(1.0, (end - start) / 240)
    panel = find_panel(json.loads(args.dashboard.read_text()), args.panel)
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    scale, axis = (1000.0, "ms") if unit == "s" else (100.0, "%") if unit == "percentunit" else (1.0, unit)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    drawn = []
    for target in panel["targets"]:
        expr = substitute(target["expr"], variables)
        for series in query_range(args.prometheus, expr, start, end, step):
            points = [(float(t), float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if not points:
                continue
            name = legend(target.get("legendFormat", ""), series["metric"])
            times = mdates.date2num([datetime.fromtimestamp(t, tz=timezone.utc) for t, _ in points])
            ax.plot(times, [v * scale for _, v in points], label=name, linewidth=1.6)
            values = [v for _, v in points]
            drawn.append({"legend": name, "points": len(points), "min": min(values), "max": max(values)})
    ax.set_title(panel["title"])
    ax.set_ylabel(axis)
    ax.set_xlabel("time (UTC)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)
    if args.json:
        print(json.dumps({"panel": panel["title"], "out": str(args.out), "series": drawn}, indent=2))
    else:
        print(f"{args.out}: {len(drawn)} series of {panel['title']!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
