"""A connection's password never appears in a task log: the warehouse is PostgreSQL reached with a
password, the ingest runs on a real scheduler, and its log is read back over the REST API."""

from __future__ import annotations

import secrets
from datetime import date

import pytest
import requests
from airflow_stack import airflow_stack, trigger_run, wait_for_run
from support import E2E_TIMEOUT_S, scratch_database

from cormorant.synthetic import seed_postgres

pytestmark = pytest.mark.e2e


def test_warehouse_password_is_masked_in_the_task_log(tmp_path):
    import psycopg2

    with scratch_database("cormorant_wh") as warehouse:
        conn = psycopg2.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={warehouse}")
        seed_postgres(conn, [date(2024, 3, 1)])
        conn.close()
        password = "Pw-" + secrets.token_hex(12)  # trust auth accepts it; the point is where it shows up
        extra = {
            "AIRFLOW_CONN_CORMORANT_WAREHOUSE": f"postgresql://postgres:{password}@127.0.0.1:5432/{warehouse}"
        }
        login = secrets.token_urlsafe(16)
        with airflow_stack(
            tmp_path, users={"ops": login}, unpause=("churn__ingest",), extra_env=extra
        ) as stack:
            url, headers = stack["url"], stack["headers"]
            run_id = trigger_run(stack, "churn__ingest", {"partition_date": "2024-03-01"})
            assert wait_for_run(stack, "churn__ingest", run_id) == "success"
            log = requests.get(
                f"{url}/api/v2/dags/churn__ingest/dagRuns/{run_id}/taskInstances/warehouse_to_lake/logs/1",
                headers=headers,
                params={"full_content": "true"},
                timeout=E2E_TIMEOUT_S,
            )
            log.raise_for_status()
            text = log.text
            assert "Committed churn/raw/ds=2024-03-01" in text  # the log is really the task's
            assert password not in text
            on_disk = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*.log"))
            assert "Committed churn/raw/ds=2024-03-01" in on_disk
            assert password not in on_disk
            manifests = "".join(
                p.read_text() for p in (tmp_path / "cormorant" / "lake").rglob("_manifest.json")
            )
            assert "cormorant_warehouse" in manifests and password not in manifests
