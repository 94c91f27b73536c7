"""Cormorant against MLflow as users run it: ``mlflow server`` with its basic-auth app, a PostgreSQL
backend store and the artifact store on S3 (moto's server), reached over HTTP with credentials. Trials
log to it, registration blesses the artifact it downloads back from the registry, and two trainings
finishing at once, in two processes, do not both become champion."""

from __future__ import annotations

import configparser
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from support import E2E_TIMEOUT_S, free_port, new_bucket, register_at_once, scratch_database

from cormorant.config import PROJECT_ROOT, Settings
from cormorant.lake import Lake
from cormorant.spec import load_spec
from cormorant.sweep import plan_sweep, run_trials_locally
from cormorant.synthetic import land_days

pytestmark = pytest.mark.e2e
DAYS = [(date(2024, 3, 1) + timedelta(days=i)).isoformat() for i in range(4)]
USER, PASSWORD = "cormorant", secrets.token_urlsafe(16)
SPEC = PROJECT_ROOT / "include" / "specs" / "churn.yaml"


def _compose_secret(folder: Path, name: str) -> str:
    """One file of the compose stack's secrets, as scripts/compose/make_secrets.py writes it."""
    sys.path.insert(0, str(PROJECT_ROOT / "scripts" / "compose"))
    from make_secrets import main

    assert main(["--dir", str(folder / "secrets")]) == 0
    return (folder / "secrets" / name).read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_endpoint):
    """The MLflow server, its S3 bucket, and this module's client environment."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    bucket = new_bucket(s3_endpoint)
    port = free_port()
    # the compose stack's auth config as its generator writes it, on a local store with this admin
    auth = configparser.ConfigParser()
    auth.read_string(_compose_secret(folder, "mlflow-auth.ini"))
    local = {"database_uri": f"sqlite:///{folder / 'auth.db'}", "admin_username": USER}
    auth["mlflow"].update({**local, "admin_password": PASSWORD})
    with (folder / "auth.ini").open("w") as f:
        auth.write(f)
    with scratch_database("cormorant_mlflow") as database:
        s3 = {
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        env = {
            **os.environ,
            **s3,
            "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
            "MLFLOW_AUTH_ADMIN_USERNAME": USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16),
        }
        command = [
            str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "basic-auth",
            "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"postgresql://postgres@127.0.0.1:5432/{database}",
            "--artifacts-destination", f"s3://{bucket}/",
        ]  # fmt: skip
        log = folder / "mlflow.log"
        process = subprocess.Popen(
            command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + E2E_TIMEOUT_S
        while True:
            try:
                requests.get(f"{url}/health", timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "MLflow did not start"
                time.sleep(0.5)
        client_env = pytest.MonkeyPatch()
        client_env.setenv("MLFLOW_TRACKING_URI", url)
        client_env.setenv("MLFLOW_TRACKING_USERNAME", USER)
        client_env.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        client_env.delenv("CORMORANT_MLFLOW_ARTIFACT_URI", raising=False)  # the server's store
        client_env.setenv("CORMORANT_LAKE_URI", (folder / "lake").as_uri())
        for name in s3:  # the clients reach S3 only through the server
            client_env.delenv(name, raising=False)
        try:
            yield {"url": url, "bucket": bucket, "endpoint": s3_endpoint, "folder": folder, "log": log}
        finally:
            client_env.undo()
            os.killpg(process.pid, 15)
            process.wait(30)


@pytest.fixture(scope="module")
def trained(server):
    """Two linear trials over four days, logged to the server: C=1.0 learns; C=1e-6 is regularised
    to a near-constant score (a worse model)."""
    spec, settings = load_spec(SPEC), Settings.from_env()
    assert settings.mlflow_artifact_uri is None  # the server decides where artifacts go
    lake = Lake(settings.lake_uri)
    land_days(spec, lake, DAYS)
    plan = plan_sweep(spec, lake, DAYS[-1], window_days=len(DAYS), max_trials_per_family=2)
    plan["trials"] = [t for t in plan["trials"] if t["family"] == "linear"]
    plan["trials"][0]["params"], plan["trials"][1]["params"] = {"C": 1.0}, {"C": 1e-6}
    plan["trial_ids"] = [t["trial_id"] for t in plan["trials"]]
    results = {r["trial_id"]: r for r in run_trials_locally(SPEC, plan["trials"], parallel=2)}
    assert [r["status"] for r in results.values()] == ["ok", "ok"], results
    return {"plan": plan, "results": results, "lake": lake}


def _client():
    from mlflow import MlflowClient

    from cormorant.tracking import configure

    configure(Settings.from_env())
    return MlflowClient()


def test_the_server_refuses_anonymous_clients(server):
    search = f"{server['url']}/api/2.0/mlflow/registered-models/search"
    assert requests.get(search, timeout=E2E_TIMEOUT_S).status_code == 401
    assert requests.get(search, auth=(USER, "wrong"), timeout=E2E_TIMEOUT_S).status_code == 401
    assert requests.get(search, auth=(USER, PASSWORD), timeout=E2E_TIMEOUT_S).status_code == 200


def test_two_trainings_finishing_at_once_do_not_both_become_champion(trained, tmp_path):
    """Two processes register and promote at the same moment, the worse model in one of them: they take
    turns (the lake's promotion lock), so exactly one decides against no champion and the better model
    ends as champion, whichever went first."""
    results = [trained["results"][t] for t in ("linear-0", "linear-1")]
    good, worse = register_at_once(SPEC, trained["plan"], results, tmp_path)
    assert good["version"] != worse["version"]
    assert [s["decided_against"] for s in (good, worse)].count(None) == 1, (good, worse)
    client = _client()
    champion = client.get_model_version_by_alias("cormorant.churn", "champion")
    assert str(champion.version) == good["version"]
    assert good["holdout_metric"] > worse["holdout_metric"]


def test_registered_artifacts_live_in_the_servers_s3_store_and_were_blessed_over_http(trained, server):
    import boto3

    client = _client()
    champion = client.get_model_version_by_alias("cormorant.churn", "champion")
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
    s3 = boto3.client("s3", endpoint_url=server["endpoint"], aws_access_key_id="x", aws_secret_access_key="x")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=server["bucket"]).get("Contents", [])]
    assert any(k.endswith("model.onnx") for k in keys), keys
    assert any(k.endswith(f"blessing/v{champion.version}.json") for k in keys), keys
    assert any(k.endswith(f"model_card/v{champion.version}.md") for k in keys), keys
    blessing = json.loads(
        s3.get_object(
            Bucket=server["bucket"],
            Key=next(k for k in keys if k.endswith(f"blessing/v{champion.version}.json")),
        )["Body"].read()
    )
    assert blessing["passed"] is True and blessing["checks"]["infra"]["max_abs_diff"] <= 1e-5
    assert champion.tags["cormorant.promotion"].startswith("promoted")
    assert PASSWORD not in server["log"].read_text()


def test_the_view_reads_the_tracking_server_and_links_to_its_ui_without_credentials(trained, server):
    """The Cormorant view's panels against the server deployment: champion and history from the
    server's registry, links into the MLflow UI, no credentials in any of it."""
    from cormorant.view import use_case

    page = use_case(load_spec(SPEC), Settings.from_env(), trained["lake"])
    champion = _client().get_model_version_by_alias("cormorant.churn", "champion")
    assert page["champion"] == str(champion.version)
    (current,) = [v for v in page["champions"] if v["champion"]]
    assert current["mlflow"] == f"{server['url']}/#/models/cormorant.churn/versions/{champion.version}"
    assert {t["trial"] for t in page["leaderboard"]["trials"]} == {"linear-0", "linear-1"}
    assert all(
        t["mlflow"].startswith(f"{server['url']}/#/experiments/") for t in page["leaderboard"]["trials"]
    )
    assert [d["day"] for d in page["timeline"]] == DAYS
    assert PASSWORD not in json.dumps(page)
