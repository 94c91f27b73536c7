"""The compose file, the Dockerfile and the stack's secrets, checked without Docker (``make deploy-test``
runs them for real)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from cormorant.config import PROJECT_ROOT

SCHEMA = PROJECT_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
sys.path[:0] = [str(PROJECT_ROOT / "scripts"), str(PROJECT_ROOT / "scripts" / "compose")]


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


def test_dockerfile_copies_only_what_exists_and_pins_airflow():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (PROJECT_ROOT / source).exists(), source
    version = re.search(r"ARG AIRFLOW_BASE_IMAGE=apache/airflow:([\d.]+)-python3\.11\n", dockerfile).group(1)
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


def _words(value) -> str:
    return " ".join(value) if isinstance(value, list) else str(value or "")


def test_the_image_gives_every_spec_a_dag_file_of_its_own():
    """The image configures the specs bundle exactly as the embedded default does (cormorant.config)."""
    from cormorant.config import dag_bundles

    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    found = re.search(r"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='([^']+)'", dockerfile)
    assert found, "the image does not configure the DAG bundles"
    assert json.loads(found.group(1)) == json.loads(dag_bundles())


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory):
    from make_secrets import main

    folder = tmp_path_factory.mktemp("stack") / "secrets"
    assert main(["--dir", str(folder)]) == 0
    return folder


def _secret_files(service: dict) -> list[tuple[str, str]]:
    """(source, where it is mounted) of a service's secrets."""
    found = []
    for entry in service.get("secrets") or []:
        source, target = (entry, entry) if isinstance(entry, str) else (entry["source"], entry.get("target"))
        found.append((source, target if str(target).startswith("/") else f"/run/secrets/{target or source}"))
    return found


def test_no_credential_is_in_the_compose_file_its_environment_or_a_command_line(compose):
    """Credentials are files in ./secrets, mounted where used: never an environment value (docker inspect
    shows those), nor a word of a command line (ps shows those), nor a value in .env."""
    text = (PROJECT_ROOT / "docker-compose.yaml").read_text()
    assert not re.search(r"://[^:/@\s$]+:[^@\s]+@", text), "a URL with a password"
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items() if isinstance(env, dict) else [e.split("=", 1) for e in env]:
            if key.endswith(("_FILE", "_PATH")):  # where a credential file is, not the credential
                assert str(value).startswith(("/run/secrets/", "/tmp/")), f"{name}: {key}"
            elif re.search(
                r"PASSWORD|SECRET_KEY|JWT_SECRET|FERNET|TOKEN|SQL_ALCHEMY_CONN|BROKER_URL|RESULT_BACKEND", key
            ):
                assert key.endswith("_CMD") and str(value).startswith("cat /run/secrets/"), f"{name}: {key}"
    example = (PROJECT_ROOT / ".env.example").read_text()
    assert not re.search(r"(?im)^\w*(PASSWORD|SECRET|FERNET|TOKEN)\w*=", example)
    for name in re.findall(r"(?<!\$)\$\{(\w+)", text):  # $${...} is a literal for the container's shell
        assert f"{name}=" in example, f"{name} is used by docker-compose.yaml but missing from .env.example"
    assert "secrets/" in (PROJECT_ROOT / ".gitignore").read_text().split()
    assert "secrets" in (PROJECT_ROOT / ".dockerignore").read_text().split()  # not in any build context


def test_compose_services_refer_to_things_that_exist(compose):
    services, declared = compose["services"], compose["secrets"]
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume.split(":/")[0])
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        for source, _ in _secret_files(service):
            assert source in declared, f"{name} mounts undeclared secret {source}"
        words = (
            " ".join(map(str, service.get("command") or []))
            + " "
            + " ".join(map(str, service.get("entrypoint") or []))
        )
        for word in re.findall(r"scripts/\S+\.py", words):
            assert (PROJECT_ROOT / word).exists(), f"{name} runs {word}, which does not exist"
        if service.get("build"):
            assert f" AS {service['build']['target']}" in (PROJECT_ROOT / "Dockerfile").read_text()
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name, service in services.items():
        if service.get("restart") != "no":
            assert "healthcheck" in service, f"{name} has no healthcheck"
            assert "airflow jobs check" not in str(service["healthcheck"]), (
                f"{name}: an Airflow CLI process per check"
            )


def test_every_secret_the_stack_mounts_is_one_the_generator_writes(compose, secrets_dir):
    from make_secrets import RANDOM

    for name, spec in compose["secrets"].items():
        path = PROJECT_ROOT / spec["file"]
        assert path.parent.name == "secrets" and (secrets_dir / path.name).exists(), name
    for name in RANDOM:  # Airflow's *_CMD options keep a trailing newline, so values have none
        assert not (secrets_dir / name).read_text().endswith("\n"), name
    assert (secrets_dir.stat().st_mode & 0o777) == 0o700


def test_the_generator_keeps_its_values_and_rotates_them_when_asked(secrets_dir, tmp_path):
    import shutil

    from make_secrets import main

    folder = tmp_path / "secrets"
    shutil.copytree(secrets_dir, folder)
    before = (folder / "redis-password").read_text()
    assert main(["--dir", str(folder)]) == 0
    assert (folder / "redis-password").read_text() == before
    assert before in (folder / "celery-broker-url").read_text()
    assert main(["--dir", str(folder), "--rotate"]) == 0
    after = (folder / "redis-password").read_text()
    assert after != before and after in (folder / "celery-broker-url").read_text()


def test_each_service_holds_only_the_credentials_it_uses(compose, secrets_dir):
    """deploy_test.HOLDS, the least-privilege table that make deploy-test checks in the running
    containers, is also what the compose file mounts: checked here from the files' contents."""
    from deploy_test import HOLDS
    from make_secrets import RANDOM

    values = {name: (secrets_dir / name).read_text() for name in RANDOM}
    for service, allowed in HOLDS.items():
        files = [source for source, _ in _secret_files(compose["services"][service])]
        text = "".join((secrets_dir / Path(compose["secrets"][f]["file"]).name).read_text() for f in files)
        held = {name for name, value in values.items() if value in text}
        assert held == allowed, (
            f"{service}: holds {sorted(held - allowed)} it should not, lacks {sorted(allowed - held)}"
        )
    # the two facts the table stands for: only the MLflow server holds MLflow's admin; no service but the
    # databases' own holds their owners' passwords beyond what it must
    holders = {s for s, held in HOLDS.items() if "mlflow-admin-password" in held}
    assert holders == {"mlflow"}
    assert "postgres-password" not in HOLDS["worker"] and "fernet-key" not in HOLDS["worker"]


def test_ports_are_published_on_this_host_only_unless_asked(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert re.match(r"(127\.0\.0\.1|\$\{AIRFLOW_API_BIND:-127\.0\.0\.1\}):", str(port)), (
                f"{name}: {port}"
            )
    assert str(compose["services"]["api-server"]["ports"][0]).startswith("${AIRFLOW_API_BIND:-127.0.0.1}:")


def test_every_base_image_is_a_variable_with_the_official_name_as_default(compose):
    for name, service in compose["services"].items():
        if "image" in service and "build" not in service:
            assert re.fullmatch(r"\$\{\w+_IMAGE:-[^}]+\}", service["image"]), f"{name}: {service['image']}"
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11\n" in dockerfile
    assert "ARG PYTHON_BASE_IMAGE=python:3.11-slim\n" in dockerfile
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${AIRFLOW_BASE_IMAGE}", "${PYTHON_BASE_IMAGE}"]


def test_the_compose_mlflow_server_refuses_anonymous_clients_and_hides_its_secrets(
    compose, secrets_dir, tmp_path
):
    """The compose file's own MLflow command, entrypoint and environment, with the generator's files, on
    loopback (SQLite in place of PostgreSQL): anonymous requests get 401, its admin gets in, a client
    with its Host header gets no 403, and no secret is on any of its processes' command lines."""
    import subprocess
    import time

    import requests
    from support import free_port

    service = compose["services"]["mlflow"]
    work = tmp_path / "run-secrets"
    work.mkdir()
    auth = (secrets_dir / "mlflow-auth.ini").read_text()
    (work / "mlflow-auth.ini").write_text(
        re.sub(r"database_uri = .*", f"database_uri = sqlite:///{tmp_path / 'auth.db'}", auth)
    )
    server_env = (secrets_dir / "mlflow-server.env").read_text()
    (work / "mlflow-server.env").write_text(
        re.sub(
            r"MLFLOW_BACKEND_STORE_URI='[^']*'",
            f"MLFLOW_BACKEND_STORE_URI='sqlite:///{tmp_path / 'mlflow.db'}'",
            server_env,
        )
    )
    port = free_port()
    command = [str(c) for c in service["command"]]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command[command.index("--artifacts-destination") + 1] = (tmp_path / "artifacts").as_uri()
    command[0] = str(Path(sys.executable).with_name("mlflow"))
    entrypoint = [e.replace("/run/secrets", str(work)).replace("$$", "$") for e in service["entrypoint"]]
    env = {
        **os.environ,
        **{k: str(v).replace("/run/secrets", str(work)) for k, v in service["environment"].items()},
    }
    process = subprocess.Popen(
        [*entrypoint, *command], env=env, stdout=(tmp_path / "mlflow.log").open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search"
    admin = json.loads((secrets_dir / "mlflow-users.json").read_text())["admin"]
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
        assert requests.get(url, auth=(admin["username"], "wrong"), timeout=5).status_code == 401
        signed_in = (admin["username"], admin["password"])
        assert requests.get(url, auth=signed_in, timeout=5).status_code == 200
        # what a worker sends: MLflow 3 refused it with 403 "Invalid Host header" before
        as_worker = requests.get(url, auth=signed_in, headers={"Host": "mlflow:5000"}, timeout=5)
        assert as_worker.status_code == 200, as_worker.text
        pids = subprocess.run(
            ["pgrep", "-g", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert pids
        secret_values = [admin["password"], *re.findall(r"='([^']+)'", server_env)]
        for pid in pids:
            with contextlib.suppress(FileNotFoundError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                assert not [v for v in secret_values if v in cmdline]
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
