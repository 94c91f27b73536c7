#!/usr/bin/env python3
"""Write the compose stack's secrets: one file per secret in ``secrets/``, each mounted only into the
services that use it (``docker-compose.yaml``), so no credential is ever in a container's environment
as ``docker inspect`` shows it, on a command line, or in a task log.

    python3 scripts/compose/make_secrets.py            # or: make secrets; idempotent
    python3 scripts/compose/make_secrets.py --rotate   # new passwords and keys (then: docker compose down -v)

The random values (passwords, keys) are made once and kept; the files the services read (connection
URLs, Airflow connections, the object store's identities, MLflow's auth config) are written again from
them on every run. The folder is readable by its owner only; the files in it are readable by the
containers' users, which see them only where the compose file mounts them. Standard library only: this
runs before anything is installed. Replace any value with your own (passwords must be URL-safe:
letters, digits, ``-``, ``_``, ``.``, ``~``) and run it again to write the files derived from it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")

# Users that are names, not secrets (each service's user is its own, with only what it needs).
METADATA_USER, MLFLOW_DB_USER = "airflow", "mlflow"
WAREHOUSE_OWNER, WAREHOUSE_READER = "warehouse", "cormorant_reader"
MLFLOW_ADMIN, MLFLOW_CLIENT, MLFLOW_VIEWER = "mlflow-admin", "cormorant", "cormorant-viewer"


def _airflow_users() -> tuple[str, ...]:
    """The simple auth manager's users: ``AIRFLOW_USERS`` (``user:role,...``) from the environment or
    ``.env``, as docker-compose.yaml reads it; default ``admin:admin``."""
    value = os.environ.get("AIRFLOW_USERS")
    env_file = ROOT / ".env"
    if value is None and env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.strip().startswith("AIRFLOW_USERS="):
                value = line.split("=", 1)[1].strip()
    users = tuple(u.split(":")[0].strip() for u in (value or "admin:admin").split(",") if u.strip())
    for user in users:
        if not re.match(r"^[A-Za-z0-9_.-]+$", user):
            raise SystemExit(f"AIRFLOW_USERS: {user!r} is not a user name (letters, digits, '_', '.', '-')")
    return users


AIRFLOW_USERS = _airflow_users()

# name -> how a fresh value is made
RANDOM = {
    "postgres-password": lambda: secrets.token_urlsafe(24),
    "mlflow-db-password": lambda: secrets.token_urlsafe(24),
    "warehouse-password": lambda: secrets.token_urlsafe(24),
    "warehouse-reader-password": lambda: secrets.token_urlsafe(24),
    "redis-password": lambda: secrets.token_urlsafe(24),
    "s3-admin-key": lambda: "admin" + secrets.token_hex(8),
    "s3-admin-secret": lambda: secrets.token_urlsafe(30),
    "lake-writer-key": lambda: "lakew" + secrets.token_hex(8),
    "lake-writer-secret": lambda: secrets.token_urlsafe(30),
    "lake-reader-key": lambda: "laker" + secrets.token_hex(8),
    "lake-reader-secret": lambda: secrets.token_urlsafe(30),
    "mlflow-artifacts-key": lambda: "mlflow" + secrets.token_hex(8),
    "mlflow-artifacts-secret": lambda: secrets.token_urlsafe(30),
    "fernet-key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "jwt-secret": lambda: secrets.token_urlsafe(32),
    "api-secret-key": lambda: secrets.token_urlsafe(32),
    "mlflow-admin-password": lambda: secrets.token_urlsafe(24),
    "mlflow-client-password": lambda: secrets.token_urlsafe(24),
    "mlflow-viewer-password": lambda: secrets.token_urlsafe(24),
    "mlflow-flask-secret-key": lambda: secrets.token_urlsafe(32),
    **{f"airflow-{user}-password": lambda: secrets.token_urlsafe(18) for user in AIRFLOW_USERS},
}


def _values(folder: Path, rotate: bool) -> dict[str, str]:
    values = {}
    for name, make in RANDOM.items():
        path = folder / name
        if rotate or not path.exists():
            _write(path, make())
        value = path.read_text().strip()
        if name != "fernet-key" and not URL_SAFE.match(value):
            raise SystemExit(f"{path}: use letters, digits, '-', '_', '.' and '~' only (it goes into URLs)")
        values[name] = value
    return values


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)  # as is: Airflow's *_CMD options take a value with its trailing newline
    tmp.chmod(0o644)  # the folder (0700) keeps other users of this machine out
    tmp.replace(path)


def _shell(pairs: dict[str, str]) -> str:
    """``KEY='value'`` lines for a POSIX shell to source (the stack's entrypoints do, for images that
    read a credential from their environment only)."""
    return "".join(f"{k}='{v}'\n" for k, v in pairs.items())


def _s3_identity(name: str, key: str, secret: str, actions: list[str]) -> dict:
    return {"name": name, "credentials": [{"accessKey": key, "secretKey": secret}], "actions": actions}


def _mlflow_credentials(user: str, password: str) -> str:
    """MLflow's client credentials file (``~/.mlflow/credentials``)."""
    return f"[mlflow]\nmlflow_tracking_username = {user}\nmlflow_tracking_password = {password}\n"


def _lake_connection(key: str, secret: str) -> dict:
    return {
        "conn_type": "aws",
        "login": key,
        "password": secret,
        "extra": {"endpoint_url": "http://s3:9000", "region_name": "us-east-1"},
    }


def derived(v: dict[str, str]) -> dict[str, str]:
    """Every file a service reads, by name, from the random values."""
    warehouse = {"conn_type": "postgres", "host": "warehouse", "port": 5432, "schema": "warehouse"}
    mlflow_db = f"postgresql://{MLFLOW_DB_USER}:{v['mlflow-db-password']}@postgres:5432"
    redis = f"redis://:{v['redis-password']}@redis:6379"
    return {
        # Airflow (read through Airflow's own *_CMD options and its local-file secrets backend)
        "airflow-db-url": f"postgresql+psycopg2://{METADATA_USER}:{v['postgres-password']}@postgres:5432/airflow",
        "celery-broker-url": f"{redis}/0",
        "celery-result-backend": f"{redis}/1",
        "worker-connections.json": json.dumps(
            {
                "cormorant_warehouse": {
                    **warehouse,
                    "login": WAREHOUSE_READER,
                    "password": v["warehouse-reader-password"],
                },
                "cormorant_lake": _lake_connection(v["lake-writer-key"], v["lake-writer-secret"]),
            },
            indent=2,
        ),
        "api-connections.json": json.dumps(
            {"cormorant_lake": _lake_connection(v["lake-reader-key"], v["lake-reader-secret"])}, indent=2
        ),
        "seed-connections.json": json.dumps(
            {
                "cormorant_warehouse": {
                    **warehouse,
                    "login": WAREHOUSE_OWNER,
                    "password": v["warehouse-password"],
                }
            },
            indent=2,
        ),
        "airflow-passwords.json": json.dumps({u: v[f"airflow-{u}-password"] for u in AIRFLOW_USERS}),
        # MLflow's clients read ~/.mlflow/credentials
        "mlflow-client-credentials": _mlflow_credentials(MLFLOW_CLIENT, v["mlflow-client-password"]),
        "mlflow-viewer-credentials": _mlflow_credentials(MLFLOW_VIEWER, v["mlflow-viewer-password"]),
        "mlflow-users.json": json.dumps(
            {
                "admin": {"username": MLFLOW_ADMIN, "password": v["mlflow-admin-password"]},
                "users": {
                    MLFLOW_CLIENT: v["mlflow-client-password"],
                    MLFLOW_VIEWER: v["mlflow-viewer-password"],
                },
            }
        ),
        # the MLflow server: its stores, its admin, its artifact bucket
        "mlflow-server.env": _shell(
            {
                "MLFLOW_BACKEND_STORE_URI": f"{mlflow_db}/mlflow",
                "MLFLOW_FLASK_SERVER_SECRET_KEY": v["mlflow-flask-secret-key"],
            }
        ),
        "mlflow-auth.ini": "[mlflow]\n"
        "# Authenticated users read everything; a user changes what it created (or was granted).\n"
        "default_permission = READ\n"
        f"database_uri = {mlflow_db}/mlflow_auth\n"
        f"admin_username = {MLFLOW_ADMIN}\n"
        f"admin_password = {v['mlflow-admin-password']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        "mlflow-artifacts-aws": "[default]\n"
        f"aws_access_key_id = {v['mlflow-artifacts-key']}\n"
        f"aws_secret_access_key = {v['mlflow-artifacts-secret']}\n",
        # the databases' owners (read by the images' entrypoints), and who the init jobs create
        "postgres.env": _shell({"POSTGRES_PASSWORD": v["postgres-password"]}),
        "warehouse.env": _shell({"POSTGRES_PASSWORD": v["warehouse-password"]}),
        "stores.json": json.dumps(
            {
                "mlflow": {"user": MLFLOW_DB_USER, "password": v["mlflow-db-password"]},
                "warehouse_reader": {"user": WAREHOUSE_READER, "password": v["warehouse-reader-password"]},
                "s3_admin": {"key": v["s3-admin-key"], "secret": v["s3-admin-secret"]},
            }
        ),
        # the broker
        "redis.conf": f"requirepass {v['redis-password']}\n",
        # the object store: an identity per client, each limited to its bucket
        "s3-identities.json": json.dumps(
            {
                "identities": [
                    _s3_identity(
                        "admin", v["s3-admin-key"], v["s3-admin-secret"], ["Admin", "Read", "List", "Write"]
                    ),
                    _s3_identity(
                        "lake-writer",
                        v["lake-writer-key"],
                        v["lake-writer-secret"],
                        ["Read:lake", "Write:lake", "List:lake", "Tagging:lake"],
                    ),
                    _s3_identity(
                        "lake-reader",
                        v["lake-reader-key"],
                        v["lake-reader-secret"],
                        ["Read:lake", "List:lake"],
                    ),
                    _s3_identity(
                        "mlflow-artifacts",
                        v["mlflow-artifacts-key"],
                        v["mlflow-artifacts-secret"],
                        ["Read:mlflow", "Write:mlflow", "List:mlflow", "Tagging:mlflow"],
                    ),
                ]
            },
            indent=2,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "secrets", help="where (default: ./secrets)")
    parser.add_argument("--rotate", action="store_true", help="make new random values")
    args = parser.parse_args(argv)
    folder = args.dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    values = _values(folder, args.rotate)
    files = derived(values)
    for name, text in files.items():
        _write(folder / name, text)
    print(f"{len(values)} secrets and {len(files)} files derived from them in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
