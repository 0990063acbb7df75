"""``python -m predictors``: parse flags, read the model directory, start the server.

Every error a user can cause ends the process with one line on stderr, ``error: <what>; <what to
do>``, and no traceback. Exit codes:

- 0: stopped by SIGTERM or SIGINT, after draining.
- 1: the model failed to load (weights missing or corrupt, config not matching them, CUDA asked
  for but absent, ...).
- 2: a bad flag or setting, or an unusable model directory (missing, no maas.yaml, bad config).
- 3: the HTTP or gRPC port (or the host) cannot be listened on, e.g. a port already in use.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from predictors.errors import ConfigError, ListenError
from predictors.memory import keep_freed_memory

logger = logging.getLogger("maas")

PROG = "python -m predictors"
EXIT_LOAD_FAILED = 1
EXIT_BAD_SETTINGS = 2
EXIT_CANNOT_LISTEN = 3
EPILOG = f"""exit codes:
  0  stopped by SIGTERM or SIGINT, after draining
  {EXIT_LOAD_FAILED}  the model failed to load (weights missing or corrupt, config not matching them, ...)
  {EXIT_BAD_SETTINGS}  a bad flag or setting, or an unusable model directory (missing, no maas.yaml, ...)
  {EXIT_CANNOT_LISTEN}  the HTTP or gRPC port (or the host) cannot be listened on, e.g. a port in use

Every maas setting can also be given as MAAS_<FLAG> in the environment (MAAS_MAX_BATCH_SIZE=64)."""


def fail(code: int, message: str) -> NoReturn:
    """End the process with ``message`` on one line of stderr."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    fail(EXIT_BAD_SETTINGS, f"{message}; see {PROG} --help")


class Parser(argparse.ArgumentParser):
    """A parser whose errors are one line naming the flag, not the whole usage."""

    error = _one_line_error


def build_parser() -> argparse.ArgumentParser:
    """maas's flags on top of kserve's standard ModelServer flags."""
    from predictors.settings import Settings

    parser = Parser(
        prog=PROG,
        parents=[_kserve_parser()],
        description="Serve a maas model directory over KServe V1 REST, V2 REST and V2 gRPC.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    Settings.add_arguments(parser)
    # kserve's per-request timing log lines are off unless asked for: /metrics has the latencies
    parser.set_defaults(enable_latency_logging=False)
    for action in parser._actions:
        if action.dest in KSERVE_HELP:
            action.help = KSERVE_HELP[action.dest]
    return parser


# kserve's flags whose own help is wrong or unclear for a maas server (every flag has help: tested)
KSERVE_HELP = {
    "workers": "Uvicorn worker processes; must be 1 (scale out with replicas: one model copy per process).",
    "max_asyncio_workers": "Unused by maas: the event loop's default executor keeps Python's default size.",
    "access_log_format": "Format of the access-log lines (asgi-logger fields); giving it turns --access_log on.",
    "enable_latency_logging": "Log kserve's per-request preprocess/predict/postprocess latencies "
    "(two lines a request; /metrics has maas's latency histograms either way).",
    "predictor_host": "Unused by maas (kserve transformers only): the predictor a transformer calls.",
    "protocol": "Unused by maas (kserve transformers only); replaced by --predictor_protocol.",
    "predictor_protocol": "Unused by maas (kserve transformers only): the protocol a transformer calls with.",
    "predictor_use_ssl": "Unused by maas (kserve transformers only): call the predictor over HTTPS.",
    "predictor_request_timeout_seconds": "Unused by maas (kserve transformers only): predictor call timeout.",
    "predictor_request_retries": "Unused by maas (kserve transformers only): predictor call retries.",
    "enable_predictor_health_check": "Unused by maas (kserve transformers only): predictor readiness check.",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag's help; the epilog's exit-code table kept as written."""


def _kserve_parser() -> argparse.ArgumentParser:
    """kserve's flags. Importing kserve parses ``sys.argv`` with them at once, printing its whole
    usage on a bad value: while it does, a bad value gets this parser's one-line error instead."""
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _one_line_error  # type: ignore[method-assign,assignment]
    try:
        from kserve.model_server import parser
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point; exit codes in the module docstring."""
    ns = build_parser().parse_args(argv)
    try:
        server, model = _create(ns)
        server.listen()
    except ConfigError as exc:
        fail(EXIT_BAD_SETTINGS, str(exc))
    except ListenError as exc:
        fail(EXIT_CANNOT_LISTEN, str(exc))
    _share_kserve_logging()
    if keep_freed_memory(model.settings.allocator_cache_mb):  # before the model's first allocations
        logger.info("malloc keeps up to %d MiB of freed memory for reuse", model.settings.allocator_cache_mb)
    try:
        server.start([model])
    except ConfigError as exc:
        fail(EXIT_LOAD_FAILED, f"cannot serve {model.name}: {exc}")
    except ListenError as exc:
        fail(EXIT_CANNOT_LISTEN, str(exc))
    except Exception as exc:
        logger.exception("cannot serve %s", model.name)
        fail(EXIT_LOAD_FAILED, f"cannot serve {model.name}: {exc}")


def _share_kserve_logging() -> None:
    """Log maas's messages (loading progress, errors) through kserve's configured handlers."""
    kserve_logger = logging.getLogger("kserve")
    if kserve_logger.handlers and not logger.handlers:
        for handler in kserve_logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(kserve_logger.level or logging.INFO)
        logger.propagate = False


def _create(ns: argparse.Namespace) -> tuple[Any, Any]:
    from predictors.config import ModelConfig
    from predictors.families import model_class
    from predictors.server import MaasModelServer
    from predictors.settings import Settings
    from predictors.storage import resolve_model_dir

    _check_kserve_flags(ns)
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
        access_log=settings.access_log or bool(ns.access_log_format),
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
        ssl_certfile=ns.ssl_certfile,
        ssl_keyfile=ns.ssl_keyfile,
    )
    return server, model


def _check_kserve_flags(ns: argparse.Namespace) -> None:
    """kserve's flags that it takes unchecked, and would fail on with a traceback once serving."""
    for flag in ("http_port", "grpc_port"):
        if not 0 <= getattr(ns, flag) <= 65535:
            raise ConfigError(f"--{flag} must be from 0 to 65535 (0: any free port), got {getattr(ns, flag)}")
    if ns.max_threads < 1:
        raise ConfigError(f"--max_threads must be at least 1, got {ns.max_threads}")
    for flag in ("log_config_file", "ssl_certfile", "ssl_keyfile"):
        path = getattr(ns, flag)
        if path and not Path(path).is_file():
            raise ConfigError(f"--{flag} {path} does not exist or is not a file")
