"""The built predictor image serves as KServe runs it: ``scripts/image.sh smoke`` passes.

Building the image takes minutes, so no test builds it: this one runs against an image already
built here (``scripts/image.sh build``; ``IMAGE`` picks the tag) and skips when there is none or
no container engine. It checks the image as built, not the working tree: rebuild after changes.
One container per model family in turn (digits-cnn, digits-lstm, minilm, digits-vae), each about
ten seconds: readiness, V1, V2 REST and gRPC answers, /metrics and a SIGTERM drain to exit 0.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from deploy_support import REPO

SCRIPT = REPO / "scripts" / "image.sh"


def test_image_smoke(models_dir: Path) -> None:
    exists = subprocess.run([str(SCRIPT), "exists"], capture_output=True, text=True, timeout=60)
    if exists.returncode == 2:
        pytest.skip("neither podman nor docker is here")
    if exists.returncode != 0:
        pytest.skip("no maas-predictor image built here: run scripts/image.sh build")
    smoke = subprocess.run(
        [str(SCRIPT), "smoke"],
        env={**os.environ, "MODELS_DIR": str(models_dir)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert smoke.returncode == 0, f"scripts/image.sh smoke failed:\n{smoke.stdout}\n{smoke.stderr}"
    assert "smoke passed: 4 models" in smoke.stdout
