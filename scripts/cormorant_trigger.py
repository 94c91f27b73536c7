"""Trigger a Cormorant DAG over the Airflow REST API v2 and read its result (for other teams' services).

    python scripts/cormorant_trigger.py --url http://airflow:8080 --user svc-fraud \\
        churn__ingest --conf '{"partition_date": "2024-03-01"}' --wait

The password comes from ``$AIRFLOW_PASSWORD`` (never a command-line argument). Uses the official
client, apache-airflow-client: gets a token (``POST /auth/token``), creates the run with its conf
(Airflow validates it against the DAG's Params and refuses bad conf with a message naming the param),
polls its state, and prints the run and every task's return value (references: URIs, versions,
verdicts). Exit status: 0 when the run succeeded, 1 when it failed, 2 when Airflow refused the request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

FINISHED = {"success", "failed"}


def get_token(url: str, user: str, password: str) -> str:
    import requests

    response = requests.post(
        f"{url.rstrip('/')}/auth/token", json={"username": user, "password": password}, timeout=30
    )
    response.raise_for_status()
    return response.json()["access_token"]


def client(url: str, token: str) -> Any:
    import airflow_client.client as af

    configuration = af.Configuration(host=url.rstrip("/"), access_token=token)
    return af.ApiClient(configuration)


def trigger(api: Any, dag_id: str, conf: dict[str, Any]) -> Any:
    from airflow_client.client.api.dag_run_api import DagRunApi
    from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

    return DagRunApi(api).trigger_dag_run(dag_id, TriggerDAGRunPostBody(logical_date=None, conf=conf))


def wait(api: Any, dag_id: str, run_id: str, timeout_s: float, poll_s: float = 2.0) -> str:
    from airflow_client.client.api.dag_run_api import DagRunApi

    deadline = time.monotonic() + timeout_s
    while True:
        state = str(DagRunApi(api).get_dag_run(dag_id, run_id).state.value)
        if state in FINISHED or time.monotonic() > deadline:
            return state
        time.sleep(poll_s)


def results(api: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """Every task's return value (Cormorant's operators return small references)."""
    from airflow_client.client.api.task_instance_api import TaskInstanceApi
    from airflow_client.client.api.x_com_api import XComApi
    from airflow_client.client.exceptions import NotFoundException

    out: dict[str, Any] = {}
    for ti in TaskInstanceApi(api).get_task_instances(dag_id, run_id).task_instances:
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        try:
            entry = XComApi(api).get_xcom_entry(
                dag_id, ti.task_id, run_id, "return_value", map_index=ti.map_index, deserialize=True
            )
            out[key] = entry.actual_instance.value  # anyOf: the native (deserialized) response
        except NotFoundException:
            out[key] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("--url", default=os.environ.get("AIRFLOW_URL", "http://localhost:8080"))
    parser.add_argument("--user", default=os.environ.get("AIRFLOW_USER", "admin"))
    parser.add_argument("--conf", default="{}", help="the run's conf as JSON (the DAG's Params)")
    parser.add_argument("--wait", action="store_true", help="poll until the run finishes and print results")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    from airflow_client.client.exceptions import ApiException

    password = os.environ.get("AIRFLOW_PASSWORD")
    if not password:
        parser.error("set AIRFLOW_PASSWORD")
    with client(args.url, get_token(args.url, args.user, password)) as api:
        try:
            run = trigger(api, args.dag_id, json.loads(args.conf))
        except ApiException as e:
            print(json.dumps({"refused": e.status, "detail": json.loads(e.body or "{}").get("detail")}))
            return 2
        report: dict[str, Any] = {"dag_id": args.dag_id, "run_id": run.dag_run_id, "state": "queued"}
        if args.wait:
            report["state"] = wait(api, args.dag_id, run.dag_run_id, args.timeout)
            report["results"] = results(api, args.dag_id, run.dag_run_id)
    print(json.dumps(report, indent=2, default=str))
    return 0 if report["state"] in ("success", "queued") else 1


if __name__ == "__main__":
    sys.exit(main())
