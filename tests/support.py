"""Helpers shared by tests in every layer: a free loopback port, a scratch PostgreSQL database on the
machine's server, and the slice of an Airflow task context that Cormorant's operators read."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

PG_DSN = "host=127.0.0.1 port=5432 user=postgres"
# The one timeout of every wait in the end-to-end tests (a page element, a run, a backfill, the stack
# starting, one HTTP request). Generous, because CI's machine may be busy: a wait that passes stops as
# soon as its condition holds, so only a failure ever waits this long. Whole training runs wait twice it.
E2E_TIMEOUT_S = 300


def pg_connection(database: str) -> str:
    """An ``AIRFLOW_CONN_*`` value (JSON) for a database on the local PostgreSQL server."""
    import json

    return json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": database}
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new, empty database named ``<prefix>_<random>``; dropped (connections and all) afterwards."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{PG_DSN} dbname=postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def task_context(partition: str | None = None, *, dag_id: str = "churn__ingest") -> dict[str, Any]:
    """What an operator's ``execute`` reads from Airflow's context; outlet events record their extras."""
    ti = SimpleNamespace(dag_id=dag_id, run_id="manual__1", task_id="t", try_number=1, map_index=-1)
    return {
        "params": {"partition_date": partition},
        "ti": ti,
        "outlet_events": defaultdict(lambda: SimpleNamespace(extra={})),
        "triggering_asset_events": {},
        "data_interval_start": None,
    }


def new_bucket(endpoint: str) -> str:
    """A fresh bucket on the S3 endpoint (moto's server accepts the test credentials); returns its name."""
    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return bucket


REGISTER_AT_ONCE = """
import json, os, sys, time
from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.registry import register_and_promote
from cormorant.spec import load_spec

spec_path, plan, result, go, out = sys.argv[1:6]
while not os.path.exists(go):
    time.sleep(0.01)
settings = Settings.from_env()
summary = register_and_promote(
    load_spec(spec_path), settings, Lake(settings.lake_uri), json.loads(plan), [json.loads(result)]
)
open(out, "w").write(json.dumps(summary, default=str))
"""


def register_at_once(
    spec_path: Any, plan: dict[str, Any], results: list[dict[str, Any]], folder: Any
) -> list:
    """Register and promote each of ``results`` in its own process, all released at the same moment
    (a file appearing); their summaries, in order. For the registry race tests."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    folder, go = Path(folder), Path(folder) / "go"
    outs = [folder / f"summary-{i}.json" for i in range(len(results))]
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                REGISTER_AT_ONCE,
                str(spec_path),
                json.dumps(plan),
                json.dumps(result),
                str(go),
                str(out),
            ],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
        for result, out in zip(results, outs, strict=True)
    ]
    go.touch()
    assert [r.wait(E2E_TIMEOUT_S) for r in racers] == [0] * len(racers)
    return [json.loads(out.read_text()) for out in outs]


@contextlib.contextmanager
def python_file_calls() -> Iterator[list[tuple[str, bool]]]:
    """Every call pyarrow makes into a Python file object while the block reads Parquet (through
    ``pq.ParquetFile``): ``(method, on the main thread)``. A call from one of pyarrow's own threads means
    they hold the file's Python-backed buffers, and one that drops the last after a read returned
    aborts a process that is exiting (the lake's ``_parquet_file``). Recording ends with the block."""
    import threading

    import pyarrow as pa
    import pyarrow.parquet as pq

    calls: list[tuple[str, bool]] = []
    main = threading.main_thread().ident
    real = pq.ParquetFile

    class Recorded:
        def __init__(self, raw: Any):
            self._raw = raw

        def __getattr__(self, name: str) -> Any:
            value = getattr(self._raw, name)
            if not callable(value):
                return value

            def call(*args: Any, **kwargs: Any) -> Any:
                calls.append((name, threading.get_ident() == main))
                return value(*args, **kwargs)

            return call

    def recording(source: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(source, pa.NativeFile) and hasattr(source, "read"):
            source = Recorded(source)
        return real(source, *args, **kwargs)

    pq.ParquetFile = recording
    try:
        yield calls
    finally:
        pq.ParquetFile = real
