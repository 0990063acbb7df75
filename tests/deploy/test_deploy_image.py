"""The Dockerfile keeps its contract: non-root, `python -m predictors`, scripts/ in /app."""

from __future__ import annotations

import json
import shlex

from deploy_support import REPO


def instructions(stage: int | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined; one stage or all."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    parsed = [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]
    if stage is None:
        return parsed
    starts = [i for i, (op, _) in enumerate(parsed) if op == "FROM"]
    ends = [*starts[1:], len(parsed)]
    return parsed[starts[stage] : ends[stage]]


def test_runtime_stage_runs_the_predictor_as_a_numeric_non_root_user():
    final = instructions(-1)
    users = [args for op, args in final if op == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot can only verify a numeric, non-zero UID"
    (entrypoint,) = [args for op, args in final if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "predictors"]
    assert ("WORKDIR", "/app") in final
    assert ("COPY", "scripts/ scripts/") in final
    env = " ".join(args for op, args in final if op == "ENV")
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env


def test_build_stage_installs_torch_first_then_the_package():
    build = instructions(0)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in build if op == "ARG" and "=" in a}
    assert shlex.split(args["TORCH_SPEC"]) == ["torch==2.13.0"]
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    runs = [args for op, args in build if op == "RUN"]
    torch_run = next(i for i, r in enumerate(runs) if "TORCH_SPEC" in r)
    package = 'pip install "/app[storage,controller,transformers]"'
    package_run = next(i for i, r in enumerate(runs) if package in r)
    assert torch_run < package_run
    assert "TORCH_SPEC" in runs[package_run], "the package's install must keep the torch installed first"
    assert ("WORKDIR", "/app") in build


def test_image_installs_what_serving_imports_and_not_the_reference_model_extras():
    """The `transformers` extra is what predictors/ imports for the transformer family; the
    `reference` extra (sentence-transformers, the packaged MiniLM weights, scikit-learn) only
    builds the reference models and stays out of the image."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("=")[0].split("<")[0].strip() for req in extras["transformers"]}
    assert names == {"transformers", "tokenizers", "safetensors"}
    runs = " ".join(args for op, args in instructions(0) if op == "RUN")
    for unwanted in ("[dev", ",dev", "reference", "sentence-transformers", "scikit-learn"):
        assert unwanted not in runs


def test_dockerignore_keeps_what_the_build_copies():
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = {"pyproject.toml", "README.md", "predictors", "scripts"}
    assert not ignored & copied
    assert {"tests", ".git"} <= ignored
