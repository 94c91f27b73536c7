"""No Docker engine runs here: the compose file and Dockerfile are checked statically."""

from __future__ import annotations

import contextlib
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


def _words(value) -> str:
    return " ".join(value) if isinstance(value, list) else str(value or "")


def test_no_secret_is_on_a_command_line(compose):
    """Command lines are visible in ps and docker inspect: secrets go through the environment."""
    for name, service in compose["services"].items():
        line = _words(service.get("command")) + " " + _words(service.get("entrypoint"))
        assert not re.search(r"\$\{\w*(PASSWORD|SECRET|TOKEN|KEY)\w*\}", line), (
            f"{name} has a secret on its command"
        )
        assert not re.search(r"://[^:/@\s]+:[^@\s]+@", line), (
            f"{name} has a URI with a password on its command"
        )


def test_mlflow_requires_authentication_and_is_published_on_this_host_only(compose):
    services = compose["services"]
    mlflow = services["mlflow"]
    assert "--app-name basic-auth" in _words(mlflow["command"])
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == "${MLFLOW_TRACKING_PASSWORD}"
    for name, service in services.items():
        for port in service.get("ports") or []:
            if name != "api-server":  # Airflow's UI and REST API, behind Airflow's own auth
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    for name in ("api-server", "scheduler", "worker", "dag-processor", "triggerer"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == "${MLFLOW_TRACKING_USERNAME}"
        assert env["MLFLOW_TRACKING_PASSWORD"] == "${MLFLOW_TRACKING_PASSWORD}"


def test_the_compose_mlflow_command_refuses_anonymous_clients_and_hides_its_secrets(compose, tmp_path):
    """Run the compose file's own MLflow command and environment on loopback (SQLite in place of the
    PostgreSQL backend): anonymous requests get 401, the configured account gets in, and no secret
    appears on any of its processes' command lines."""
    import secrets
    import subprocess
    import sys
    import time
    from pathlib import Path

    import requests
    from support import free_port

    service = compose["services"]["mlflow"]
    password, secret_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    values = {
        "MLFLOW_TRACKING_USERNAME": "cormorant",
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key,
    }
    env = {
        k: re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), "x"), str(v))
        for k, v in service["environment"].items()
    }
    env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ini = (PROJECT_ROOT / "scripts" / "compose" / "mlflow-auth.ini").read_text()
    (tmp_path / "auth.ini").write_text(
        re.sub(r"database_uri = .*", f"database_uri = sqlite:///{tmp_path / 'auth.db'}", ini)
    )
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "auth.ini")
    port = free_port()
    command = list(service["command"])
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command[command.index("--artifacts-destination") + 1] = (tmp_path / "artifacts").as_uri()
    command[0] = str(Path(sys.executable).with_name("mlflow"))
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=(tmp_path / "mlflow.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                anonymous = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "MLflow did not start"
                time.sleep(0.5)
        assert anonymous.status_code == 401
        assert requests.get(url, auth=("cormorant", "wrong"), timeout=5).status_code == 401
        assert requests.get(url, auth=("cormorant", password), timeout=5).status_code == 200
        pids = subprocess.run(
            ["pgrep", "-g", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert pids
        for pid in pids:
            with contextlib.suppress(FileNotFoundError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                assert password not in cmdline and secret_key not in cmdline
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)


def test_the_image_gives_every_spec_a_dag_file_of_its_own():
    """The image configures the specs bundle exactly as the embedded default does (cormorant.config)."""
    from cormorant.config import dag_bundles

    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    found = re.search(r"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='([^']+)'", dockerfile)
    assert found, "the image does not configure the DAG bundles"
    assert json.loads(found.group(1)) == json.loads(dag_bundles())
