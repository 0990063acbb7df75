"""Every option of every script's CLI says what it does in ``--help``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator

import pytest


def _controller() -> argparse.ArgumentParser:
    from maas_controller.cli import build_parser

    return build_parser()


def _bench() -> argparse.ArgumentParser:
    from maas_bench.cli import build_parser

    return build_parser()


def _call_model() -> argparse.ArgumentParser:
    from call_model import build_parser

    return build_parser()


def _bench_codec() -> argparse.ArgumentParser:
    from bench_codec import build_parser

    return build_parser()


def _render_panel() -> argparse.ArgumentParser:
    from render_panel import build_parser

    return build_parser()


def _reference_models() -> argparse.ArgumentParser:
    from reference_models import build_parser

    return build_parser()


def _bench_generation() -> argparse.ArgumentParser:
    from bench_generation import build_parser

    return build_parser()


def _server() -> argparse.ArgumentParser:
    argv = sys.argv
    sys.argv = [argv[0]]  # importing kserve parses sys.argv
    try:
        from predictors.cli import build_parser

        return build_parser()
    finally:
        sys.argv = argv


def actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    """(command path, action) for every argument of ``parser`` and of its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "controller.py": _controller,
    "bench.py": _bench,
    "call_model.py": _call_model,
    "bench_codec.py": _bench_codec,
    "render_panel.py": _render_panel,
    "reference_models.py": _reference_models,
    "bench_generation.py": _bench_generation,
    "python -m predictors": _server,
}


@pytest.mark.parametrize("name", list(PARSERS))
def test_every_option_has_help(name: str):
    found = list(actions(PARSERS[name](), name))
    assert found
    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}" for path, a in found if not (a.help or "").strip()]
    assert missing == []
