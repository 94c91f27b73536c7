"""Health checks for the compose stack's Airflow services that have no health server of their own.

    python scripts/compose/healthcheck.py job DagProcessorJob   # this container's job heart-beats
    python scripts/compose/healthcheck.py celery                 # this container's Celery worker answers

``airflow jobs check --local`` and ``celery inspect ping`` through Airflow's app start an Airflow process
(3-4 s of CPU each) every interval, for every service: about 1.5 cores of a stack at rest. These ask the
same questions without importing Airflow: the job table's row for this host (what ``jobs check --local``
reads: a running job whose latest heartbeat is recent), and a Celery ping to this host's worker.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

SECRETS = Path("/run/secrets")
HEARTBEAT_S = 60  # a job beats every few seconds; a minute without one is a dead job


def job(job_type: str) -> int:
    import psycopg2

    url = (
        (SECRETS / "airflow-db-url").read_text().strip().replace("postgresql+psycopg2://", "postgresql://", 1)
    )
    with psycopg2.connect(url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM job WHERE job_type = %s AND hostname = %s AND state = 'running' "
            "AND latest_heartbeat > now() - make_interval(secs => %s)",
            (job_type, socket.getfqdn(), HEARTBEAT_S),
        )
        (alive,) = cur.fetchone()
    if not alive:
        print(f"no running {job_type} on {socket.getfqdn()} with a heartbeat in the last {HEARTBEAT_S} s")
        return 1
    return 0


def celery() -> int:
    from celery import Celery

    url = (SECRETS / "celery-broker-url").read_text().strip()
    node = f"celery@{socket.gethostname()}"
    answers = Celery(broker=url).control.ping(destination=[node], timeout=5)
    if not any(node in answer for answer in answers):
        print(f"the Celery worker {node} did not answer a ping")
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["job"] and len(sys.argv) == 3:
        sys.exit(job(sys.argv[2]))
    if sys.argv[1:] == ["celery"]:
        sys.exit(celery())
    raise SystemExit("usage: healthcheck.py job JOB_TYPE | celery")
