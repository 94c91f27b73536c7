"""The compose stack's one-shot init jobs: each makes its store ready for the services, idempotently (every
``docker compose up`` runs them again; a second run changes nothing, a rotated password is applied).

    python scripts/compose/init_stores.py metadata      # MLflow's role and databases on the metadata server
    python scripts/compose/init_stores.py warehouse     # the read-only user extraction reads with
    python scripts/compose/init_stores.py s3            # the buckets, and the object store answering reads
    python scripts/compose/init_stores.py mlflow-users  # Cormorant's MLflow users (made by its admin)

Credentials come from the files ``scripts/compose/make_secrets.py`` writes, mounted under /run/secrets.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SECRETS = Path("/run/secrets")
WAIT_S = 180


def _secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def _stores() -> dict[str, Any]:
    return json.loads(_secret("stores.json"))


def _until_ready(what: str, attempt: Any) -> Any:
    """``attempt()`` until it stops raising, for up to ``WAIT_S``; the last error if it never does."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return attempt()
        except Exception as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: not ready after {WAIT_S} s: {e}") from e
            time.sleep(2)


def _role(cur: Any, name: str, password: str) -> None:
    """A login role with this password (created, or its password set again)."""
    from psycopg2 import sql

    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD %s").format(sql.Identifier(name)), (password,))


def metadata() -> None:
    """MLflow's own role, owning its tracking database and its users' database: MLflow never holds the
    metadata database's owner, nor Airflow MLflow's."""
    import psycopg2
    from psycopg2 import sql

    url = _secret("airflow-db-url").replace("postgresql+psycopg2://", "postgresql://", 1)
    mlflow = _stores()["mlflow"]
    conn = _until_ready("the metadata database", lambda: psycopg2.connect(url))
    conn.autocommit = True
    with conn.cursor() as cur:
        _role(cur, mlflow["user"], mlflow["password"])
        for database in ("mlflow", "mlflow_auth"):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if not cur.fetchone():
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(mlflow["user"])
                    )
                )
    conn.close()
    print(f"metadata server: role {mlflow['user']} owns databases mlflow and mlflow_auth")


def warehouse() -> None:
    """The read-only role extraction uses: it reads every table of the public schema, now and later
    (default privileges of the owner that seeds them), and can create nothing."""
    import psycopg2
    from psycopg2 import sql

    owner = json.loads(_secret("connections.json"))["cormorant_warehouse"]
    reader = _stores()["warehouse_reader"]
    conn = _until_ready(
        "the warehouse",
        lambda: psycopg2.connect(
            host=owner["host"],
            port=owner["port"],
            dbname=owner["schema"],
            user=owner["login"],
            password=owner["password"],
        ),
    )
    conn.autocommit = True
    name, who = sql.Identifier(reader["user"]), sql.Identifier(owner["login"])
    with conn.cursor() as cur:
        _role(cur, reader["user"], reader["password"])
        for statement in (
            "GRANT CONNECT ON DATABASE {db} TO {name}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {name}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {who} IN SCHEMA public GRANT SELECT ON TABLES TO {name}",
        ):
            cur.execute(sql.SQL(statement).format(db=sql.Identifier(owner["schema"]), name=name, who=who))
    conn.close()
    print(f"warehouse: role {reader['user']} reads the public schema, and writes nothing")


def s3() -> None:
    """The lake's and MLflow's buckets, then a write, a read and a delete: after a restart the object
    store answers S3 calls before it can read its volumes again, so its health check alone is not
    enough for the services after it."""
    import boto3
    from botocore.config import Config

    admin = _stores()["s3_admin"]
    client = boto3.client(
        "s3",
        endpoint_url="http://s3:9000",
        aws_access_key_id=admin["key"],
        aws_secret_access_key=admin["secret"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    existing = _until_ready("the object store", lambda: {b["Name"] for b in client.list_buckets()["Buckets"]})
    for bucket in ("lake", "mlflow"):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)

    def round_trip() -> None:
        key = f"_init/{uuid.uuid4().hex}"
        client.put_object(Bucket="lake", Key=key, Body=b"ok")
        assert client.get_object(Bucket="lake", Key=key)["Body"].read() == b"ok"
        client.delete_object(Bucket="lake", Key=key)

    _until_ready("the object store's reads and writes", round_trip)
    print("object store: buckets lake and mlflow, reads and writes answer")


def mlflow_users() -> None:
    """Cormorant's MLflow users, made by the server's admin: the workers' (it creates the experiments and
    models it then manages) and the API server's, which only reads (the auth config's default)."""
    import os

    import requests

    config = json.loads(_secret("mlflow-users.json"))
    url = os.environ.get("MLFLOW_TRACKING_URI", "http://mlflow:5000").rstrip("/")
    admin = (config["admin"]["username"], config["admin"]["password"])
    api = f"{url}/api/2.0/mlflow/users"
    for user, password in config["users"].items():
        body = {"username": user, "password": password}
        created = _until_ready(
            "MLflow", lambda body=body: requests.post(f"{api}/create", json=body, auth=admin, timeout=30)
        )
        if created.status_code != 200:
            if "RESOURCE_ALREADY_EXISTS" not in created.text:
                raise SystemExit(
                    f"MLflow refused to create user {user!r}: {created.status_code} {created.text}"
                )
            requests.patch(f"{api}/update-password", json=body, auth=admin, timeout=30).raise_for_status()
        check = requests.get(f"{api}/get", params={"username": user}, auth=(user, password), timeout=30)
        if check.status_code != 200:
            raise SystemExit(f"MLflow user {user!r} cannot sign in: {check.status_code} {check.text}")
    print(f"MLflow: users {', '.join(config['users'])} sign in")


COMMANDS = {"metadata": metadata, "warehouse": warehouse, "s3": s3, "mlflow-users": mlflow_users}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: init_stores.py {{{'|'.join(COMMANDS)}}}")
    COMMANDS[sys.argv[1]]()
