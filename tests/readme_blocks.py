"""The README's command blocks and what runs each one.

Every fenced ``bash`` or ``python`` block in README.md follows a marker line
``<!-- readme: KIND -->`` that says what runs it:

- ``quickstart``: the quick start's server; ``tests/test_readme.py`` runs it with free ports
  (``HTTP_PORT``/``GRPC_PORT``, as the README shows) and the ``call`` blocks after it against it;
- ``serve``: a ``python -m predictors`` command; run the same way, with the following ``call`` blocks;
- ``call``: requests to the server of the nearest ``quickstart`` or ``serve`` block above;
- ``local``: run as written in the checkout;
- ``pip``: ``pip install`` commands, run with ``--dry-run`` added;
- ``ci``: what ``.ci/run`` runs (the test suite cannot run itself);
- ``controller``: run against a fake Kubernetes API server (``tests/controller``);
- ``kind_e2e``: each command appears in ``scripts/kind_e2e.sh``, which runs it on a kind cluster;
- ``not-run (why)``: a command that cannot run anywhere but a user's own setup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KINDS = {"quickstart", "serve", "call", "local", "pip", "ci", "controller", "kind_e2e", "not-run"}
COMMAND_LANGUAGES = {"bash", "sh", "shell", "console", "python"}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!-- readme: ([\w-]+)(.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its code, its marker (``kind`` and the rest), its line."""

    language: str
    code: str
    kind: str | None
    note: str
    line: int

    @property
    def is_command(self) -> bool:
        return self.language in COMMAND_LANGUAGES

    def commands(self) -> list[str]:
        """Shell commands, one per entry: continuations joined, comments and blank lines dropped."""
        return shell_commands(self.code)


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README (or of ``text``), in order."""
    text = README.read_text() if text is None else text
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        kind, note = (marker.group(1), marker.group(2).strip()) if marker else (None, "")
        found.append(Block(match.group(1), match.group(2), kind, note, line))
    return found


def shell_commands(code: str) -> list[str]:
    """``code``'s commands: backslash continuations joined, whitespace squeezed, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment (never inside these commands' quotes)
        commands.append(re.sub(r"\s+", " ", line))
    return commands
