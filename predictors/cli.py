"""``python -m predictors``: parse flags, read the model directory, start the server."""

from __future__ import annotations

import argparse
import logging
import sys

from predictors.errors import ConfigError
from predictors.memory import keep_freed_memory

logger = logging.getLogger("maas")


def build_parser() -> argparse.ArgumentParser:
    """maas's flags on top of kserve's standard ModelServer flags."""
    from kserve.model_server import parser as kserve_parser

    from predictors.settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m predictors",
        parents=[kserve_parser],
        description="Serve a maas model directory over KServe V1 REST, V2 REST and V2 gRPC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    Settings.add_arguments(parser)
    # kserve's per-request timing log lines are off unless asked for: /metrics has the latencies
    parser.set_defaults(enable_latency_logging=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point; exits 2 on a bad setting or model directory, 1 if loading fails."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        server, model = _create(ns)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    _share_kserve_logging()
    if keep_freed_memory(model.settings.allocator_cache_mb):  # before the model's first allocations
        logger.info("malloc keeps up to %d MiB of freed memory for reuse", model.settings.allocator_cache_mb)
    try:
        server.start([model])
    except ConfigError as exc:
        logger.error("cannot serve %s: %s", model.name, exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        logger.exception("cannot serve %s", model.name)
        sys.exit(1)


def _share_kserve_logging() -> None:
    """Log maas's messages (loading progress, errors) through kserve's configured handlers."""
    kserve_logger = logging.getLogger("kserve")
    if kserve_logger.handlers and not logger.handlers:
        for handler in kserve_logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(kserve_logger.level or logging.INFO)
        logger.propagate = False


def _create(ns: argparse.Namespace):
    from predictors.config import ModelConfig
    from predictors.families import model_class
    from predictors.server import MaasModelServer
    from predictors.settings import Settings
    from predictors.storage import resolve_model_dir

    settings = Settings.from_namespace(ns)
    model_dir = resolve_model_dir(settings.model_dir)
    config = ModelConfig.load(model_dir)
    cls = model_class(settings.family or config.family).resolve(config, model_dir)
    name = settings.model_name or config.name or model_dir.name
    model = cls(name, model_dir, config, settings)
    server = MaasModelServer(
        host=settings.host,
        max_body_bytes=int(settings.max_request_mb * 1024 * 1024),
        drain_delay=settings.drain_delay_s,
        http_port=ns.http_port,
        grpc_port=ns.grpc_port,
        workers=ns.workers,
        max_threads=ns.max_threads,
        max_asyncio_workers=ns.max_asyncio_workers,
        enable_grpc=ns.enable_grpc,
        enable_docs_url=ns.enable_docs_url,
        enable_latency_logging=ns.enable_latency_logging,
        access_log_format=ns.access_log_format,
        event_loop=ns.event_loop,
        timeout_keep_alive=ns.timeout_keep_alive,
    )
    return server, model
