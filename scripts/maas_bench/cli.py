"""``python scripts/bench.py``: every contender under the same load, in one run, with ratios.

Contenders per workload: raw (the model in-process at its best batch size: the limit; measured
before and after each server's runs, the median taken), maas (``python -m predictors``), noop (the
same server stack around a model that does nothing: the transport's limit) and naive (a plain
``kserve.Model``, one forward per request). Transports:
V2 REST JSON, V2 REST binary, V2 gRPC. Closed-loop load from a separate process. Placement:
servers and raw on core 0, the load generator on core 1 (when there are two or more cores), the
same for every contender; torch (and ONNX Runtime) use one thread in every contender. maas and noop
get as --max_batch_size the largest batch size at which raw runs within 5% of its best; raw runs
the model on the runtime its config names (the digits CNN and MiniLM: ONNX Runtime), as maas does;
naive runs torch, as KServe's docs do.

On the digits CNN, right after the tuned maas, maas as a user runs it: maas-defaults
(``python -m predictors --model_dir DIR --http_port P --grpc_port G``, nothing else: maas's own log
config, threads, batch size) and maas-access-log (the same with ``--access_log true``), pinned to the
server core like every contender (placement is the harness's, not a maas setting). The ratios
maas-defaults/maas and maas-access-log/maas-defaults say what the tuning buys and what the access
log costs. Right after noop, the floor: a trivial ASGI app (``maas_bench.asgi_trivial``: reads the
V2 JSON body, parses it with orjson, answers a few hundred bytes of JSON) on uvicorn + httptools,
once on the asyncio loop (trivial-asyncio) and once on uvloop (trivial-uvloop), loaded with the
same one-image V2 JSON body; maas, maas-defaults and noop are reported over trivial-uvloop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from maas_bench import report
from maas_bench.servers import AS_A_USER, ROOT, TRIVIAL_ASGI, Served, env, pinned, quiet_log_config, start
from maas_bench.workloads import TRANSPORTS, Workload, request


@dataclass
class Result:
    workload: str
    contender: str
    transport: str
    concurrency: int
    items_per_request: int
    items_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    first_error: str = ""


@dataclass
class Plan:
    concurrency: list[int]
    duration: float
    warmup: float
    cold_starts: int
    server_core: int | None
    client_core: int | None
    device: str


def load(served: Served, workload: Workload, transport: str, concurrency: int, plan: Plan, tmp: Path) -> Result:
    """One closed-loop run of the load generator (its own process, on the client core)."""
    body, headers = request(workload, transport)
    body_file = tmp / f"body-{workload.key}-{transport}.bin"
    body_file.write_bytes(body)
    target = (
        ["--grpc-target", f"127.0.0.1:{served.grpc_port}"]
        if transport == "grpc"
        else ["--url", f"{served.url}/v2/models/{workload.model_name}/infer"]
    )
    cmd = [
        sys.executable,
        "-m",
        "maas_bench.loadgen",
        *target,
        "--body",
        str(body_file),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(plan.duration),
        "--warmup",
        str(plan.warmup),
        "--items",
        str(workload.items),
    ]
    for header in headers:
        cmd += ["--header", header]
    out = subprocess.run(
        cmd, cwd=ROOT, env=env(), capture_output=True, text=True, check=True, preexec_fn=pinned(plan.client_core)
    )
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    return Result(
        workload.key,
        served.kind,
        transport,
        concurrency,
        workload.items,
        stats["items_per_s"],
        stats["p50_ms"],
        stats["p99_ms"],
        stats["requests"],
        stats["errors"],
        stats["first_error"],
    )


QUICK_RAW_BATCHES = [1, 8, 32, 64, 128]  # a --quick run leaves out 256 (MiniLM: ~1 s a forward there)


def raw(workload: Workload, plan: Plan, seconds: float, batches: list[int] | None = None) -> dict:  # type: ignore[type-arg]
    """Raw's throughput over ``batches`` (default: raw's own curve, 1 to 256)."""
    sizes = ["--batch-sizes", ",".join(map(str, batches))] if batches else []
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "maas_bench.raw",
            "--model_dir",
            str(workload.model_dir),
            "--seconds",
            str(seconds),
            *sizes,
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pinned(plan.server_core),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def noop_dir(workload: Workload, tmp: Path) -> Path:
    """The workload's model directory with its module swapped for ``FirstElement``."""
    import torch
    import yaml

    if workload.family == "transformer":
        return noop_text_dir(workload, tmp)
    target = tmp / f"noop-{workload.key}"
    target.mkdir(exist_ok=True)
    config = yaml.safe_load((workload.model_dir / "maas.yaml").read_text())
    config["module"] = {
        "class": "maas_bench.noop:FirstElement",
        "kwargs": {"num_classes": len(config["labels"])},
        "weights": "weights.pt",
    }
    (target / "maas.yaml").write_text(yaml.safe_dump(config))
    torch.save({}, target / "weights.pt")
    return target


def noop_text_dir(workload: Workload, tmp: Path) -> Path:
    """An embedding model with the same tokenizer and no transformer layers: the server stack
    (tokenisation included) around a model that does next to nothing."""
    import yaml
    from transformers import AutoTokenizer, BertConfig, BertModel

    target = tmp / f"noop-{workload.key}"
    tokenizer = AutoTokenizer.from_pretrained(workload.model_dir, local_files_only=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        num_hidden_layers=0,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    maas = yaml.safe_load((workload.model_dir / "maas.yaml").read_text())
    maas.pop("metrics", None)
    (target / "maas.yaml").write_text(yaml.safe_dump(maas))
    return target


def tensor224_dir(tmp: Path) -> Path:
    """A noop image model taking FP32 [-1, 3, 224, 224]: what a 224x224 image costs to move."""
    import torch
    import yaml

    target = tmp / "noop-224"
    target.mkdir(exist_ok=True)
    config = {
        "family": "image",
        "name": "noop-224",
        "labels": [str(i) for i in range(10)],
        "module": {"class": "maas_bench.noop:FirstElement", "kwargs": {"num_classes": 10}},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "image": {"color_mode": "RGB"},
    }
    (target / "maas.yaml").write_text(yaml.safe_dump(config))
    torch.save({}, target / "weights.pt")
    return target


def all_workloads(models: Path) -> list[Workload]:
    """digits CNN and LSTM (one sample per request) and MiniLM (one sentence) when it is there."""
    from maas_bench.raw import TEXT

    cnn = np.load(models / "digits-cnn" / "heldout.npz")["x"]
    lstm = np.load(models / "digits-lstm" / "heldout.npz")["x"]
    found = [
        Workload("digits-cnn", models / "digits-cnn", "digits-cnn", "input", cnn[:1], "image"),
        Workload("digits-lstm", models / "digits-lstm", "digits-lstm", "input", lstm[:1], "sequence"),
    ]
    if (models / "minilm" / "maas.yaml").is_file():
        text = np.array([TEXT.encode()], dtype=object)
        found.append(Workload("minilm", models / "minilm", "minilm", "text", text, "transformer"))
    return found


def serve_and_load(
    kind: str,
    model_dir: Path,
    workloads: list[Workload],
    plan: Plan,
    log_config: Path,
    tmp: Path,
    results: list[Result],
    transports: tuple[str, ...] = TRANSPORTS,
    max_batch_size: int = 64,
) -> None:
    """Serve ``model_dir`` as contender ``kind`` and load it; maas and noop take ``max_batch_size``
    (the benchmark passes the largest batch size at which raw is within 5% of its best: the one
    knob a user would set, read off the model's throughput curve)."""
    name = workloads[0].model_name
    served = (
        start(
            kind,
            model_dir,
            name,
            core=plan.server_core,
            log_config=log_config,
            device=plan.device,
            max_batch_size=max_batch_size,
        )
        if kind != "naive"
        else start(kind, model_dir, name, core=plan.server_core, log_config=log_config)
    )
    try:
        for workload in workloads:
            for transport in transports:
                for concurrency in plan.concurrency:
                    result = load(served, workload, transport, concurrency, plan, tmp)
                    results.append(result)
                    print(report.progress(result), flush=True)
    finally:
        served.stop()


def cold_start(workload: Workload, plan: Plan, log_config: Path) -> float:
    times = []
    for _ in range(plan.cold_starts):
        served = start(
            "maas",
            workload.model_dir,
            workload.model_name,
            core=plan.server_core,
            log_config=log_config,
            device=plan.device,
        )
        times.append(served.ready_after)
        served.stop()
    return statistics.median(times)


def machine(plan: Plan) -> dict:  # type: ignore[type-arg]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    names = ("torch", "onnxruntime", "kserve", "numpy", "grpcio", "uvicorn", "fastapi")
    versions = {name: metadata.version(name) for name in names}
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": versions,
        "placement": {"server_and_raw_core": plan.server_core, "load_generator_core": plan.client_core},
        "loop": "closed (each worker sends its next request when the answer arrives)",
        "torch_threads": 1,  # and ONNX Runtime's intra-op threads, where a model config names it
        "max_batch_size": "maas and noop: the largest batch size at which raw is within 5% of its best",
        "as_a_user": "maas-defaults: python -m predictors --model_dir DIR --http_port P --grpc_port G, nothing "
        "else (maas's log config, torch threads = usable cores = 1 on the pinned core, max_batch_size 32); "
        "maas-access-log: the same with --access_log true",
        "floor": "trivial-asyncio / trivial-uvloop: a plain ASGI app (orjson-parse the V2 JSON body, answer a "
        "few hundred bytes of JSON) on uvicorn + httptools, access log off, loop asyncio / uvloop",
        "device": plan.device,
    }


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; building it has no side effects."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="concurrency 1 and 64, short runs, raw up to batch 128, one cold start (about 3 minutes)",
    )
    parser.add_argument("--models", type=Path, default=ROOT / ".models", help="reference models (trained if absent)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench-results", help="folder for the JSON and PNG results (bench-results/)"
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where the models run, in every contender (cpu)"
    )
    parser.add_argument("--only", default="", help="comma-separated workloads (digits-cnn, digits-lstm, minilm)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    cores = sorted(os.sched_getaffinity(0))
    plan = Plan(
        concurrency=[1, 64] if args.quick else [1, 8, 32, 64],
        duration=0.8 if args.quick else 4.0,
        warmup=0.2 if args.quick else 1.0,
        cold_starts=1 if args.quick else 5,
        server_core=cores[0] if len(cores) > 1 else None,
        client_core=cores[1] if len(cores) > 1 else None,
        device=args.device,
    )
    if not (args.models / "digits-cnn" / "maas.yaml").is_file():
        subprocess.run([sys.executable, "scripts/reference_models.py", "--out", str(args.models)], cwd=ROOT, check=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="maas-bench-"))
    log_config = quiet_log_config(tmp)
    results: list[Result] = []
    raws: dict[str, dict] = {}  # type: ignore[type-arg]
    workloads = [w for w in all_workloads(args.models) if not args.only or w.key in args.only.split(",")]

    print("== load generator capacity (trivial endpoints on the server core)", flush=True)
    cnn = all_workloads(args.models)[0]
    x = np.load(args.models / "digits-cnn" / "heldout.npz")["x"]
    big = Workload("digits-cnn-x64", cnn.model_dir, cnn.model_name, "input", x[:64], "image")
    capacity: list[Result] = []
    trivial = start("trivial", cnn.model_dir, cnn.model_name, core=plan.server_core, log_config=log_config)
    try:
        # the last: a grpc.aio server answering 64-image requests at once, the floor of gRPC's cost
        for workload, transport in ((cnn, "v2-binary"), (cnn, "grpc"), (big, "grpc")):
            capacity.append(load(trivial, workload, transport, 64, plan, tmp))
            print(report.progress(capacity[-1]), flush=True)
    finally:
        trivial.stop()

    seconds = 0.5 if args.quick else 2.0

    def sample_raw(workload: Workload) -> None:
        """Raw again at its best batch size: the machine's speed drifts over a run (raw MiniLM read
        314 and 364 texts/s in two runs of the same code), so raw is measured between the servers'
        runs and the median of its samples is the limit the ratios use (not in a --quick run:
        its three minutes hold one sample)."""
        if args.quick:
            return
        found = raws[workload.key]
        found["samples"].append(raw(workload, plan, seconds, [int(found["best_batch"])])["items_per_s"])
        found["items_per_s"] = statistics.median(found["samples"])
        print(
            f"raw again: {found['samples'][-1]:.0f} items/s (median of {len(found['samples'])}: "
            f"{found['items_per_s']:.0f})",
            flush=True,
        )

    for workload in workloads:
        print(f"== {workload.key}", flush=True)
        curve = raw(workload, plan, seconds, QUICK_RAW_BATCHES if args.quick else None)
        raws[workload.key] = {**curve, "samples": [curve["items_per_s"]]}
        print(
            f"raw: {curve['items_per_s']:.0f} items/s at batch {curve['best_batch']} "
            f"(servers take batches up to {curve['serving_batch']}), {curve['p50_ms_one']:.3f} ms for one",
            flush=True,
        )
        contenders = [("maas", workload.model_dir)]
        if workload.key == "digits-cnn":  # maas as a user runs it, next to the tuned maas
            contenders += [(kind, workload.model_dir) for kind in AS_A_USER]
        contenders += [("noop", noop_dir(workload, tmp))]
        if workload.key == "digits-cnn":  # the floor: a trivial ASGI app on the same server, each loop
            contenders += [(kind, workload.model_dir) for kind in TRIVIAL_ASGI]
        contenders += [("naive", workload.model_dir)]
        for kind, model_dir in contenders:
            batch = int(raws[workload.key]["serving_batch"])
            transports = ("v2-json",) if kind in TRIVIAL_ASGI else TRANSPORTS
            serve_and_load(kind, model_dir, [workload], plan, log_config, tmp, results, transports, batch)
            if kind not in TRIVIAL_ASGI:
                sample_raw(workload)

    extras: list[Result] = []
    if not args.only or "digits-cnn" in args.only:
        print("== digits-cnn, 64 images per request", flush=True)
        batch = int(raws["digits-cnn"]["serving_batch"]) if "digits-cnn" in raws else 64
        serve_and_load("maas", cnn.model_dir, [big], plan, log_config, tmp, extras, max_batch_size=max(64, batch))
        if "digits-cnn" in raws:
            sample_raw(cnn)
        print("== transport: one FP32 1x3x224x224 tensor (noop model)", flush=True)
        tensor = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        t224 = Workload("tensor-224", tensor224_dir(tmp), "noop-224", "input", tensor, "image")
        single = Plan(**{**asdict(plan), "concurrency": [1]})
        serve_and_load("maas", t224.model_dir, [t224], single, log_config, tmp, extras, ("v2-binary", "grpc"))

    print("== cold start (process start to ready)", flush=True)
    cold = {w.key: cold_start(w, plan, log_config) for w in workloads}
    for key, seconds in cold.items():
        print(f"{key}: {seconds:.2f}s (median of {plan.cold_starts})", flush=True)

    summary = report.build(machine(plan), plan, results, extras, capacity, raws, cold, time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    png_path = report.plot(summary, args.out / f"bench-{stamp}.png")
    print(report.table(summary))
    print(f"\nwrote {json_path} and {png_path}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
