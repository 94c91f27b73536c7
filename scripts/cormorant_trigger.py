"""Trigger a Cormorant DAG over the Airflow REST API v2 and read its result (for other teams' services).

    python scripts/cormorant_trigger.py --url http://airflow:8080 --user svc-fraud \\
        churn__ingest --conf '{"partition_date": "2024-03-01"}' --wait

    python scripts/cormorant_trigger.py --url http://airflow:8080 --user svc-fraud \\
        churn__ingest --backfill 2024-01-01 2024-02-29 --wait

``--backfill FIRST LAST`` lands the local days FIRST..LAST of the DAG's time zone (the spec's
``source.timezone``): Airflow takes a backfill's bounds as instants and creates the runs whose logical date
(a local midnight) lies between them, so bounds at UTC midnights would drop the last day of a New York
spec and the first of a Berlin one; this sends each day's local midnight instead.

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
from datetime import UTC, date, datetime
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


def local_midnights(timezone: str, first: str, last: str) -> tuple[datetime, datetime]:
    """The first instants of the local days ``first`` and ``last`` (``YYYY-MM-DD``) in ``timezone``."""
    from zoneinfo import ZoneInfo

    def start(day: str) -> datetime:
        local = datetime.combine(date.fromisoformat(day), datetime.min.time(), ZoneInfo(timezone))
        return local.astimezone(UTC)  # through UTC: a midnight a DST change skips becomes 01:00

    return start(first), start(last)


def dag_timezone(api: Any, dag_id: str) -> str:
    """The zone whose days a Cormorant DAG processes: its ``timezone:`` tag (the spec's
    ``source.timezone``; Airflow's API gives every DAG's zone as UTC once serialized), else UTC."""
    from airflow_client.client.api.dag_api import DAGApi

    tags = [t.name for t in DAGApi(api).get_dag(dag_id).tags or []]
    return next((t.removeprefix("timezone:") for t in tags if t.startswith("timezone:")), "UTC")


def backfill(api: Any, dag_id: str, first: str, last: str, conf: dict[str, Any]) -> tuple[Any, str]:
    """A backfill of the local days ``first``..``last`` in the DAG's time zone; the backfill and the zone."""
    from airflow_client.client.api.backfill_api import BackfillApi
    from airflow_client.client.models.backfill_post_body import BackfillPostBody

    timezone = dag_timezone(api, dag_id)
    start, end = local_midnights(timezone, first, last)
    body = BackfillPostBody(dag_id=dag_id, from_date=start, to_date=end, dag_run_conf=conf)
    return BackfillApi(api).create_backfill(body), timezone


def wait_backfill(api: Any, backfill_id: int, timeout_s: float, poll_s: float = 2.0) -> bool:
    """Whether the backfill completed within ``timeout_s``."""
    from airflow_client.client.api.backfill_api import BackfillApi

    deadline = time.monotonic() + timeout_s
    while not BackfillApi(api).get_backfill(backfill_id).completed_at:
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def backfill_runs(api: Any, dag_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    from airflow_client.client.api.dag_run_api import DagRunApi

    runs = DagRunApi(api).get_dag_runs(
        dag_id, logical_date_gte=start, logical_date_lte=end, run_type=["backfill"], limit=1000
    )
    return [
        {"run_id": r.dag_run_id, "logical_date": r.logical_date.isoformat(), "state": str(r.state.value)}
        for r in runs.dag_runs
    ]


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
    parser.add_argument(
        "--backfill",
        nargs=2,
        metavar=("FIRST", "LAST"),
        help="backfill the local days FIRST..LAST (YYYY-MM-DD) of the DAG's time zone instead of one run",
    )
    args = parser.parse_args(argv)
    from airflow_client.client.exceptions import ApiException

    password = os.environ.get("AIRFLOW_PASSWORD")
    if not password:
        parser.error("set AIRFLOW_PASSWORD")
    with client(args.url, get_token(args.url, args.user, password)) as api:
        try:
            if args.backfill:
                return _backfill(api, args, *args.backfill)
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


def _backfill(api: Any, args: argparse.Namespace, first: str, last: str) -> int:
    for day in (first, last):
        try:
            date.fromisoformat(day)
        except ValueError:
            print(json.dumps({"refused": 400, "detail": f"--backfill: {day!r} is not a day (YYYY-MM-DD)"}))
            return 2
    created, timezone = backfill(api, args.dag_id, first, last, json.loads(args.conf))
    start, end = local_midnights(timezone, first, last)
    report: dict[str, Any] = {
        "dag_id": args.dag_id,
        "backfill_id": created.id,
        "days": [first, last],
        "timezone": timezone,
        "from_date": start.isoformat(),
        "to_date": end.isoformat(),
        "state": "queued",
    }
    if args.wait:
        done = wait_backfill(api, created.id, args.timeout)
        report["runs"] = backfill_runs(api, args.dag_id, start, end)
        states = {r["state"] for r in report["runs"]}
        report["state"] = "timeout" if not done else ("success" if states == {"success"} else "failed")
    print(json.dumps(report, indent=2, default=str))
    return 0 if report["state"] in ("success", "queued") else 1


if __name__ == "__main__":
    sys.exit(main())
