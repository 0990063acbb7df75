"""The command line: ``python scripts/controller.py COMMAND NAME [options]``.

Arguments are parsed and validated here, once, before anything reaches the cluster. Errors
print one line on stderr and exit with the error's ``exit_code``; the codes are defined once,
in ``errors.ExitCode``, and ``--help`` lists them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from .commands import Controller, Settings
from .errors import ControllerError, ExitCode, ValidationError, exit_code_table
from .kube import Clock, Kube, load_api_client
from .model import (
    MODEL_FORMATS,
    Mode,
    parse_duration,
    parse_steps,
    validate_name,
    validate_percent,
    validate_uri,
    validate_version,
)
from .output import FORMATS, render, status_table, table
from .prometheus import DEFAULT_SELECTOR, Prometheus, Thresholds
from .reconcile import Reconciler
from .rollout import Rollout, RolloutPlan, Tick


def _checked(check: Any) -> Any:
    """Wrap a validator so argparse reports its message as a usage error."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    parse.__name__ = check.__name__.replace("validate_", "").replace("parse_", "")
    return parse


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValidationError(f"percent must be an integer in 0..100, got {text!r}") from None
    return validate_percent(value)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ValidationError(f"expected a fraction in 0..1, got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValidationError(f"expected a positive number, got {text!r}")
    return value


NAME, URI, VERSION = _checked(validate_name), _checked(validate_uri), _checked(validate_version)
DURATION, PERCENT = _checked(parse_duration), _checked(_percent)
STEPS, FRACTION, POSITIVE = _checked(parse_steps), _checked(_fraction), _checked(_positive)
MODE = _checked(Mode.parse)


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph text as usual, but prints multi-line text (the exit codes) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("MAAS_NAMESPACE", "default"),
        help="namespace of the InferenceService (default: $MAAS_NAMESPACE or 'default')",
    )
    group.add_argument(
        "-o", "--output", choices=FORMATS, default="table", help="output format on stdout (default: table)"
    )
    group.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: in-cluster config in a pod, else $KUBECONFIG, else ~/.kube/config)",
    )
    group.add_argument("--context", help="kubeconfig context (default: its current-context)")
    group.add_argument(
        "--request-timeout",
        type=DURATION,
        default=30.0,
        help="give up on one API request after this long, e.g. 30s (default 30s)",
    )
    group.add_argument(
        "--timeout", type=DURATION, default=600.0, help="how long to wait for Ready, e.g. 10m (default 10m)"
    )
    group.add_argument("--poll", type=DURATION, default=2.0, help="delay between reads while waiting (default 2s)")
    group.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="return after the change is accepted, without waiting for Ready",
    )
    group.add_argument(
        "--default-mode",
        type=MODE,
        default=Mode.KNATIVE,
        help="deployment mode when the InferenceService declares none (Serverless or Standard; default Serverless)",
    )
    group.add_argument(
        "--history-limit", type=int, default=200, help="entries kept in the history ConfigMap (default 200)"
    )
    return common


def _threshold_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-error-rate",
        type=FRACTION,
        default=0.01,
        help="highest healthy share of 5xx answers on the canary, 0..1 (default 0.01)",
    )
    parser.add_argument(
        "--max-p99-ms",
        type=POSITIVE,
        default=250.0,
        help="highest healthy p99 latency of the canary in milliseconds (default 250)",
    )


def _health_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("health gates")
    group.add_argument(
        "--prometheus",
        "--prometheus-url",
        dest="prometheus",
        help="Prometheus base URL; without it only readiness gates the steps",
    )
    group.add_argument(
        "--canary-selector",
        default=DEFAULT_SELECTOR,
        help="PromQL label matchers selecting the canary's series; placeholders "
        "{namespace} {name} {target} {version} (default: %(default)s)",
    )
    group.add_argument("--window", default="", help="PromQL rate window (default: max(interval, 60s))")
    group.add_argument("--require-traffic", action="store_true", help="treat a canary without samples as unhealthy")
    group.add_argument(
        "--ready-timeout",
        type=DURATION,
        default=None,
        help="how long a step may take to become Ready (default: --timeout)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI; building it has no side effects (tests walk it)."""
    epilog = exit_code_table()
    parser = argparse.ArgumentParser(
        prog="controller.py",
        description="maas model version controller: deploy, canary, promote, roll back and "
        "progressively roll out versions of a KServe InferenceService.",
        epilog=epilog,
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]
    isvc = "name of the InferenceService"

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help.replace("%", "%%"),
            description=help,
            parents=common,
            epilog=epilog,
            formatter_class=_Formatter,
        )

    p = command("deploy", "Create the InferenceService, or roll a version out at 100%.")
    p.add_argument("name", type=NAME, help=isvc)
    p.add_argument("--storage-uri", type=URI, required=True, help="where the version's model is, e.g. s3://models/m/1")
    p.add_argument("--version", type=VERSION, help="version name (default: known name of this URI, else the next vN)")
    p.add_argument(
        "--model-format", choices=MODEL_FORMATS, help="needed to create: spec.predictor.model.modelFormat.name"
    )
    p.add_argument("--runtime", help="spec.predictor.model.runtime, when creating")
    p.add_argument("--mode", type=MODE, help="deployment mode annotation, when creating")

    p = command("canary", "Route a percentage of the traffic to a new version.")
    p.add_argument("name", type=NAME, help=isvc)
    p.add_argument("--storage-uri", type=URI, required=True, help="where the canary's model is")
    p.add_argument("--percent", type=PERCENT, required=True, help="share of the traffic for the canary, 0..100")
    p.add_argument("--version", type=VERSION, help="version name (default: known name of this URI, else the next vN)")

    p = command("promote", "Send all traffic to the canary; it becomes the stable version.")
    p.add_argument("name", type=NAME, help=isvc)

    p = command("rollback", "Abandon the canary, or return to the previous or any version.")
    p.add_argument("name", type=NAME, help=isvc)
    p.add_argument(
        "--to", type=VERSION, help="a version from the history (default: drop the canary, else the previous)"
    )

    p = command("status", "Versions, traffic split and readiness.")
    p.add_argument("name", type=NAME, help=isvc)

    p = command("history", "Every version: URI, when, by which command, outcome.")
    p.add_argument("name", type=NAME, help=isvc)

    p = command(
        "rollout",
        "Progressive delivery: canary steps gated on health, with automatic "
        "rollback. Re-run the same command to resume.",
    )
    p.add_argument("name", type=NAME, help=isvc)
    p.add_argument("--storage-uri", type=URI, required=True, help="where the new version's model is")
    p.add_argument("--version", type=VERSION, help="version name (default: known name of this URI, else the next vN)")
    p.add_argument(
        "--steps", type=STEPS, default=(10, 25, 50, 100), help="canary percents, ending at 100 (default 10,25,50,100)"
    )
    p.add_argument("--interval", type=DURATION, default=60.0, help="observation time per step once Ready (default 60s)")
    _threshold_options(p)
    _health_options(p)

    p = command(
        "run",
        "Reconcile loop for the cluster: progressive rollouts requested by "
        "maas.io/rollout-* annotations on InferenceServices.",
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (needs a ClusterRole)")
    p.add_argument("--interval", type=DURATION, default=30.0, help="time between reconcile passes (default 30s)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument(
        "--step-interval", type=DURATION, default=60.0, help="default observation time per step (default 60s)"
    )
    _threshold_options(p)
    _health_options(p)
    return parser


def _plan(args: argparse.Namespace, storage_uri: str, interval: float) -> RolloutPlan:
    thresholds = Thresholds(args.max_error_rate, args.max_p99_ms, args.require_traffic)
    return RolloutPlan(
        storage_uri=storage_uri,
        version=getattr(args, "version", None),
        steps=getattr(args, "steps", (10, 25, 50, 100)),
        interval=interval,
        thresholds=thresholds,
        selector=args.canary_selector,
        window=args.window,
        ready_timeout=args.ready_timeout if args.ready_timeout is not None else args.timeout,
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    clock: Clock | None = None,
    api_client: Any = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    clock = clock or Clock()

    def say(message: str) -> None:
        print(f"[{clock.iso()}] {message}", file=err, flush=True)

    settings = Settings(
        namespace=args.namespace,
        default_mode=args.default_mode,
        timeout=args.timeout,
        poll=args.poll,
        wait=args.wait,
        history_limit=args.history_limit,
    )
    try:
        if args.command == "rollout":  # validate the plan before connecting
            plan = _plan(args, args.storage_uri, args.interval)
        kube = Kube(api_client or load_api_client(args.kubeconfig, args.context), request_timeout=args.request_timeout)
        ctl = Controller(kube, settings, clock=clock, log=say)
        prometheus = Prometheus(args.prometheus) if getattr(args, "prometheus", None) else None
        if args.command == "run":
            return _run(args, kube, settings, prometheus, clock, say)
        if args.command == "rollout":

            def report(tick: Tick) -> None:
                say(f"{args.name}: {tick.message}")

            tick = Rollout(ctl, prometheus).run(args.name, plan, poll=args.poll, report=report)
            result: Any = {"name": args.name, "phase": tick.phase, "message": tick.message}
            print(render(result, args.output, tick.message), file=out)
            return 0
        if args.command == "status":
            status = ctl.status(args.name)
            print(render(status, args.output, status_table(status)), file=out)
            return 0
        if args.command == "history":
            entries = ctl.history(args.name)
            columns = ["seq", "version", "at", "command", "outcome", "percent", "storageUri", "detail"]
            print(render(entries, args.output, table(entries, columns)), file=out)
            return 0
        if args.command == "deploy":
            done = ctl.deploy(
                args.name,
                args.storage_uri,
                args.version,
                model_format=args.model_format,
                runtime=args.runtime,
                mode=args.mode,
            )
        elif args.command == "canary":
            done = ctl.canary(args.name, args.storage_uri, args.percent, args.version)
        elif args.command == "promote":
            done = ctl.promote(args.name)
        else:
            done = ctl.rollback(args.name, args.to)
        print(render(done.as_dict(), args.output, done.message), file=out)
        return 0
    except ControllerError as exc:
        print(f"error: {exc.message}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=err)
        return ExitCode.INTERRUPTED


def _run(
    args: argparse.Namespace, kube: Kube, settings: Settings, prometheus: Prometheus | None, clock: Clock, say: Any
) -> int:
    namespace = None if args.all_namespaces else args.namespace
    # A template: each InferenceService's maas.io/rollout-storage-uri replaces the URI.
    defaults = _plan(args, "s3://maas/template", args.step_interval)
    reconciler = Reconciler(kube, settings, defaults, namespace, prometheus, clock, say)
    if args.once:
        reconciler.reconcile_once()
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def interruptible_sleep(seconds: float) -> None:  # wakes up at once on SIGTERM
        stop.wait(seconds)

    clock.sleep = interruptible_sleep
    say(f"reconciling {'all namespaces' if namespace is None else namespace} every {args.interval:g}s")
    reconciler.run(args.interval, stop.is_set)
    return 0
