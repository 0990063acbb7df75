#!/usr/bin/env python
"""Benchmark maas against the raw model, a noop model on the same stack, and a naive kserve.Model.

    python scripts/bench.py --quick      # under three minutes
    python scripts/bench.py              # the full grid (concurrency 1, 8, 32, 64)

See scripts/maas_bench/cli.py for the method; results go to bench-results/ (JSON and PNG).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maas_bench.cli import main

if __name__ == "__main__":
    main()
