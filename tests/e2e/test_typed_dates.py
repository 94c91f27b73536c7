"""The date a person types is the partition processed: Airflow's own CLI, `airflow dags test`, run as a
subprocess on the embedded default. (REST and the UI are in test_airflow_api.py and test_ui.py; nightly
runs and backfills in tests/plugins/test_partitions.py and the REST backfill test.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from cormorant.lake import Lake
from cormorant.synthetic import rows_for_day, seed_sqlite

pytestmark = pytest.mark.e2e


def test_airflow_dags_test_with_a_date_processes_that_day(airflow_db, tmp_path):
    """It used to process the day before: the start of the data interval that ends at the typed date."""
    seed_sqlite(tmp_path / "warehouse.db", [date(2024, 2, 29), date(2024, 3, 1)])
    env = {
        **os.environ,
        "AIRFLOW_CONN_CORMORANT_WAREHOUSE": json.dumps(
            {"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}
        ),
        "CORMORANT_LAKE_URI": (tmp_path / "lake").as_uri(),
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "dags", "test", "churn__ingest", "2024-03-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lake = Lake(tmp_path / "lake")
    assert lake.partitions("churn/raw") == ["2024-03-01"]
    assert lake.require("churn/raw", "2024-03-01").row_count == rows_for_day(date(2024, 3, 1))
