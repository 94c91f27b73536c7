"""`cormorant check | run | summary` as a user runs them: subprocesses of the installed command, against a
real PostgreSQL warehouse; bad specs and an unreachable warehouse exit 2 with a clear message and write
nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from support import PG_DSN, free_port, scratch_database

from cormorant.config import PROJECT_ROOT
from cormorant.lake import Lake
from cormorant.synthetic import rows_for_day, seed_postgres

pytestmark = pytest.mark.e2e
SPEC = PROJECT_ROOT / "include" / "specs" / "churn.yaml"
CORMORANT = str(Path(sys.executable).with_name("cormorant"))


@pytest.fixture(scope="module")
def warehouse():
    import psycopg2

    with scratch_database("cormorant_cli") as name:
        conn = psycopg2.connect(f"{PG_DSN} dbname={name}")
        seed_postgres(conn, [date(2024, 3, 1), date(2024, 3, 2)])
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:5432/{name}", name


def _cormorant(*args, env=None, timeout=600):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    return subprocess.run(
        [CORMORANT, *args], env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def test_check_passes_on_a_table_that_fits_the_spec(warehouse):
    uri, _ = warehouse
    done = _cormorant("check", str(SPEC), "--conn", uri)
    assert done.returncode == 0, done.stderr
    assert "the source fits the spec" in done.stdout
    assert "event_ts: local days 2024-03-01..2024-03-02 in UTC" in done.stdout


def test_check_takes_the_connection_from_the_usual_airflow_variable(warehouse):
    uri, _ = warehouse
    done = _cormorant("check", str(SPEC), env={"AIRFLOW_CONN_CORMORANT_WAREHOUSE": uri})
    assert done.returncode == 0, done.stderr


def test_check_lists_every_problem_with_the_source_at_once(warehouse, tmp_path):
    import psycopg2

    uri, name = warehouse
    conn = psycopg2.connect(f"{PG_DSN} dbname={name}")
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bad_activity")
    cur.execute("CREATE TABLE bad_activity AS SELECT * FROM customer_activity")
    cur.execute("UPDATE bad_activity SET churned = 0")
    cur.execute("INSERT INTO bad_activity SELECT * FROM bad_activity ORDER BY event_ts DESC LIMIT 2")
    conn.commit()
    conn.close()
    spec = tmp_path / "churn.yaml"
    spec.write_text(SPEC.read_text().replace("table: customer_activity", "table: bad_activity"))
    done = _cormorant("check", str(spec), "--conn", uri)
    assert done.returncode == 2
    assert "2 problem(s) with the source" in done.stderr
    assert "source.key_columns ['customer_id']: 4 rows of the sample share a key within a day" in done.stderr
    assert "target.column 'churned': one class in the sample: [0]" in done.stderr


def test_a_bad_spec_and_an_unreachable_warehouse_exit_2_and_write_nothing(tmp_path):
    spec = tmp_path / "churn.yaml"
    spec.write_text(SPEC.read_text().replace("partition_column:", "partiton_column:"))
    bad = _cormorant("check", str(spec), "--conn", "postgresql://postgres@127.0.0.1:5432/postgres")
    assert bad.returncode == 2
    assert "field 'source.partiton_column': unknown field; did you mean 'partition_column'?" in bad.stderr
    assert "field 'source.partition_column': required field is missing" in bad.stderr

    port = free_port()  # nothing listens there
    secret = "s3cret-Pw"
    unreachable = f"postgresql://postgres:{secret}@127.0.0.1:{port}/warehouse"
    down = _cormorant("check", str(SPEC), "--conn", unreachable)
    assert down.returncode == 2
    assert f"cannot reach the warehouse postgres://127.0.0.1:{port}" in down.stderr
    home = tmp_path / "home"
    ran = _cormorant(
        "run",
        str(SPEC),
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-01",
        "--conn",
        unreachable,
        "--home",
        str(home),
    )
    assert ran.returncode == 2
    assert "cannot reach the warehouse" in ran.stderr
    assert not home.exists()
    for done in (down, ran):
        assert secret not in done.stdout + done.stderr


def test_run_executes_the_real_dags_for_each_day_and_summary_reads_them_back(warehouse, tmp_path):
    """...from a specs folder where another team's spec is malformed: that spec is not this run's (it
    exited with a traceback naming the other file before)."""
    uri, _ = warehouse
    home = tmp_path / "home"
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = specs / "churn.yaml"
    spec.write_text(SPEC.read_text())
    (specs / "leads.yaml").write_text(
        SPEC.read_text()
        .replace("name: churn", "name: leads")
        .replace("partition_column:", "partiton_column:")
    )
    done = _cormorant(
        "run",
        str(spec),
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-02",
        "--stages",
        "ingest,validate",
        "--conn",
        uri,
        "--home",
        str(home),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for day in ("2024-03-01", "2024-03-02"):
        for stage in ("ingest", "validate"):
            # one progress line per stage and day (Airflow's start-up warnings may land inside the first)
            assert re.search(
                rf"→ churn__{stage} for {day} \.\.\. (?:(?!→).)*?success", done.stdout, re.DOTALL
            )
    lake = Lake(home / "lake")
    assert lake.partitions("churn/raw") == ["2024-03-01", "2024-03-02"]
    assert lake.require("churn/raw", "2024-03-02").row_count == rows_for_day(date(2024, 3, 2))
    # the run reports its wall time against the compute inside it: here two days' extraction
    assert re.search(
        r"Pipeline time \d+ s; the compute inside it [\d.]+ s \(extraction [\d.]+ s in 2\)", done.stdout
    )
    # and where the time went, per run (kept as JSON too): four runs, each with its tasks' time
    assert re.search(r"Where it went: the tasks [\d.]+ s; .* of 4 run\(s\) [\d.]+ s", done.stdout)
    kept = json.loads((home / "pipeline-time.json").read_text())
    assert [run["dag_id"] for run in kept["runs"]] == ["churn__ingest", "churn__validate"] * 2
    assert all(0 < run["task_seconds"] <= run["seconds"] for run in kept["runs"])
    assert kept["spent"]["runs"] == 4
    assert "leads" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert "no model yet: train is not among --stages, and MLflow holds no champion of 'churn'" in done.stdout
    # a later run counts the days this one landed: two of the seven the spec's first window needs
    later_args = ["--conn", uri, "--home", str(home)]
    later = _cormorant(
        "run", str(spec), "--from", "2024-03-02", "--to", "2024-03-02", "--stages", "train", *later_args
    )
    assert later.returncode == 0, later.stdout[-3000:] + later.stderr[-3000:]
    assert (
        "no model yet: 2 labelled day(s) in the lake in the 7-day window ending 2024-03-02; "
        "a first training needs 7" in later.stdout
    ), later.stdout[-3000:]
    assert "churn__train" not in later.stdout  # nothing was run
    summary = _cormorant("summary", str(spec), "--home", str(home))
    assert summary.returncode == 0, summary.stderr
    assert re.search(rf"2024-03-02\s+{rows_for_day(date(2024, 3, 2))}\s+passed", summary.stdout), (
        summary.stdout
    )


def test_init_drafts_a_spec_from_the_tables_columns_that_check_accepts(warehouse, tmp_path):
    from cormorant.spec import load_spec

    uri, _ = warehouse
    init = ["init", "orders", "--conn", uri, "--table", "customer_activity", "--target", "churned"]
    done = _cormorant(*init, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    spec = load_spec(tmp_path / "orders.yaml")
    assert spec.source.partition_column == "event_ts" and spec.source.key_columns == ["customer_id"]
    assert spec.features.numeric == ["tenure_months", "monthly_charges", "support_calls", "usage_gb"]
    assert spec.features.categorical == ["contract_type", "region", "payment_method"]
    assert (spec.target.task, spec.training.metric) == ("binary_classification", "roc_auc")
    assert "# Review every line" in (tmp_path / "orders.yaml").read_text()
    checked = _cormorant("check", str(tmp_path / "orders.yaml"), "--conn", uri)
    assert checked.returncode == 0, checked.stderr
    again = _cormorant(*init, "--out", str(tmp_path))
    assert again.returncode == 2 and "exists" in again.stderr
    injected = _cormorant(
        "init", "x", "--conn", uri, "--table", "t; DROP TABLE t", "--target", "y", "--out", str(tmp_path)
    )
    assert injected.returncode == 2 and "not a plain SQL identifier" in injected.stderr


def test_init_reads_labels_from_their_own_table_and_check_says_what_it_holds(tmp_path):
    """init could not describe a label table: the target had to be a column of the feature table."""
    import psycopg2

    from cormorant.spec import load_spec

    with scratch_database("cormorant_cli_labels") as name:
        conn = psycopg2.connect(f"{PG_DSN} dbname={name}")
        seed_postgres(conn, [date(2024, 3, 1), date(2024, 3, 2)], labels_table="churn_labels")
        conn.close()
        uri = f"postgresql://postgres@127.0.0.1:5432/{name}"
        init = ["init", "churn_own", "--conn", uri, "--table", "customer_activity", "--target", "churned"]
        done = _cormorant(
            *init, "--label-table", "churn_labels", "--labels-after-days", "1", "--out", str(tmp_path)
        )
        assert done.returncode == 0, done.stderr
        assert "churn_labels: customer_id (integer), event_ts (time), churned (integer)" in done.stdout
        spec = load_spec(tmp_path / "churn_own.yaml")
        assert spec.target.source.table == "churn_labels" and spec.target.available_after_days == 1
        assert spec.source.key_columns == ["customer_id"] and "churned" not in spec.feature_columns
        checked = _cormorant("check", str(tmp_path / "churn_own.yaml"), "--conn", uri)
        assert checked.returncode == 0, checked.stderr
        assert re.search(
            r"target.source churn_labels: \d+ rows; 'churned' over the \d+ most recent", checked.stdout
        )
        assert "the latest labelled day is 2024-03-02, 0 day(s) behind" in checked.stdout
        wrong = _cormorant(*init, "--label-table", "no_such_labels", "--out", str(tmp_path / "x"))
        assert wrong.returncode == 2 and "cannot read table 'no_such_labels'" in wrong.stderr


def test_a_password_comes_from_a_file_or_the_environment_and_the_command_line_warns(warehouse, tmp_path):
    """`--conn URI` was the only way to name a warehouse to check or init, so a password stood in `ps`."""
    uri, _ = warehouse
    with_password = uri.replace("postgres@", "postgres:not-a-real-secret@")  # trust auth ignores it
    conn_file = tmp_path / "warehouse.uri"
    conn_file.write_text(with_password + "\n")
    done = _cormorant("check", str(SPEC), "--conn-file", str(conn_file))
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    warned = _cormorant("check", str(SPEC), "--conn", with_password)
    assert warned.returncode == 0 and "--conn carries a password" in warned.stderr
    assert "not-a-real-secret" not in warned.stderr + warned.stdout
    env = {"AIRFLOW_CONN_CORMORANT_WAREHOUSE": with_password}
    init = ["init", "orders", "--table", "customer_activity", "--target", "churned", "--out", str(tmp_path)]
    drafted = _cormorant(*init, env=env)
    assert drafted.returncode == 0 and (tmp_path / "orders.yaml").exists(), drafted.stderr
    missing = _cormorant("check", str(SPEC), "--conn-file", str(tmp_path / "absent.uri"))
    assert missing.returncode == 2 and "--conn-file" in missing.stderr
    nothing = _cormorant(*init[:-1], str(tmp_path / "other"))
    assert nothing.returncode == 2 and "AIRFLOW_CONN_CORMORANT_WAREHOUSE" in nothing.stderr
