"""Test session setup: an embedded Cormorant environment in a temporary folder.

The environment is set before anything imports Airflow, so every test (and every subprocess a test
starts) uses its own SQLite metadata database, warehouse, lake and MLflow store.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]

from cormorant.config import embedded_environment  # noqa: E402

HOME = Path(tempfile.mkdtemp(prefix="cormorant-tests-"))
(HOME / "airflow").mkdir()
os.environ.update(embedded_environment(HOME))
os.environ["CORMORANT_TRIAL_RETRY_DELAY_S"] = "1"  # failing-trial tests retry at once
EXAMPLE_SPEC = ROOT / "include" / "specs" / "churn.yaml"


@pytest.fixture(scope="session")
def example_spec():
    from cormorant.spec import load_spec

    return load_spec(EXAMPLE_SPEC)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised Airflow metadata database (SQLite) for dag.test() runs."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    return HOME


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible HTTP endpoint on loopback: moto's standalone server."""
    from support import free_port

    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("moto_server did not start")
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def lake(tmp_path):
    from cormorant.lake import Lake

    return Lake(tmp_path / "lake")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(HOME, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the test item (``item.rep_call``) so fixtures can keep artifacts
    of a failed test (the UI test's screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
