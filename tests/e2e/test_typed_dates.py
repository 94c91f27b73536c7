"""The date a person types is the partition processed: Airflow's own CLI, `airflow dags test`, run as a
subprocess on the embedded default. (REST and the UI are in test_airflow_api.py and test_ui.py; nightly
runs and backfills in tests/plugins/test_partitions.py and the REST backfill test.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from cormorant.lake import Lake
from cormorant.synthetic import rows_for_day, seed_sqlite

pytestmark = pytest.mark.e2e
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # cormorant_trigger


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


# A zone west and a zone east of UTC, each on a normal day and on both of its DST changes.
ZONE_DAYS = {
    "churn_ny": ("America/New_York", ["2024-03-05", "2024-03-10", "2024-11-03"]),
    "churn_berlin": ("Europe/Berlin", ["2024-03-05", "2024-03-31", "2024-10-27"]),
}


def _local_day_rows(warehouse: Path, zone: str, day: str) -> int:
    """The rows of ``day`` in ``zone`` counted in SQL, the bounds computed here from zoneinfo (the
    warehouse keeps naive UTC timestamps)."""
    import sqlite3
    from datetime import UTC, datetime, time, timedelta
    from zoneinfo import ZoneInfo

    def utc(d: date) -> str:
        return datetime.combine(d, time(0), ZoneInfo(zone)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    d = date.fromisoformat(day)
    with sqlite3.connect(warehouse) as db:
        query = "SELECT count(*) FROM customer_activity WHERE event_ts >= ? AND event_ts < ?"
        return db.execute(query, (utc(d), utc(d + timedelta(days=1)))).fetchone()[0]


@pytest.fixture(scope="module")
def zone_specs(tmp_path_factory):
    """Two specs of the example, one in New York and one in Berlin, over a warehouse holding the UTC
    days around each of their days."""
    import yaml

    from cormorant.config import PROJECT_ROOT

    home = tmp_path_factory.mktemp("zones")
    specs = home / "specs"
    specs.mkdir()
    example = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "churn.yaml").read_text())
    for name, (zone, _) in ZONE_DAYS.items():
        example["source"]["timezone"] = zone
        (specs / f"{name}.yaml").write_text(yaml.safe_dump({**example, "name": name}))
    days = {
        date.fromisoformat(day) + timedelta(days=offset)
        for _, days in ZONE_DAYS.values()
        for day in days
        for offset in (-1, 0, 1)
    }
    seed_sqlite(home / "warehouse.db", sorted(days))
    return home


@pytest.mark.parametrize(("spec", "day"), [("churn_ny", "2024-03-10"), ("churn_berlin", "2024-10-27")])
def test_airflow_dags_test_with_a_date_processes_that_local_day(airflow_db, zone_specs, tmp_path, spec, day):
    """A New York spec's `airflow dags test ... 2024-03-10` committed 2024-03-08: the typed date is a UTC
    midnight, no New York midnight, and the run fell back to its data interval's last complete day."""
    zone = ZONE_DAYS[spec][0]
    env = {
        **os.environ,
        "AIRFLOW_CONN_CORMORANT_WAREHOUSE": json.dumps(
            {"conn_type": "sqlite", "host": str(zone_specs / "warehouse.db")}
        ),
        "CORMORANT_SPECS_DIR": str(zone_specs / "specs"),
        "CORMORANT_LAKE_URI": (tmp_path / "lake").as_uri(),
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "dags", "test", f"{spec}__ingest", day],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lake = Lake(tmp_path / "lake")
    assert lake.partitions(f"{spec}/raw") == [day]
    assert lake.require(f"{spec}/raw", day).row_count == _local_day_rows(
        zone_specs / "warehouse.db", zone, day
    )


BACKFILLS = {"churn_ny": ("2024-03-09", "2024-03-11"), "churn_berlin": ("2024-10-26", "2024-10-28")}


def test_a_date_posted_over_rest_or_a_backfilled_range_is_those_local_days(zone_specs, monkeypatch, capsys):
    """REST (and the UI's trigger form, which posts the same) with a logical date at a UTC midnight, for
    both zones on each of their days: each run commits its own local day and nothing else. Then a backfill
    of three local days across a DST change per zone (scripts/cormorant_trigger.py --backfill): UTC
    midnights as its bounds would have dropped New York's last day and Berlin's first."""
    import cormorant_trigger
    import requests
    from airflow_stack import airflow_stack, wait_for_run

    password = "zones-" + os.urandom(8).hex()
    ingests = tuple(f"{spec}__ingest" for spec in ZONE_DAYS)
    env = {"CORMORANT_SPECS_DIR": str(zone_specs / "specs")}
    home = zone_specs / "stack"
    home.mkdir()
    (home / "warehouse.db").write_bytes((zone_specs / "warehouse.db").read_bytes())
    with airflow_stack(home, users={"svc": password}, unpause=ingests, extra_env=env) as stack:
        runs = []
        for spec, (_, days) in ZONE_DAYS.items():
            for day in days:
                response = requests.post(
                    f"{stack['url']}/api/v2/dags/{spec}__ingest/dagRuns",
                    headers=stack["headers"],
                    json={"logical_date": f"{day}T00:00:00Z", "conf": {}},
                    timeout=60,
                )
                response.raise_for_status()
                runs.append((spec, response.json()["dag_run_id"]))
        for spec, run_id in runs:
            assert wait_for_run(stack, f"{spec}__ingest", run_id) == "success", (spec, run_id)
        lake = Lake(home / "cormorant" / "lake")
        for spec, (zone, days) in ZONE_DAYS.items():
            landed = [d for d in lake.partitions(f"{spec}/raw") if d.startswith("2024")]  # not tonight's
            assert landed == days, spec
            for day in days:
                expected = _local_day_rows(home / "warehouse.db", zone, day)
                assert lake.require(f"{spec}/raw", day).row_count == expected, (spec, day)

        monkeypatch.setenv("AIRFLOW_PASSWORD", password)
        for spec, (first, last) in BACKFILLS.items():
            argv = [f"{spec}__ingest", "--url", stack["url"], "--user", "svc", "--backfill", first, last]
            code = cormorant_trigger.main([*argv, "--wait", "--timeout", "600"])
            report = json.loads(capsys.readouterr().out)
            assert code == 0 and report["state"] == "success", report
            assert report["timezone"] == ZONE_DAYS[spec][0] and len(report["runs"]) == 3, report
            wanted = [(date.fromisoformat(first) + timedelta(days=i)).isoformat() for i in range(3)]
            landed = set(lake.partitions(f"{spec}/raw"))
            assert set(wanted) <= landed, (spec, sorted(landed))
            for day in wanted:
                expected = _local_day_rows(home / "warehouse.db", ZONE_DAYS[spec][0], day)
                assert lake.require(f"{spec}/raw", day).row_count == expected, (spec, day)
