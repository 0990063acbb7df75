"""The README's "Deploy on Kubernetes" section is what scripts/kind_e2e.sh runs, and names only
what exists.

Each command of the section's ``<!-- readme: kind_e2e -->`` blocks (continuations joined,
comments and blank lines dropped: ``tests/readme_blocks.py``) must be a command of kind_e2e.sh,
word for word, and in the README's order; commands kind cannot run (pushing to a registry, a GPU)
sit in ``not-run`` blocks that say why. Every repository path the section names must exist.
"""

from __future__ import annotations

import re
import shlex

import yaml
from deploy_support import MODEL_FOLDERS, REPO

from tests.readme_blocks import Block, blocks, shell_commands

README = REPO / "README.md"
KIND_E2E = REPO / "scripts" / "kind_e2e.sh"
REFERENCE_MODELS = REPO / "scripts" / "reference_models.py"
TOP_LEVEL = ("scripts", "manifests", "helm", "docs", "predictors", "tests")


def section() -> tuple[str, int]:
    """The deploy section's text and the README line it starts on."""
    text = README.read_text()
    start = text.index("\n## Deploy on Kubernetes\n") + 1
    end = text.find("\n## ", start + 1)
    body = text[start : end + 1 if end != -1 else len(text)]
    return body, text.count("\n", 0, start) + 1


def section_blocks() -> list[Block]:
    body, first = section()
    return [Block(b.language, b.code, b.kind, b.note, b.line + first - 1) for b in blocks(body)]


def readme_commands() -> list[tuple[int, str]]:
    return [(b.line, c) for b in section_blocks() if b.kind == "kind_e2e" for c in b.commands()]


def test_every_command_block_is_run_by_kind_e2e_or_says_why_not():
    command_blocks = [b for b in section_blocks() if b.is_command]
    assert command_blocks
    for block in command_blocks:
        assert block.kind in ("kind_e2e", "not-run"), f"README line {block.line}: marker {block.kind!r}"
        assert block.kind != "not-run" or block.note, f"README line {block.line}: a not-run block says why"
    assert len(readme_commands()) >= 20


def test_kind_e2e_runs_every_readme_command_verbatim_and_in_order():
    script = shell_commands(KIND_E2E.read_text())
    position = -1
    for line, command in readme_commands():
        found = [i for i, c in enumerate(script) if c == command]
        assert found, f"README line {line}: kind_e2e.sh never runs\n  {command}"
        later = [i for i in found if i > position]
        assert later, f"README line {line}: kind_e2e.sh runs this before the README's previous command\n  {command}"
        position = later[0]


def test_kind_e2e_sets_the_readme_variables_first():
    script = shell_commands(KIND_E2E.read_text())
    assert "NAMESPACE=maas" in script
    # REGISTRY is the user's in the README (a not-run block); kind keeps the image's default name.
    assert "REGISTRY=ghcr.io/maas-project" in script
    entries = yaml.safe_load((REPO / "manifests" / "images" / "kustomization.yaml").read_text())["images"]
    assert {e["newName"] for e in entries} == {"ghcr.io/maas-project/maas-predictor"}


def named_paths(text: str) -> set[str]:
    """Repository paths a text names (``scripts/...``, ``manifests/...``, ``Dockerfile``, ...)."""
    pattern = rf"(?<![\w./-])((?:{'|'.join(TOP_LEVEL)})/[\w./-]*[\w/-]|Dockerfile|pyproject\.toml)"
    return set(re.findall(pattern, text))


def test_every_path_the_section_names_exists():
    body, _ = section()
    paths = named_paths(body)
    assert {
        "scripts/kind_e2e.sh",
        "scripts/models_to_pvc.sh",
        "docs/deploy.md",
        "helm/examples/values-cpu.yaml",
    } <= paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"the README's deploy section names files that do not exist: {missing}"


def test_docs_deploy_names_only_files_that_exist():
    paths = named_paths((REPO / "docs" / "deploy.md").read_text())
    assert {"manifests/images/kustomization.yaml", "scripts/models_to_pvc.sh"} <= paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"docs/deploy.md names files that do not exist: {missing}"


def test_every_reference_model_file_it_names_is_built():
    body, _ = section()
    builder = REFERENCE_MODELS.read_text()
    for name, file in re.findall(r"\.models/([\w-]+)(?:/([\w.-]+))?", body):
        assert f'"{name}": ' in builder, f".models/{name} is not a model scripts/reference_models.py builds"
        assert not file or file in builder, f".models/{name}/{file} is not a file scripts/reference_models.py writes"


def test_the_models_step_fills_every_folder_the_examples_read():
    (command,) = [c for _, c in readme_commands() if c.startswith("scripts/models_to_pvc.sh")]
    words = shlex.split(command)
    pairs = dict(reversed(w.split("=", 1)) for w in words if "=" in w)
    assert pairs == {folder: f".models/{model}" for folder, model in MODEL_FOLDERS.items()}
    assert words[words.index("-c") + 1] == "maas-models"
    body, _ = section()
    for folder in MODEL_FOLDERS:
        assert f"`{folder}/`" in body, f"the README does not state the folder {folder}/"
    # The chart's examples read those folders (the manifests' are checked in test_deploy_manifests).
    for values in (REPO / "helm" / "examples").glob("*.yaml"):
        for model in yaml.safe_load(values.read_text())["models"]:
            uri = model["storageUri"]
            assert uri.startswith("pvc://maas-models/") and uri.rsplit("/", 1)[1] in MODEL_FOLDERS, (values.name, uri)


def test_one_release_name_from_install_to_uninstall():
    helm = [shlex.split(c) for _, c in readme_commands() if c.startswith("helm ")]
    (install,) = [words for words in helm if words[:2] == ["helm", "install"] and "helm/maas" in words]
    release = install[2]
    assert ["helm", "test", release] in [words[:3] for words in helm]
    assert ["helm", "uninstall", release] in [words[:3] for words in helm]
    assert install[install.index("-f") + 1] == "helm/examples/values-cpu.yaml"
