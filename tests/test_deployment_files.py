"""No Docker engine runs here: the compose file and Dockerfile are checked statically."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from cormorant.config import PROJECT_ROOT

SCHEMA = PROJECT_ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())


def test_compose_file_matches_the_compose_specification(compose):
    import jsonschema

    if not SCHEMA.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Compose JSON schema is missing: {SCHEMA}")
        pytest.skip(f"the Compose JSON schema is not at {SCHEMA}")
    jsonschema.validate(compose, json.loads(SCHEMA.read_text()))


def _environments(compose):
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        yield name, env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_compose_writes_no_credentials(compose):
    for service, env in _environments(compose):
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|FERNET|TOKEN", key):
                assert str(value).startswith("${"), f"{service}: {key} is written into the file"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", str(value)):
                assert password.startswith("${"), f"{service}: {key} embeds a password"
    text = (PROJECT_ROOT / "docker-compose.yaml").read_text()
    example = (PROJECT_ROOT / ".env.example").read_text()
    for name in re.findall(r"(?<!\$)\$\{(\w+)", text):  # $${...} is a literal for the container's shell
        assert f"{name}=" in example, f"{name} is used by docker-compose.yaml but missing from .env.example"


def test_dockerfile_copies_only_what_exists_and_pins_airflow():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (PROJECT_ROOT / source).exists(), source
    version = re.search(r"ARG AIRFLOW_VERSION=(\S+)", dockerfile).group(1)
    assert f"apache-airflow=={version}" in (PROJECT_ROOT / "requirements.txt").read_text()


def test_requirements_are_pinned_exactly():
    for name in ("requirements.txt", "requirements-dev.txt", "constraints.txt"):
        for line in (PROJECT_ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", line), f"{name}: {line}"


def test_trainer_image_needs_only_what_the_trainer_imports():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "AS trainer" in dockerfile
    runtime = dict(
        line.split("==")
        for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    trainer = dict(
        line.split("==")
        for line in (PROJECT_ROOT / "requirements-trainer.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert not [name for name in trainer if name.startswith("apache-airflow")]
    for name, version in trainer.items():
        assert runtime.get(name) == version, f"{name} is pinned differently from requirements.txt"


def test_compose_services_refer_to_things_that_exist(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        command = service.get("command") or []
        for word in " ".join(command if isinstance(command, list) else [command]).split():
            if word.startswith("scripts/"):
                assert (PROJECT_ROOT / word).exists(), f"{name} runs {word}, which does not exist"
        if service.get("build"):
            target = service["build"].get("target")
            assert f" AS {target}" in (PROJECT_ROOT / "Dockerfile").read_text(), (
                f"no Dockerfile stage {target}"
            )
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in (
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "worker",
        "postgres",
        "redis",
        "minio",
    ):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
