"""The benchmark's summary: ratios, the bars from the issue, a terminal table and a PNG plot."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any


def progress(r: Any) -> str:
    p50 = f"{r.p50_ms:.2f}" if r.p50_ms is not None else "-"
    p99 = f"{r.p99_ms:.2f}" if r.p99_ms is not None else "-"
    errors = f"  ERRORS {r.errors}: {r.first_error}" if r.errors else ""
    return (
        f"{r.workload:>15} {r.contender:>15} {r.transport:>9} c={r.concurrency:<3} "
        f"{r.items_per_s:10.0f} items/s  p50 {p50:>7} ms  p99 {p99:>7} ms{errors}"
    )


def _find(rows: list[dict], **where: Any) -> dict | None:  # type: ignore[type-arg]
    for row in rows:
        if all(row[k] == v for k, v in where.items()):
            return row
    return None


def build(
    machine: dict, plan: Any, results: list, extras: list, capacity: list, raws: dict, cold: dict, seconds: float
) -> dict:  # type: ignore[type-arg]
    rows = [asdict(r) for r in results]
    extra_rows = [asdict(r) for r in extras]
    ratios = []
    for row in rows:
        if row["contender"] != "maas":
            continue
        key = {k: row[k] for k in ("workload", "transport", "concurrency")}
        entry = {**key, "maas_items_per_s": row["items_per_s"]}
        raw = raws.get(row["workload"])
        if raw:
            entry["maas_over_raw"] = row["items_per_s"] / raw["items_per_s"]
        for other in ("noop", "naive"):
            found = _find(rows, contender=other, **key)
            if found and found["items_per_s"]:
                entry[f"maas_over_{other}"] = row["items_per_s"] / found["items_per_s"]
        ratios.append(entry)
    summary = {
        "machine": machine,
        "plan": asdict(plan),
        "seconds": seconds,
        "results": rows,
        "extras": extra_rows,
        "load_generator_capacity": [asdict(r) for r in capacity],
        "raw": raws,
        "cold_start_s": cold,
        "ratios": ratios,
    }
    summary["as_a_user"] = as_a_user(rows)
    summary["floor"] = floor(rows)
    summary["bars"] = bars(summary)
    summary["grpc_floor"] = grpc_floor(summary)
    return summary


AS_A_USER = ("maas", "maas-defaults", "maas-access-log")  # tuned, as a user runs it, access log on


def as_a_user(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """maas tuned, with its defaults and with the access log on, side by side per transport and
    concurrency (where all three ran): items/s, p50 and p99 of each, ``defaults_over_maas`` (what
    the benchmark's tuning buys) and ``access_log_over_defaults`` (what the access log costs)."""
    out = []
    for row in rows:
        if row["contender"] != "maas-defaults":
            continue
        key = {k: row[k] for k in ("workload", "transport", "concurrency")}
        found = [_find(rows, contender=kind, **key) for kind in AS_A_USER]
        if any(r is None for r in found):
            continue
        entry: dict[str, Any] = {**key}
        for kind, r in zip(AS_A_USER, found, strict=True):
            entry[kind] = {name: r[name] for name in ("items_per_s", "p50_ms", "p99_ms")} if r else {}
        tuned, defaults, logged = (entry[kind]["items_per_s"] for kind in AS_A_USER)
        entry["defaults_over_maas"] = defaults / tuned if tuned else None
        entry["access_log_over_defaults"] = logged / defaults if defaults else None
        out.append(entry)
    return out


FLOOR = ("trivial-asyncio", "trivial-uvloop")  # a trivial ASGI app on uvicorn + httptools, each loop
OVER_FLOOR = ("maas", "maas-defaults", "noop")  # each reported over trivial-uvloop


def floor(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The one-image V2 JSON floor per workload and concurrency (where trivial-uvloop ran): items/s,
    p50 and p99 of each trivial app and of maas, maas-defaults and noop, and each of the last three
    over trivial-uvloop (``maas_over_trivial_uvloop`` ...): how much of what the server and loop
    alone allow the whole stack keeps."""
    out = []
    for row in rows:
        if row["contender"] != "trivial-uvloop" or row["transport"] != "v2-json":
            continue
        key = {k: row[k] for k in ("workload", "transport", "concurrency")}
        entry: dict[str, Any] = {**key}
        for kind in FLOOR + OVER_FLOOR:
            found = _find(rows, contender=kind, **key)
            entry[kind] = {name: found[name] for name in ("items_per_s", "p50_ms", "p99_ms")} if found else None
        base = row["items_per_s"]
        for kind in OVER_FLOOR:
            name = f"{kind.replace('-', '_')}_over_trivial_uvloop"
            entry[name] = entry[kind]["items_per_s"] / base if entry[kind] and base else None
        out.append(entry)
    return out


def grpc_floor(s: dict) -> dict | None:  # type: ignore[type-arg]
    """What gRPC alone costs a 64-image request: a grpc.aio server that answers at once (the
    trivial endpoint, on the server core) takes ``ms_per_request``; with the forward at raw's
    speed and nothing else, maas/raw over gRPC could reach ``max_maas_over_raw`` at most.
    ``share_of_max`` is how much of that the served 64-image gRPC requests reached."""
    trivial = _find(s["load_generator_capacity"], workload="digits-cnn-x64", transport="grpc")
    raw = s["raw"].get("digits-cnn")
    if not trivial or not trivial["items_per_s"] or not raw:
        return None
    floor_ms = 1000 * trivial["items_per_request"] / trivial["items_per_s"]
    forward_ms = 64 * 1000 / raw["items_per_s"]
    ceiling = forward_ms / (forward_ms + floor_ms)
    served = _find(s.get("extras", []), workload="digits-cnn-x64", transport="grpc", concurrency=trivial["concurrency"])
    maas_over_raw = served["items_per_s"] / raw["items_per_s"] if served else None
    return {
        "ms_per_request": floor_ms,
        "raw_forward_ms": forward_ms,
        "max_maas_over_raw": ceiling,
        "maas_over_raw": maas_over_raw,
        "share_of_max": None if maas_over_raw is None else maas_over_raw / ceiling,
    }


def bars(s: dict) -> list[dict]:  # type: ignore[type-arg]
    """The issue's bars, each with the measured figure and whether it holds."""
    out: list[dict] = []  # type: ignore[type-arg]
    top = max(s["plan"]["concurrency"])

    def add(name: str, value: float | None, limit: float, higher_is_better: bool = True) -> None:
        ok = value is not None and (value >= limit if higher_is_better else value <= limit)
        out.append({"bar": name, "value": value, "limit": limit, "holds": ok})

    for r in s["ratios"]:
        if r["concurrency"] != top:
            continue
        if r["workload"] == "minilm":
            add(f"minilm {r['transport']} c={top}: maas/raw >= 0.8", r.get("maas_over_raw"), 0.8)
            add(f"minilm {r['transport']} c={top}: maas/naive >= 3", r.get("maas_over_naive"), 3.0)
        if r["workload"] == "digits-cnn":
            add(f"digits-cnn {r['transport']} c={top}: maas/noop >= 0.8", r.get("maas_over_noop"), 0.8)
            add(f"digits-cnn {r['transport']} c={top}: maas/naive >= 1", r.get("maas_over_naive"), 1.0)
    raw_cnn = s["raw"].get("digits-cnn")
    for row in s["extras"]:
        if row["workload"] == "digits-cnn-x64" and row["concurrency"] == top and raw_cnn:
            add(
                f"digits-cnn x64 {row['transport']} c={top}: maas/raw >= 0.8",
                row["items_per_s"] / raw_cnn["items_per_s"],
                0.8,
            )
    for f in s.get("floor", []):
        if f["workload"] == "digits-cnn" and f["concurrency"] == top:
            add(
                f"digits-cnn v2-json c={top}: maas-defaults/trivial-uvloop >= 0.5",
                f["maas_defaults_over_trivial_uvloop"],
                0.5,
            )
            add(f"digits-cnn v2-json c={top}: noop/trivial-uvloop >= 0.6", f["noop_over_trivial_uvloop"], 0.6)
    one = _find(s["results"], workload="digits-cnn", contender="maas", transport="grpc", concurrency=1)
    if one and raw_cnn:
        add("digits-cnn grpc c=1: maas p50 - raw p50 <= 1 ms", one["p50_ms"] - raw_cnn["p50_ms_one"], 1.0, False)
    binary = _find(s["extras"], workload="tensor-224", transport="v2-binary")
    grpc = _find(s["extras"], workload="tensor-224", transport="grpc")
    if binary and grpc:
        add("1x3x224x224 FP32: v2-binary p50 / grpc p50 <= 3", binary["p50_ms"] / grpc["p50_ms"], 3.0, False)
    return out


def table(s: dict) -> str:  # type: ignore[type-arg]
    m = s["machine"]
    lines = [
        f"\nmachine: {m['cores']} cores ({m['cpu']}), python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"placement: servers and raw on core {m['placement']['server_and_raw_core']}, load generator on core "
        f"{m['placement']['load_generator_core']}; {m['loop']}; torch threads 1; device {m['device']}",
        "",
        "load generator capacity against a trivial endpoint (c=64): "
        + ", ".join(
            f"{r['transport']} {r['workload']} {r['items_per_s'] / r['items_per_request']:.0f} req/s"
            for r in s["load_generator_capacity"]
        ),
        "",
        f"{'workload':>15} {'transport':>9} {'c':>3} {'maas/s':>9} {'noop/s':>9} {'naive/s':>9} {'raw/s':>9} "
        f"{'maas p50':>9} {'maas p99':>9} {'/raw':>6} {'/noop':>6} {'/naive':>7}",
    ]
    for r in s["ratios"]:
        same = [x for x in s["results"] if all(x[k] == r[k] for k in ("workload", "transport", "concurrency"))]
        maas, noop, naive = (
            next((x for x in same if x["contender"] == kind), None) for kind in ("maas", "noop", "naive")
        )
        raw = s["raw"].get(r["workload"], {}).get("items_per_s", 0)
        lines.append(
            f"{r['workload']:>15} {r['transport']:>9} {r['concurrency']:>3} {maas['items_per_s']:9.0f} "
            f"{noop['items_per_s'] if noop else 0:9.0f} {naive['items_per_s'] if naive else 0:9.0f} {raw:9.0f} "
            f"{maas['p50_ms'] or 0:9.2f} {maas['p99_ms'] or 0:9.2f} {r.get('maas_over_raw', 0):6.2f} "
            f"{r.get('maas_over_noop', 0):6.2f} {r.get('maas_over_naive', 0):7.2f}"
        )
    lines += as_a_user_table(s.get("as_a_user", []), max(s["plan"]["concurrency"]))
    lines += floor_table(s.get("floor", []))
    if s["extras"]:
        lines.append("")
        for r in s["extras"]:
            lines.append(progress(type("R", (), r)))
    lines.append("")
    lines.append(
        "cold start, process start to ready (median): "
        + ", ".join(f"{k} {v:.2f}s" for k, v in s["cold_start_s"].items())
    )
    lines.append("")
    for bar in s["bars"]:
        value = "n/a" if bar["value"] is None else f"{bar['value']:.3f}"
        lines.append(f"{'HOLDS' if bar['holds'] else 'MISSES':>6}  {bar['bar']}  (measured {value})")
    floor = s.get("grpc_floor")
    if floor:
        lines.append(
            f"\ngRPC floor: a grpc.aio server that answers at once takes {floor['ms_per_request']:.3f} ms per "
            f"64-image request on the server core; with raw's forward ({floor['raw_forward_ms']:.3f} ms) and "
            f"nothing else, maas/raw over gRPC could reach {floor['max_maas_over_raw']:.2f} at most"
            + (
                f"; maas reached {floor['maas_over_raw']:.2f}, {floor['share_of_max']:.2f} of that"
                if floor.get("share_of_max") is not None
                else ""
            )
        )
    errors = sum(r["errors"] for r in s["results"] + s["extras"])
    lines.append(f"\n{len(s['results']) + len(s['extras'])} runs, {errors} errors, {s['seconds']:.0f}s")
    return "\n".join(lines)


def as_a_user_table(entries: list[dict[str, Any]], top: int) -> list[str]:
    """Lines for maas tuned, with its defaults and with the access log on, and the two ratios."""
    if not entries:
        return []
    lines = [
        "",
        "maas as a user runs it (defaults: python -m predictors --model_dir --http_port --grpc_port; "
        "access log: the same with --access_log true)",
        f"{'workload':>15} {'transport':>9} {'c':>3} "
        + " ".join(f"{name + '/s':>10} {'p50':>6} {'p99':>6}" for name in ("tuned", "defaults", "log on"))
        + f" {'def/tuned':>9} {'log/def':>7}",
    ]
    for e in entries:
        cells = " ".join(
            f"{e[kind]['items_per_s']:10.0f} {e[kind]['p50_ms'] or 0:6.2f} {e[kind]['p99_ms'] or 0:6.2f}"
            for kind in AS_A_USER
        )
        lines.append(
            f"{e['workload']:>15} {e['transport']:>9} {e['concurrency']:>3} {cells} "
            f"{e['defaults_over_maas'] or 0:9.2f} {e['access_log_over_defaults'] or 0:7.2f}"
        )
    costs = [e for e in entries if e["concurrency"] == top and e["access_log_over_defaults"]]
    if costs:
        lines.append(
            f"the access log's cost at c={top} (1 - log on/defaults): "
            + ", ".join(f"{e['transport']} {1 - e['access_log_over_defaults']:.1%}" for e in costs)
        )
    return lines


def floor_table(entries: list[dict[str, Any]]) -> list[str]:
    """Lines for the floor: the trivial ASGI apps, then maas, maas-defaults and noop, and the ratios."""
    if not entries:
        return []
    names = {"trivial-asyncio": "triv-aio", "trivial-uvloop": "triv-uvl", "maas-defaults": "defaults"}
    lines = [
        "",
        "the floor: a trivial ASGI app (orjson-parse the body, answer a small JSON) on uvicorn + httptools, "
        "one-image V2 JSON",
        f"{'workload':>15} {'c':>3} "
        + " ".join(f"{names.get(kind, kind) + '/s':>11} {'p50':>6} {'p99':>6}" for kind in FLOOR + OVER_FLOOR)
        + f" {'maas/uvl':>8} {'def/uvl':>7} {'noop/uvl':>8}",
    ]
    for e in entries:
        cells = " ".join(
            f"{e[kind]['items_per_s']:11.0f} {e[kind]['p50_ms'] or 0:6.2f} {e[kind]['p99_ms'] or 0:6.2f}"
            if e[kind]
            else f"{'-':>11} {'-':>6} {'-':>6}"
            for kind in FLOOR + OVER_FLOOR
        )
        ratios = [e[f"{kind.replace('-', '_')}_over_trivial_uvloop"] for kind in OVER_FLOOR]
        lines.append(
            f"{e['workload']:>15} {e['concurrency']:>3} {cells} "
            + " ".join(
                f"{r:{w}.2f}" if r is not None else f"{'-':>{w}}" for r, w in zip(ratios, (8, 7, 8), strict=True)
            )
        )
    return lines


def plot(s: dict, path: Path) -> Path:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({r["workload"] for r in s["results"]})
    transports = sorted({r["transport"] for r in s["results"]})
    fig, axes = plt.subplots(
        len(workloads), len(transports), figsize=(4.2 * len(transports), 3.2 * len(workloads)), squeeze=False
    )
    for i, workload in enumerate(workloads):
        for j, transport in enumerate(transports):
            ax = axes[i][j]
            for contender, style in (
                ("maas", "o-"),
                ("maas-defaults", "d-."),
                ("maas-access-log", "x-."),
                ("noop", "s--"),
                ("naive", "^:"),
                ("trivial-asyncio", "v:"),
                ("trivial-uvloop", "<:"),
            ):
                rows = sorted(
                    (
                        r
                        for r in s["results"]
                        if r["workload"] == workload and r["transport"] == transport and r["contender"] == contender
                    ),
                    key=lambda r: r["concurrency"],
                )
                if rows:
                    ax.plot([r["concurrency"] for r in rows], [r["items_per_s"] for r in rows], style, label=contender)
            raw = s["raw"].get(workload)
            if raw:
                ax.axhline(raw["items_per_s"], color="grey", linewidth=1, label=f"raw (batch {raw['best_batch']})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{workload} · {transport}", fontsize=9)
            ax.set_xlabel("concurrency")
            ax.set_ylabel("items/s")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    m = s["machine"]
    fig.suptitle(f"maas benchmark: {m['cores']} cores, server on 1 core, {m['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
