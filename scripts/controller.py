#!/usr/bin/env python3
"""Launcher for the maas version controller: ``python scripts/controller.py COMMAND ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from maas_controller.cli import main

if __name__ == "__main__":
    sys.exit(main())
