"""``make deploy-test``: Cormorant as teams deploy it, checked end to end, then torn down.

It builds the Airflow image and the trainer image, starts the compose stack (its own project, on free
ports of this host), and checks the product as a deployment: every service healthy; the API server and
MLflow's authentication; least privilege (what each service holds, what each user may do, where ports are
published); the nightly chain of the late-labels example over consecutive days, through the REST API with
the official client (ingest, validate, labels, train with trials on the Celery workers, predict, drift,
performance), its results in the S3 lake, on the MLflow server and in the Cormorant view; a Celery worker
killed mid-task; the scheduler killed mid-run; ``down`` and ``up`` keeping everything; a second run of the
same day changing nothing; the trainer image running the exact pod ``KubernetesTrialOperator`` would
send; and no credential in ``docker inspect``, on a command line or in a task log. Then ``down -v``, and
nothing of the stack is left. Each step prints its wall time; the run's figures are kept in
``docs/deployment-latest.json`` (docs/deployment.md cites them).

    python scripts/deploy_test.py [--keep] [--project NAME]

Needs a Docker engine with Compose v2. Images come from their registries; where one is unreachable, a
local stand-in of the same service is used if present (``../shared/tools/offline-images.sh`` builds
them), and the run says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cormorant.spec import STAGES

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(ROOT / "scripts"),
    str(ROOT / "scripts" / "compose"),
    str(ROOT / "plugins"),
    str(ROOT / "include"),
]

SPEC = "churn_late"
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
TRAIN_CONF = {"window_days": 2, "families": ["linear", "xgboost"], "max_trials_per_family": 1}
TRAINER_IMAGE = "cormorant-trainer:0.1.0-cpu"
WAIT_S = 420
# What each long-running service may hold (the random values behind every file it can read); the check
# compares this with what is mounted into each running container.
HOLDS = {
    "postgres": {"postgres-password"},
    "warehouse": {"warehouse-password"},
    "redis": {"redis-password"},
    "s3": {
        "s3-admin-key",
        "s3-admin-secret",
        "lake-writer-key",
        "lake-writer-secret",
        "lake-reader-key",
        "lake-reader-secret",
        "mlflow-artifacts-key",
        "mlflow-artifacts-secret",
    },
    "mlflow": {
        "mlflow-db-password",
        "mlflow-admin-password",
        "mlflow-flask-secret-key",
        "mlflow-artifacts-key",
        "mlflow-artifacts-secret",
    },
    "api-server": {
        "postgres-password",
        "fernet-key",
        "jwt-secret",
        "api-secret-key",
        "airflow-admin-password",
        "lake-reader-key",
        "lake-reader-secret",
        "mlflow-viewer-password",
    },
    "scheduler": {"postgres-password", "redis-password", "jwt-secret"},
    "dag-processor": {"postgres-password"},
    "triggerer": {"postgres-password", "fernet-key"},
    "worker": {
        "redis-password",
        "api-secret-key",
        "warehouse-reader-password",
        "lake-writer-key",
        "lake-writer-secret",
        "mlflow-client-password",
    },
}
# what offline-images.sh builds, for an image that cannot be pulled (it tags only plain `image:` names)
STAND_INS = {
    "S3_IMAGE": "local/s3:standin",
    "POSTGRES_IMAGE": "local/postgres:15",
    "REDIS_IMAGE": "local/redis:7.0",
}


class DeployTestFailed(AssertionError):
    pass


def check(condition: Any, message: str) -> None:
    if not condition:
        raise DeployTestFailed(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(
    *command: str, env: dict[str, str] | None = None, check_rc: bool = True, timeout: float = 1800, **kw: Any
):
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if check_rc and done.returncode != 0:
        raise DeployTestFailed(
            f"{' '.join(command[:6])} ... exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done


class Timeline:
    """The steps' wall times, printed as they end and kept for the docs."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}
        self.began = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"▶ {name}", flush=True)
        started = time.monotonic()
        outcome = "ok"
        try:
            yield
        except BaseException:
            outcome = "FAILED"
            raise
        finally:
            seconds = time.monotonic() - started
            self.steps.append({"step": name, "seconds": round(seconds, 1), "outcome": outcome})
            print(f"  {outcome} in {seconds:.1f} s", flush=True)

    def table(self) -> str:
        width = max(len(s["step"]) for s in self.steps)
        lines = [f"{s['step']:<{width}}  {s['seconds']:>7.1f} s  {s['outcome']}" for s in self.steps]
        total = time.monotonic() - self.began
        return "\n".join([*lines, f"{'the whole deploy test':<{width}}  {total:>7.1f} s"])


class Stack:
    """The compose project under test: its commands, its containers, its secrets and REST clients."""

    def __init__(self, project: str, env: dict[str, str], secrets_dir: Path):
        self.project, self.env, self.secrets_dir = project, env, secrets_dir
        self.url = f"http://127.0.0.1:{env['AIRFLOW_API_PORT']}"
        self.mlflow = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
        self.s3 = f"http://127.0.0.1:{env['S3_PORT']}"

    def compose(self, *args: str, timeout: float = 1800, check_rc: bool = True):
        return run(
            "docker", "compose", "-p", self.project, *args, env=self.env, timeout=timeout, check_rc=check_rc
        )

    def secret(self, name: str) -> str:
        return (self.secrets_dir / name).read_text().strip()

    def containers(self, service: str | None = None, *, all_states: bool = False) -> list[dict[str, Any]]:
        args = ["ps", "--format", "json", *(["-a"] if all_states else []), *([service] if service else [])]
        out = self.compose(*args).stdout.strip()
        rows = [json.loads(line) for line in out.splitlines() if line.strip()] if out else []
        return rows[0] if rows and isinstance(rows[0], list) else rows

    def exec(self, container: str, script: str) -> str:
        return run("docker", "exec", container, "sh", "-c", script, env=self.env).stdout

    def token(self, fresh: bool = False) -> str:
        from cormorant_trigger import get_token

        if fresh or not getattr(self, "_token", None):
            self._token = get_token(self.url, "admin", self.secret("airflow-admin-password"))
        return self._token

    def api(self) -> Any:
        from cormorant_trigger import client

        return client(self.url, self.token())

    def rest(self, method: str, path: str, **kw: Any) -> Any:
        import requests

        for fresh in (False, True):  # a token from before a restart of the stack is refused once
            response = requests.request(
                method,
                f"{self.url}{path}",
                headers={"Authorization": f"Bearer {self.token(fresh)}"},
                timeout=60,
                **kw,
            )
            if response.status_code != 401:
                break
        response.raise_for_status()
        return response.json() if response.content else None

    def s3_client(self, key_name: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3,
            aws_access_key_id=self.secret(f"{key_name}-key"),
            aws_secret_access_key=self.secret(f"{key_name}-secret"),
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def mlflow_auth(self, who: str = "client") -> tuple[str, str]:
        users = json.loads(self.secret("mlflow-users.json"))
        if who == "admin":
            return users["admin"]["username"], users["admin"]["password"]
        name = next(u for u in users["users"] if (who == "viewer") == u.endswith("viewer"))
        return name, users["users"][name]


# -- the lake and MLflow, read from this host --------------------------------------------------------------
def manifests(stack: Stack) -> dict[str, str]:
    """Every committed partition of the spec (``dataset/ds=D``) and its content hash."""
    client = stack.s3_client("lake-reader")
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=f"cormorant/{SPEC}/"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/_manifest.json"):
                body = json.loads(client.get_object(Bucket="lake", Key=obj["Key"])["Body"].read())
                found[obj["Key"].removeprefix("cormorant/").removesuffix("/_manifest.json")] = body[
                    "content_hash"
                ]
    return found


def lake_json(stack: Stack, key: str) -> Any | None:
    client = stack.s3_client("lake-reader")
    try:
        return json.loads(client.get_object(Bucket="lake", Key=f"cormorant/{key}")["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def model_versions(stack: Stack) -> list[dict[str, Any]]:
    import requests

    response = requests.get(
        f"{stack.mlflow}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='cormorant.{SPEC}'"},
        auth=stack.mlflow_auth(),
        timeout=30,
    )
    response.raise_for_status()
    return sorted(response.json().get("model_versions", []), key=lambda v: int(v["version"]))


def champion(stack: Stack) -> str | None:
    import requests

    response = requests.get(
        f"{stack.mlflow}/api/2.0/mlflow/registered-models/alias",
        params={"name": f"cormorant.{SPEC}", "alias": "champion"},
        auth=stack.mlflow_auth(),
        timeout=30,
    )
    return response.json()["model_version"]["version"] if response.ok else None


def eventually(what: str, probe: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = probe()
        except Exception as e:  # a service restarting answers errors for a while
            found, last = None, e
        else:
            last = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise DeployTestFailed(
                f"{what}: not within {timeout_s:.0f} s" + (f" (last error: {last})" if last else "")
            )
        time.sleep(2)


# -- Airflow over REST, with the official client ------------------------------------------------------------
def trigger_and_wait(stack: Stack, stage: str, conf: dict[str, Any], timeout_s: float = WAIT_S) -> str:
    from cormorant_trigger import trigger, wait

    dag_id = f"{SPEC}__{stage}"
    with stack.api() as api:
        run_id = trigger(api, dag_id, conf).dag_run_id
        state = wait(api, dag_id, run_id, timeout_s)
    check(state == "success", f"{dag_id} {conf} ended {state}: {failed_tasks(stack, dag_id, run_id)}")
    return run_id


def failed_tasks(stack: Stack, dag_id: str, run_id: str) -> list[str]:
    tis = stack.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return [
        f"{t['task_id']}[{t['map_index']}] {t['state']}"
        for t in tis
        if t["state"] not in ("success", "skipped")
    ]


def unpause_and_quiet_the_nightly_runs(stack: Stack) -> None:
    """Unpausing starts each DAG's nightly run of today's calendar (days this warehouse has no rows
    for): mark those failed, as an operator would, so that they hold no slot of the runs under test."""
    for stage in STAGES:
        stack.rest("PATCH", f"/api/v2/dags/{SPEC}__{stage}", json={"is_paused": False})
    time.sleep(8)
    for stage in STAGES:
        dag_id = f"{SPEC}__{stage}"
        runs = stack.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"run_type": "scheduled"})[
            "dag_runs"
        ]
        for r in runs:
            if r["state"] not in ("success", "failed"):
                stack.rest(
                    "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{r['dag_run_id']}", json={"state": "failed"}
                )


def quiet(stack: Stack) -> bool:
    """No run of the spec queued or running (the asset-triggered ones included)."""
    for stage in STAGES:
        for state in ("queued", "running"):
            runs = stack.rest("GET", f"/api/v2/dags/{SPEC}__{stage}/dagRuns", params={"state": state})
            if runs["total_entries"]:
                return False
    return True


def all_runs(stack: Stack) -> dict[str, str]:
    found = {}
    for stage in STAGES:
        dag_id = f"{SPEC}__{stage}"
        for r in stack.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]:
            found[f"{dag_id}/{r['dag_run_id']}"] = r["state"]
    return found


# -- the steps -------------------------------------------------------------------------------------------
def preflight(env: dict[str, str]) -> list[str]:
    """The engine, Compose v2, and each image (pulled where missing; a local stand-in where no registry
    answers). Returns notes on what was substituted."""
    if shutil.which("docker") is None:
        raise SystemExit("deploy-test: no docker command here; install Docker (with Compose v2) to run it")
    info = run("docker", "info", "--format", "{{.ServerVersion}}", check_rc=False)
    if info.returncode != 0:
        raise SystemExit(
            "deploy-test: no Docker engine answers (docker info: "
            f"{(info.stderr or info.stdout).strip().splitlines()[-1:]}); start one (dockerd), or on a "
            "machine without a registry run ../shared/tools/offline-images.sh as root first"
        )
    if run("docker", "compose", "version", check_rc=False).returncode != 0:
        raise SystemExit(
            "deploy-test: the Docker Compose v2 plugin is missing (docker compose version failed)"
        )
    notes = []
    for variable, default in (
        ("AIRFLOW_BASE_IMAGE", "apache/airflow:3.3.2-python3.11"),
        ("PYTHON_BASE_IMAGE", "python:3.11-slim"),
        ("POSTGRES_IMAGE", "postgres:16"),
        ("REDIS_IMAGE", "redis:7.2"),
        ("S3_IMAGE", "chrislusf/seaweedfs:4.48"),
    ):
        image = env.setdefault(variable, default)
        if run("docker", "image", "inspect", image, check_rc=False).returncode == 0:
            continue
        if run("docker", "pull", image, check_rc=False, timeout=900).returncode == 0:
            continue
        stand_in = STAND_INS.get(variable)
        if stand_in and run("docker", "image", "inspect", stand_in, check_rc=False).returncode == 0:
            env[variable] = stand_in
            notes.append(f"{variable}: {image} cannot be pulled here; using the local stand-in {stand_in}")
            continue
        raise SystemExit(
            f"deploy-test: {image} ({variable}) is not here and cannot be pulled; set {variable}"
        )
    url = env.get("TORCH_CPU_INDEX_URL")
    if url:
        try:
            urllib.request.urlopen(url, timeout=5).close()
        except OSError:
            env["TORCH_CPU_INDEX_URL"] = ""
            notes.append(
                f"TORCH_CPU_INDEX_URL: {url} does not answer; torch's CPU build from pip's own indexes"
            )
    return notes


def _pip_cache_warm() -> bool:
    """Whether BuildKit already holds the Dockerfile's pip cache mount with something in it (it does after
    a first build on this engine; a fresh engine has none)."""
    found = run("docker", "builder", "du", "--verbose", check_rc=False).stdout
    for entry in found.split("\n\n"):
        if "exec.cachemount" in entry and ".cache/pip" in entry:
            size = re.search(r"^Size:\s+(\S+)", entry, re.M)
            if size and size.group(1) not in ("0B", "0"):
                return True
    return False


def build(stack: Stack, timeline: Timeline, cached: bool) -> None:
    """Both images; every layer built again unless ``cached``. pip's cache, a BuildKit cache mount, is
    kept between builds: warm, this is the build after a requirements change on a machine that has built
    before; cold (a fresh engine), every wheel is downloaded. The run records which it was."""
    again = [] if cached else ["--no-cache"]
    pip_cache = "warm" if _pip_cache_warm() else "cold"
    label = "" if cached else f" (every layer; pip's cache {pip_cache})"
    with timeline.step("build the Airflow image" + label):
        started = time.monotonic()
        stack.compose("build", *again, "api-server")
        timeline.figures["airflow_image_build_s"] = round(time.monotonic() - started, 1)
    with timeline.step("build the trainer image (CPU torch)"):
        started = time.monotonic()
        run(
            "docker", "build", *again, "--target", "trainer", "-t", TRAINER_IMAGE,
            "--build-arg", f"PYTHON_BASE_IMAGE={stack.env['PYTHON_BASE_IMAGE']}",
            "--build-arg", "TORCH_VARIANT=cpu",
            "--build-arg", f"TORCH_CPU_INDEX_URL={stack.env.get('TORCH_CPU_INDEX_URL', '')}",
            str(ROOT), env=stack.env,
        )  # fmt: skip
        timeline.figures["trainer_image_build_s"] = round(time.monotonic() - started, 1)
    timeline.figures["builds"] = "cached layers" if cached else f"every layer, pip's cache {pip_cache}"
    sizes = {}
    for name, image in (("airflow", stack.env["CORMORANT_IMAGE"]), ("trainer_cpu", TRAINER_IMAGE)):
        size = int(run("docker", "image", "inspect", "-f", "{{.Size}}", image).stdout.strip())
        sizes[name] = round(size / 1e9, 2)
    timeline.figures["image_sizes_gb"] = sizes
    print(f"  image sizes: {sizes} GB")


def up(stack: Stack, timeline: Timeline, name: str, key: str) -> None:
    with timeline.step(name):
        started = time.monotonic()
        done = stack.compose("up", "-d", "--wait", "--wait-timeout", "600", check_rc=False, timeout=900)
        if done.returncode != 0:
            rows = stack.containers(all_states=True)
            broken = [r["Service"] for r in rows if r["State"] == "exited" and r.get("ExitCode")]
            broken += [r["Service"] for r in rows if "unhealthy" in r["Status"]]
            logs = "".join(stack.compose("logs", "--no-color", "--tail", "40", s).stdout for s in broken)
            raise DeployTestFailed(f"compose up failed: {done.stderr.strip().splitlines()[-1:]}\n{logs}")
        timeline.figures[key] = round(time.monotonic() - started, 1)
        for row in stack.containers(all_states=True):
            if row["State"] == "exited":
                check(row.get("ExitCode") == 0, f"{row['Service']} exited with {row.get('ExitCode')}")
            else:
                check("healthy" in row["Status"], f"{row['Service']} is not healthy: {row['Status']}")
        services = {row["Service"] for row in stack.containers()}
        check(set(HOLDS) <= services, f"services not running: {sorted(set(HOLDS) - services)}")
        check(len(stack.containers("worker")) == 2, "two Celery workers")


def the_front_doors(stack: Stack) -> None:
    import requests

    version = requests.get(f"{stack.url}/api/v2/version", timeout=30).json()
    check(version.get("version", "").startswith("3."), f"/api/v2/version: {version}")
    check(requests.get(f"{stack.url}/api/v2/dags", timeout=30).status_code == 401, "REST without a token")
    models = f"{stack.mlflow}/api/2.0/mlflow/registered-models/search"
    check(requests.get(models, timeout=30).status_code == 401, "MLflow answers an unauthenticated call")
    check(
        requests.get(models, auth=stack.mlflow_auth(), timeout=30).status_code == 200,
        "MLflow's configured user",
    )
    user, _ = stack.mlflow_auth()
    check(
        requests.get(models, auth=(user, "wrong"), timeout=30).status_code == 401, "MLflow, a wrong password"
    )


def least_privilege(stack: Stack, random_values: dict[str, str]) -> None:
    import requests

    # what each service holds: the random values behind every file it can read
    for service, allowed in HOLDS.items():
        for row in stack.containers(service):
            readable = stack.exec(
                row["Name"], "cat /run/secrets/* $HOME/.mlflow/credentials 2>/dev/null || true"
            )
            held = {name for name, value in random_values.items() if value in readable}
            check(held == allowed, f"{service} holds {sorted(held)}; it should hold {sorted(allowed)}")
    # the lake's users stay in the lake bucket, the reader reads only
    from botocore.exceptions import ClientError

    def refused(call: Callable[[], Any]) -> bool:
        try:
            call()
        except ClientError as e:
            return e.response["Error"]["Code"] in ("AccessDenied", "403")
        return False

    writer, reader = stack.s3_client("lake-writer"), stack.s3_client("lake-reader")
    writer.put_object(Bucket="lake", Key="_deploy_test/probe", Body=b"x")
    check(refused(lambda: writer.list_objects_v2(Bucket="mlflow")), "the lake writer reads MLflow's bucket")
    check(
        refused(lambda: writer.put_object(Bucket="mlflow", Key="x", Body=b"x")),
        "the lake writer writes MLflow's",
    )
    check(refused(lambda: writer.create_bucket(Bucket="another")), "the lake writer creates buckets")
    check(
        reader.get_object(Bucket="lake", Key="_deploy_test/probe")["Body"].read() == b"x", "the reader reads"
    )
    check(refused(lambda: reader.put_object(Bucket="lake", Key="x", Body=b"x")), "the lake reader writes")
    check(
        refused(lambda: reader.delete_object(Bucket="lake", Key="_deploy_test/probe")),
        "the lake reader deletes",
    )
    writer.delete_object(Bucket="lake", Key="_deploy_test/probe")
    # the workers' warehouse user reads and writes nothing
    worker = stack.containers("worker")[0]["Name"]
    probe = """
import json, psycopg2
c = json.load(open('/run/secrets/connections.json'))['cormorant_warehouse']
db = psycopg2.connect(host=c['host'], dbname=c['schema'], user=c['login'], password=c['password'])
cur = db.cursor()
cur.execute('SELECT count(*) FROM customer_activity')
print('rows', cur.fetchone()[0])
try:
    cur.execute('CREATE TABLE intruder (x int)')
    print('created')
except psycopg2.Error as e:
    print('refused', e.pgcode)
"""
    out = run("docker", "exec", worker, "python", "-c", probe).stdout
    check("rows" in out and "refused 42501" in out, f"the warehouse reader: {out}")
    # MLflow: the workers' user is no admin; the API server's reads and cannot write
    user, password = stack.mlflow_auth()
    me = requests.get(
        f"{stack.mlflow}/api/2.0/mlflow/users/get",
        params={"username": user},
        auth=(user, password),
        timeout=30,
    )
    check(me.ok and me.json()["user"]["is_admin"] is False, f"the workers' MLflow user: {me.text}")
    # Redis needs its password
    redis = stack.containers("redis")[0]["Name"]
    check(
        "NOAUTH" in run("docker", "exec", redis, "redis-cli", "ping").stdout,
        "Redis answers without a password",
    )
    # published on this host only
    for service in ("api-server", "mlflow", "s3"):
        for row in stack.containers(service):
            for port in row.get("Publishers") or []:
                if port.get("PublishedPort"):
                    check(port["URL"] in ("127.0.0.1", ""), f"{service} is published on {port['URL']}")


def mlflow_permissions(stack: Stack) -> None:
    """The API server's MLflow user reads Cormorant's model and runs, and can change neither: it cannot
    move the champion alias nor log to the spec's experiment (what the workers' user does)."""
    import requests

    viewer, api = stack.mlflow_auth("viewer"), f"{stack.mlflow}/api/2.0/mlflow"
    model = f"cormorant.{SPEC}"
    got = requests.get(f"{api}/registered-models/get", params={"name": model}, auth=viewer, timeout=30)
    check(got.ok, f"the API server's MLflow user cannot read {model}: {got.status_code}")
    alias = {"name": model, "alias": "champion", "version": "1"}
    moved = requests.post(f"{api}/registered-models/alias", json=alias, auth=viewer, timeout=30)
    check(
        moved.status_code == 403,
        f"the API server's MLflow user moved the champion alias: {moved.status_code}",
    )
    experiment = requests.get(
        f"{api}/experiments/get-by-name",
        params={"experiment_name": f"cormorant/{SPEC}"},
        auth=viewer,
        timeout=30,
    ).json()["experiment"]["experiment_id"]
    logged = requests.post(f"{api}/runs/create", json={"experiment_id": experiment}, auth=viewer, timeout=30)
    check(
        logged.status_code == 403,
        f"the API server's MLflow user logged a run to Cormorant's: {logged.status_code}",
    )


def no_credential_anywhere(stack: Stack, random_values: dict[str, str], work: Path) -> dict[str, int]:
    """No secret value in any container's ``docker inspect``, in any process's command line in any
    container, in the services' logs, or in any task log. Returns how much was scanned."""
    values = {name: v for name, v in random_values.items() if len(v) >= 12}

    def leaks(text: str) -> list[str]:
        return sorted(name for name, v in values.items() if v in text)

    scanned = {"containers": 0, "processes": 0, "task_logs": 0}
    for row in stack.containers(all_states=True):
        inspect = run("docker", "inspect", row["ID"]).stdout
        check(not leaks(inspect), f"docker inspect {row['Service']} shows {leaks(inspect)}")
        scanned["containers"] += 1
        if row["State"] == "running":
            lines = stack.exec(
                row["Name"], 'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; echo; done'
            )
            check(not leaks(lines), f"a command line in {row['Service']} shows {leaks(lines)}")
            scanned["processes"] += len([line for line in lines.splitlines() if line.strip()])
    logs = stack.compose("logs", "--no-color").stdout
    check(not leaks(logs), f"the services' logs show {leaks(logs)}")
    folder = work / "task-logs"
    api = stack.containers("api-server")[0]["Name"]
    run("docker", "cp", f"{api}:/opt/airflow/logs", str(folder))
    for path in folder.rglob("*.log"):
        text = path.read_text(errors="replace")
        check(not leaks(text), f"the task log {path.relative_to(folder)} shows {leaks(text)}")
        scanned["task_logs"] += 1
    check(scanned["task_logs"] > 20, f"only {scanned['task_logs']} task logs were found")
    return scanned


def nightly_chain(stack: Stack, timeline: Timeline) -> dict[str, Any]:
    d1, d2, d3, d4 = DAYS
    with timeline.step(f"ingest and validate {d1}..{d3}"):
        unpause_and_quiet_the_nightly_runs(stack)
        for day in (d1, d2, d3):
            trigger_and_wait(stack, "ingest", {"partition_date": day})
        for day in (d1, d2, d3):  # validation follows each landed partition (an Asset)
            report = eventually(
                f"validation of {day}",
                lambda day=day: lake_json(stack, f"{SPEC}/reports/validation/ds={day}/result.json"),
            )
            check(report["success"], f"validation of {day} failed: {report}")
    with timeline.step(f"labels of {d1} and {d2}"):
        for day in (d1, d2):
            trigger_and_wait(stack, "labels", {"partition_date": day})
    with timeline.step(f"train on {d1}..{d2}, a Celery worker killed mid-trial"):
        killed = train_with_a_worker_killed(stack)
    with timeline.step(f"predict, drift, labels and performance of {d3}"):
        trigger_and_wait(stack, "predict", {"partition_date": d3})
        eventually(
            f"the drift report of {d3}", lambda: lake_json(stack, f"{SPEC}/reports/drift/ds={d3}/report.json")
        )
        trigger_and_wait(stack, "labels", {"partition_date": d3})
        performance = eventually(
            f"the performance report of {d3}",
            lambda: lake_json(stack, f"{SPEC}/reports/performance/ds={d3}/report.json"),
        )
        check(champion(stack) in json.dumps(performance), f"the performance of {d3} names no scoring version")
    with timeline.step(f"the chain of {d4}, the scheduler killed mid-run"):
        recovery = chain_with_the_scheduler_killed(stack, d4)
    eventually("the runs to finish", lambda: quiet(stack))
    return {"worker_kill": killed, "scheduler_kill": recovery}


def train_with_a_worker_killed(stack: Stack) -> dict[str, Any]:
    from cormorant_trigger import trigger, wait

    dag_id = f"{SPEC}__train"
    before = len(model_versions(stack))
    with stack.api() as api:
        run_id = trigger(api, dag_id, {"partition_date": DAYS[1], **TRAIN_CONF}).dag_run_id
    tis = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"

    def a_running_trial() -> dict[str, Any] | None:
        return next(
            (
                t
                for t in stack.rest("GET", tis)["task_instances"]
                if t["task_id"] == "trial" and t["state"] == "running" and t["hostname"]
            ),
            None,
        )

    trial = eventually("a trial running", a_running_trial)
    workers = {
        run("docker", "inspect", "-f", "{{.Config.Hostname}}", w["ID"]).stdout.strip(): w["ID"]
        for w in stack.containers("worker")
    }
    check(trial["hostname"] in workers, f"trial on {trial['hostname']}, workers {sorted(workers)}")
    victim = workers[trial["hostname"]]
    run("docker", "kill", victim)
    killed_at = time.monotonic()
    print(f"  killed worker {trial['hostname']} while it ran trial[{trial['map_index']}]", flush=True)
    with stack.api() as api:
        state = wait(api, dag_id, run_id, WAIT_S)
    recovered_s = time.monotonic() - killed_at
    check(state == "success", f"the train run after the kill: {state} {failed_tasks(stack, dag_id, run_id)}")
    final = next(
        t
        for t in stack.rest("GET", tis)["task_instances"]
        if t["task_id"] == "trial" and t["map_index"] == trial["map_index"]
    )
    check(final["try_number"] >= 2, f"the killed trial was not retried: {final}")
    check(final["hostname"] != trial["hostname"], f"the killed trial's retry ran on {final['hostname']}")
    versions = model_versions(stack)
    check(len(versions) == before + 1, f"one new model version, found {len(versions) - before}")
    check(champion(stack) == versions[-1]["version"], "the champion alias is the new version")
    run("docker", "start", victim)
    eventually(
        "the killed worker healthy again",
        lambda: "healthy" in run("docker", "inspect", "-f", "{{.State.Health.Status}}", victim).stdout,
    )
    return {
        "trial": trial["map_index"],
        "retried_on": final["hostname"],
        "seconds_to_success": round(recovered_s, 1),
        "run_id": run_id,
    }


def chain_with_the_scheduler_killed(stack: Stack, day: str) -> dict[str, Any]:
    """The day's chain (ingest, then validate, predict, drift through their assets) with the scheduler
    killed the moment one of its tasks is running on a worker, and started again 5 s later, as an
    orchestrator restarts a crashed container: that task ends in success and the chain finishes."""
    from cormorant_trigger import trigger, wait

    dag_id = f"{SPEC}__ingest"
    with stack.api() as api:
        run_id = trigger(api, dag_id, {"partition_date": day}).dag_run_id
    scheduler = stack.containers("scheduler")[0]["ID"]
    drift_report = f"{SPEC}/reports/drift/ds={day}/report.json"
    deadline, victim = time.monotonic() + 240, None
    while victim is None:  # a task runs for a second or a few: look often, kill at once
        running = stack.rest("GET", "/api/v2/dags/~/dagRuns/~/taskInstances?state=running")
        victim = next((t for t in running["task_instances"] if t["dag_id"].startswith(f"{SPEC}__")), None)
        if victim is None:
            check(not lake_json(stack, drift_report), f"no task of the {day} chain was seen running")
            check(time.monotonic() < deadline, f"no task of the {day} chain ran within 240 s")
            time.sleep(0.1)
    run("docker", "kill", scheduler)
    killed_at = time.monotonic()
    task = f"{victim['dag_id']}.{victim['task_id']}"
    print(f"  killed the scheduler while {task} ran (try {victim['try_number']})", flush=True)
    time.sleep(5)
    run("docker", "start", scheduler)
    with stack.api() as api:
        state = wait(api, dag_id, run_id, WAIT_S)
    check(state == "success", f"the ingest run after the scheduler's kill: {state}")
    eventually(f"the drift report of {day}", lambda: lake_json(stack, drift_report))
    recovered_s = time.monotonic() - killed_at
    ti = stack.rest(
        "GET",
        f"/api/v2/dags/{victim['dag_id']}/dagRuns/{victim['dag_run_id']}/taskInstances/{victim['task_id']}",
    )
    check(ti["state"] == "success", f"{task}, running when the scheduler was killed, ended {ti['state']}")
    check(recovered_s < 240, f"the chain took {recovered_s:.0f} s after the scheduler's kill")
    return {
        "task_running_when_killed": task,
        "its_tries": ti["try_number"],
        "seconds_to_drift_report": round(recovered_s, 1),
    }


def the_view(stack: Stack) -> None:
    found = stack.rest("GET", "/cormorant/api/use-cases")
    case = next((c for c in found["use_cases"] if c["name"] == SPEC), None)
    check(case is not None, f"the view lists no {SPEC}: {found}")
    check(case["champion"] and case["champion"]["version"] == champion(stack), f"the view's champion: {case}")
    check(
        case["latest"]["scored"] == DAYS[3] and case["latest"]["checked"] == DAYS[3],
        f"the view: {case['latest']}",
    )
    page = stack.rest("GET", f"/cormorant/api/use-cases/{SPEC}")
    check(page["leaderboard"]["trials"], "the view's leaderboard is empty")


def snapshot(stack: Stack) -> dict[str, Any]:
    return {
        "partitions": manifests(stack),
        "runs": all_runs(stack),
        "versions": [v["version"] for v in model_versions(stack)],
    }


def trainer_runs_the_pod(stack: Stack, work: Path, train_run: str) -> dict[str, Any]:
    """The linear trial of the train run, as its pod: rendered by the provider, run by docker in the
    trainer image against the stack's MLflow server and lake; its result equals the local backend's."""
    import requests
    from cormorant_trigger import results
    from pod_to_docker import docker_run

    from cormorant.config import KubernetesSettings
    from cormorant_provider.operators.kubernetes_trial import KubernetesTrialOperator

    with stack.api() as api:
        outputs = results(api, f"{SPEC}__train", train_run)
    trials = outputs["plan_sweep"]
    index = next(i for i, t in enumerate(trials) if t["family"] == "linear")
    trial, local = trials[index], outputs[f"trial[{index}]"]
    settings = KubernetesSettings.from_env(
        {"CORMORANT_TRAINER_IMAGE": TRAINER_IMAGE, "CORMORANT_K8S_SPECS_CONFIGMAP": "cormorant-specs"}
    )
    operator = KubernetesTrialOperator(task_id="trial", spec_name=SPEC, trial=trial, settings=settings)
    operator.shape_for_trial()
    pod = operator.build_pod_request_obj(dry_run=True)
    xcom = work / "xcom"
    xcom.mkdir()
    xcom.chmod(0o777)  # the pod's user writes its result there
    user, password = stack.mlflow_auth()
    secrets = {
        settings.mlflow_secret: {
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password,
        },
        settings.storage_secret: {
            "CORMORANT_LAKE_URI": "s3://lake/cormorant",
            "AWS_ACCESS_KEY_ID": stack.secret("lake-writer-key"),
            "AWS_SECRET_ACCESS_KEY": stack.secret("lake-writer-secret"),
            "AWS_ENDPOINT_URL": "http://s3:9000",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    }
    args, env = docker_run(
        pod,
        secrets=secrets,
        folders={"xcom": str(xcom), "specs": stack.env["CORMORANT_SPECS"]},
        network=f"{stack.project}_default",
        name=f"{stack.project}-trial-pod",
    )
    done = run("docker", *args, env={**os.environ, **env}, check_rc=False, timeout=900)
    check(done.returncode == 0, f"the trial pod exited {done.returncode}:\n{done.stderr[-4000:]}")
    result = json.loads((xcom / "return.json").read_text())
    check(result["status"] == "ok", f"the pod's trial: {result}")
    for key in ("cv_mean", "cv_std", "holdout_metric", "onnx_parity"):
        check(
            abs(result[key] - local[key]) <= 1e-6,
            f"{key}: the pod {result[key]}, the local backend {local[key]}",
        )
    check(
        all(abs(a - b) <= 1e-6 for a, b in zip(result["cv_folds"], local["cv_folds"], strict=True)),
        "the CV folds differ",
    )
    got = requests.get(
        f"{stack.mlflow}/api/2.0/mlflow/runs/get",
        params={"run_id": result["run_id"]},
        auth=(user, password),
        timeout=30,
    )
    check(got.ok, f"the pod's MLflow run {result['run_id']} is not on the server: {got.status_code}")
    tags = {t["key"]: t["value"] for t in got.json()["run"]["data"].get("tags", [])}
    check(tags.get("mlflow.parentRunId") == trial["parent_run_id"], "the pod's run is a child of the sweep")
    return {
        "trial": trial["trial_id"],
        "local_run": local["run_id"],
        "pod_run": result["run_id"],
        "cv_mean": result["cv_mean"],
    }


def at_rest(stack: Stack, seconds: int = 60) -> dict[str, Any]:
    """The stack's CPU and memory with nothing running: ``docker stats`` sampled over ``seconds``."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out = run(
            "docker", "stats", "--no-stream", "--format", "{{json .}}", *[r["ID"] for r in stack.containers()]
        ).stdout
        cpu = mem = 0.0
        for line in out.splitlines():
            row = json.loads(line)
            cpu += float(row["CPUPerc"].rstrip("%")) / 100
            used = row["MemUsage"].split("/")[0].strip()
            number, unit = float(used[:-3]), used[-3:]
            mem += number * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}.get(unit, 1)
        samples.append((cpu, mem))
    cpu = sum(s[0] for s in samples) / len(samples)
    mem = max(s[1] for s in samples)
    return {"cores": round(cpu, 3), "memory_gb": round(mem / 2**30, 2), "samples": len(samples)}


def nothing_left(stack: Stack) -> None:
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ("container", "volume", "network"):
        args = ["ps", "-a", "-q"] if kind == "container" else ["ls", "-q"]
        left = run("docker", kind, *args, "--filter", label).stdout.split()
        check(not left, f"down -v left {kind}s behind: {left}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="cormorant-deploytest", help="the compose project's name")
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    parser.add_argument(
        "--cached", action="store_true", help="build from cached layers (quicker; no figures)"
    )
    parser.add_argument("--record", type=Path, default=ROOT / "docs" / "deployment-latest.json")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="cormorant-deploytest-"))
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))  # the pod is rendered here, by the provider
    specs = work / "specs"
    specs.mkdir()
    for path in (ROOT / "include" / "specs" / "churn.yaml", ROOT / "include" / "examples" / f"{SPEC}.yaml"):
        shutil.copy(path, specs / path.name)
    specs.chmod(0o755)
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": args.project,
        "AIRFLOW_API_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "S3_PORT": str(free_port()),
        "CORMORANT_SPECS": str(specs),
        "CORMORANT_IMAGE": f"cormorant:0.1.0-{args.project}",
        "TORCH_VARIANT": "cpu",  # no GPU is needed here; CUDA's wheels are gigabytes
        "TORCH_CPU_INDEX_URL": os.environ.get("TORCH_CPU_INDEX_URL", "https://download.pytorch.org/whl/cpu"),
        "CORMORANT_TRIAL_RETRY_DELAY_S": "10",
    }
    timeline = Timeline()
    with timeline.step("preflight: engine, Compose, images"):
        for note in preflight(env):
            print(f"  note: {note}")
    with timeline.step("secrets"):
        run(sys.executable, str(ROOT / "scripts" / "compose" / "make_secrets.py"))
    from make_secrets import RANDOM

    stack = Stack(args.project, env, ROOT / "secrets")
    random_values = {name: stack.secret(name) for name in RANDOM}
    failed = None
    try:
        build(stack, timeline, args.cached)
        up(stack, timeline, "up: every service healthy", "up_to_healthy_s")
        with timeline.step("the API server and MLflow's authentication"):
            the_front_doors(stack)
        with timeline.step("least privilege"):
            least_privilege(stack, random_values)
        chain = nightly_chain(stack, timeline)
        timeline.figures.update(chain)
        with timeline.step("the Cormorant view shows the use case; MLflow's users stay in their lanes"):
            the_view(stack)
            mlflow_permissions(stack)
        with timeline.step("the stack at rest (docker stats, 60 s)"):
            timeline.figures["at_rest"] = at_rest(stack)
            print(f"  at rest: {timeline.figures['at_rest']}")
        before = snapshot(stack)
        with timeline.step("down"):
            stack.compose("down", timeout=600)
        up(stack, timeline, "up again", "up_again_s")
        with timeline.step("every partition, run and model version is still there"):
            after = eventually(
                "the state after up", lambda: snapshot(stack) if snapshot(stack) == before else None, 120
            )
            check(after == before, "state changed across down and up")
        with timeline.step(f"a second nightly run of {DAYS[3]} changes nothing"):
            trigger_and_wait(stack, "ingest", {"partition_date": DAYS[3]})
            time.sleep(10)
            eventually("the runs to finish", lambda: quiet(stack))
            again = snapshot(stack)
            check(again["partitions"] == before["partitions"], "a partition's content changed")
            check(again["versions"] == before["versions"], "a model version was added")
        with timeline.step("the trainer image runs the exact trial pod"):
            timeline.figures["trainer_pod"] = trainer_runs_the_pod(
                stack, work, chain["worker_kill"]["run_id"]
            )
        with timeline.step("no credential in docker inspect, command lines or logs"):
            timeline.figures["scanned"] = no_credential_anywhere(stack, random_values, work)
    except (DeployTestFailed, subprocess.TimeoutExpired) as e:
        failed = e
        print(f"\nFAILED: {e}", file=sys.stderr)
        with contextlib.suppress(Exception):
            print(stack.compose("ps", "-a").stdout, file=sys.stderr)
    finally:
        if not args.keep:
            with timeline.step("down -v: nothing is left"):
                stack.compose("down", "-v", "--remove-orphans", timeout=600)
                nothing_left(stack)  # the images stay: the next build starts from them
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + timeline.table())
    if failed is None and not args.cached:
        record = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} CPUs",
            "steps": timeline.steps,
            "total_s": round(time.monotonic() - timeline.began, 1),
            **timeline.figures,
        }
        args.record.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nkept in {args.record}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
