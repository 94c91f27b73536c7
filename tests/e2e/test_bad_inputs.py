"""The bad-input table: every kind of bad input a real team sends, through the real DAGs (dag.test) on a
PostgreSQL warehouse. For each: the run's final state, a message that names the thing at fault, that
nothing downstream consumed it, that no retry was spent on it, and that the champion alias and the
earlier partitions are exactly as they were.

A baseline runs first: three good days ingested and validated, a linear sweep whose model is the
champion (version 1), and day 3 scored. Each case then works on a day (or a copy of the table) of its
own.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from support import PG_DSN, pg_connection, scratch_database

from cormorant.config import PROJECT_ROOT, Settings
from cormorant.inference import predictions_dataset
from cormorant.lake import Lake
from cormorant.synthetic import rows_for_day, seed_postgres
from cormorant.warehouse import raw_dataset

pytestmark = pytest.mark.e2e
SPEC = "badin"
GOOD = [date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)]
D1, D2, D3 = (d.isoformat() for d in GOOD)
# One day per case, so the cases are independent of each other.
CASE_DAYS = {
    "all_null_feature": "2024-05-04",
    "empty_day": "2024-05-05",
    "duplicate_keys": "2024-05-06",
    "non_finite": "2024-05-07",
    "null_target": "2024-05-08",
    "one_class_a": "2024-05-09",
    "one_class_b": "2024-05-10",
}


def _spec_text() -> str:
    """The example spec as a use case of its own: PostgreSQL warehouse, a fast linear sweep, and no
    explicit rule for the target (so the default of no nulls is what is tested)."""
    text = (PROJECT_ROOT / "include" / "specs" / "churn.yaml").read_text()
    text = text.replace("name: churn", f"name: {SPEC}").replace(
        "conn_id: cormorant_warehouse", "conn_id: badin_warehouse"
    )
    text = text.replace("    churned: {allowed_values: [0, 1], max_null_fraction: 0}\n", "")
    start = text.index("  search_space:")
    end = text.index("\ndrift:")
    space = (
        "    linear: {C: [1.0]}\n    xgboost: {max_depth: [2], n_estimators: [10], learning_rate: [0.3]}\n"
    )
    return text[:start] + "  search_space:\n" + space + text[end:]


@pytest.fixture(scope="module")
def env(airflow_db, tmp_path_factory):
    """The spec, a scratch PostgreSQL warehouse and the baseline; yields what the cases need."""
    import psycopg2

    from cormorant_provider.pipeline import PipelineRunner

    specs = tmp_path_factory.mktemp("specs")
    (specs / f"{SPEC}.yaml").write_text(_spec_text())
    with scratch_database("cormorant_badin") as database, pytest.MonkeyPatch.context() as mp:
        dsn = f"{PG_DSN} dbname={database}"
        conn = psycopg2.connect(dsn)
        seed_postgres(
            conn, [*GOOD, *(date.fromisoformat(d) for d in CASE_DAYS.values() if d != "2024-05-05")]
        )
        cur = conn.cursor()
        cur.execute("ALTER TABLE customer_activity ALTER COLUMN churned DROP NOT NULL")
        conn.commit()
        mp.setenv("AIRFLOW_CONN_BADIN_WAREHOUSE", pg_connection(database))
        mp.setenv("CORMORANT_SPECS_DIR", str(specs))
        runner = PipelineRunner.for_spec(SPEC)
        for day in (D1, D2, D3):
            runner.run("ingest", day)
            runner.run("validate", day)
        runner.run("train", D3, {"window_days": 3})
        runner.run("predict", D3)
        settings = Settings.from_env()
        lake = Lake(settings.lake_uri)
        yield {"runner": runner, "conn": conn, "lake": lake, "settings": settings, "specs": specs}
        conn.close()


def _sql(env, *statements):
    cur = env["conn"].cursor()
    for statement in statements:
        cur.execute(statement)
    env["conn"].commit()


def _state(env) -> dict:
    """What no bad input may change: the champion, the good days' commits and the scored day."""
    from mlflow import MlflowClient

    from cormorant.registry import current_champion
    from cormorant.tracking import configure

    configure(env["settings"])
    client = MlflowClient()
    champion = current_champion(client, f"cormorant.{SPEC}")
    lake = env["lake"]
    return {
        "champion": str(champion.version) if champion else None,
        "versions": len(client.search_model_versions(f"name = 'cormorant.{SPEC}'")),
        "raw": {d: lake.require(raw_dataset_of(), d).content_hash for d in (D1, D2, D3)},
        "predictions": lake.require(predictions_dataset_of(), D3).content_hash,
    }


def raw_dataset_of() -> str:
    return f"{SPEC}/raw"


def predictions_dataset_of() -> str:
    return f"{SPEC}/predictions"


def _tries(dag_id: str) -> dict[str, int]:
    """task (and map index) -> try number in the DAG's latest run (1: no retry spent)."""
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        tis = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
        )
        return {f"{ti.task_id}[{ti.map_index}]": ti.try_number for ti in tis}


def _run(env, capfd, stage, partition, conf=None):
    """Run one DAG; returns (its StageRun, everything it logged)."""
    capfd.readouterr()
    run = env["runner"].run(stage, partition, conf, check=False)
    out, err = capfd.readouterr()
    return run, out + err


def _case(env, capfd, stage, partition, conf=None, *, state, task, words):
    """Run a DAG with a bad input and check the common contract of the table."""
    before = _state(env)
    run, log = _run(env, capfd, stage, partition, conf)
    assert run.state == state, (run.task_states, log[-3000:])
    for word in words:
        assert word in log, f"{word!r} not in the log:\n{log[-4000:]}"
    if state == "failed":
        assert run.task_states[task] == "failed", run.task_states
        tries = _tries(run.dag_id)
        assert all(t <= 1 for t in tries.values()), f"a deterministic error was retried: {tries}"
        assert "ERROR" in log.upper()
    assert _state(env) == before
    return run, log


def test_baseline_is_what_the_cases_compare_against(env):
    state = _state(env)
    assert state["champion"] == "1" and state["versions"] == 1
    assert env["lake"].require(raw_dataset(_spec()), D1).row_count == rows_for_day(GOOD[0])
    assert env["lake"].require(predictions_dataset(_spec()), D3).row_count == rows_for_day(GOOD[2])


def _validation_fails(env, capfd, day, words):
    return _case(env, capfd, "validate", day, state="failed", task="validate_partition", words=words)


# -- ingest: the source changed ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ddl", "words"),
    [
        (
            "ALTER TABLE {t} DROP COLUMN region",
            ["features.categorical: column 'region' does not exist in the source (dropped or renamed?)"],
        ),
        (
            "ALTER TABLE {t} RENAME COLUMN usage_gb TO usage_gigabytes",
            ["features.numeric: column 'usage_gb'", "did you mean 'usage_gigabytes'?"],
        ),
        (
            "ALTER TABLE {t} ALTER COLUMN support_calls TYPE text",
            ["column 'support_calls' changed type: expected double, found string"],
        ),
    ],
    ids=["dropped_column", "renamed_column", "retyped_column"],
)
def test_a_changed_source_fails_ingest_at_once_naming_the_column(env, capfd, ddl, words):
    table = f"changed_{abs(hash(ddl)) % 10_000}"
    _sql(
        env,
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} AS SELECT * FROM customer_activity",
        ddl.format(t=table),
    )
    _case(
        env,
        capfd,
        "ingest",
        D3,
        {"source_table": table},
        state="failed",
        task="warehouse_to_lake",
        words=words,
    )


# -- validation gates what breaks scoring and training ------------------------------------------------
def _validated_fails_and_is_never_scored(env, capfd, day, words):
    ingest, log = _run(env, capfd, "ingest", day)
    assert ingest.state == "success", log[-3000:]
    _validation_fails(env, capfd, day, words)
    run, log = _case(
        env,
        capfd,
        "predict",
        day,
        state="failed",
        task="batch_inference",
        words=[f"partition {day} failed validation, so it is not used", f"reports/validation/ds={day}"],
    )
    assert env["lake"].manifest(predictions_dataset_of(), day) is None
    return log


def test_an_all_null_feature_is_refused_and_never_scored(env, capfd):
    day = CASE_DAYS["all_null_feature"]
    _sql(env, f"UPDATE customer_activity SET usage_gb = NULL WHERE event_ts::date = '{day}'")
    _validated_fails_and_is_never_scored(
        env, capfd, day, ["expect_column_values_to_not_be_null on usage_gb: 100.0% unexpected"]
    )


def test_duplicated_keys_are_refused_and_never_scored(env, capfd):
    day = CASE_DAYS["duplicate_keys"]
    _sql(
        env,
        f"""INSERT INTO customer_activity SELECT * FROM customer_activity
                  WHERE event_ts::date = '{day}' ORDER BY customer_id LIMIT 3""",
    )
    _validated_fails_and_is_never_scored(env, capfd, day, ["6 rows share their key ['customer_id']"])


def test_nan_and_infinity_are_refused_and_never_scored(env, capfd):
    day = CASE_DAYS["non_finite"]
    _sql(
        env,
        f"""UPDATE customer_activity SET monthly_charges = 'NaN' WHERE customer_id IN (SELECT customer_id
            FROM customer_activity WHERE event_ts::date = '{day}' ORDER BY customer_id LIMIT 2)""",
        f"""UPDATE customer_activity SET usage_gb = 'Infinity' WHERE customer_id IN (SELECT customer_id
            FROM customer_activity WHERE event_ts::date = '{day}' ORDER BY customer_id DESC LIMIT 3)""",
    )
    log = _validated_fails_and_is_never_scored(env, capfd, day, ["non-finite value(s) (NaN or +/-inf)"])
    assert "on monthly_charges: 2 non-finite" in log and "on usage_gb: 3 non-finite" in log


def test_an_empty_day_commits_fails_validation_and_is_skipped_by_scoring_and_drift(env, capfd):
    day = CASE_DAYS["empty_day"]
    ingest, _ = _run(env, capfd, "ingest", day)
    assert ingest.state == "success"
    assert env["lake"].require(raw_dataset_of(), day).row_count == 0
    _validation_fails(env, capfd, day, ["0 rows; the spec asks for at least min_rows=200"])
    predict, log = _case(
        env,
        capfd,
        "predict",
        day,
        state="success",
        task="batch_inference",
        words=[f"partition {day}: 0 rows, nothing to score"],
    )
    assert predict.task_states["batch_inference"] == "skipped"
    drift, _ = _case(env, capfd, "drift", day, state="success", task="drift_check", words=["0 rows"])
    assert drift.task_states["drift_check"] == "skipped"
    assert env["lake"].manifest(predictions_dataset_of(), day) is None


def test_a_null_target_fails_the_labels_suite_keeps_its_day_out_of_training_but_not_out_of_scoring(
    env, capfd
):
    day = CASE_DAYS["null_target"]
    _sql(
        env,
        f"""UPDATE customer_activity SET churned = NULL WHERE customer_id IN
                  (SELECT customer_id FROM customer_activity WHERE event_ts::date = '{day}' LIMIT 5)""",
    )
    _run(env, capfd, "ingest", day)
    validate, _ = _case(
        env,
        capfd,
        "validate",
        day,
        state="failed",
        task="validate_labels",
        words=["labels of partition", "expect_column_values_to_not_be_null on churned"],
    )
    assert validate.task_states["validate_partition"] == "success"  # the features are fine
    run, _ = _case(
        env,
        capfd,
        "train",
        day,
        {"window_days": 2},
        state="failed",
        task="plan_sweep",
        words=[f"labels of {day} failed validation"],
    )
    assert not [k for k, v in run.task_states.items() if k.startswith("trial") and v == "success"]
    # The outcome is unknown for 5 rows; the day can still be scored (scoring needs no label).
    predict, _ = _run(env, capfd, "predict", day)
    assert predict.task_states["batch_inference"] == "success"


def test_a_label_with_one_class_is_refused_before_any_trial(env, capfd):
    days = [CASE_DAYS["one_class_a"], CASE_DAYS["one_class_b"]]
    for day in days:
        _sql(env, f"UPDATE customer_activity SET churned = 0 WHERE event_ts::date = '{day}'")
        _run(env, capfd, "ingest", day)
        assert _run(env, capfd, "validate", day)[0].state == "success"
    run, _ = _case(
        env,
        capfd,
        "train",
        days[1],
        {"window_days": 2},
        state="failed",
        task="plan_sweep",
        words=[f"the training days {days[0]}..{days[0]}", "one class of 'churned'", "counts {'0': "],
    )
    assert run.task_states.get("trial") in (None, "upstream_failed")


# -- specs, params and conf -----------------------------------------------------------------------------
def test_misspelled_and_mistyped_spec_fields_are_all_named_and_the_other_specs_load(env, tmp_path):
    from cormorant_provider.dag_factory import InvalidSpecError, spec_dags

    text = _spec_text()
    (tmp_path / f"{SPEC}.yaml").write_text(text)
    (tmp_path / "typo.yaml").write_text(
        text.replace(f"name: {SPEC}", "name: typo")
        .replace("partition_column:", "partiton_column:")
        .replace("window_days: 7", "window_days: a week")
    )
    assert f"{SPEC}__ingest" in spec_dags(tmp_path / f"{SPEC}.yaml")
    (placeholder,) = spec_dags(tmp_path / "typo.yaml").values()
    with pytest.raises(InvalidSpecError) as info:
        placeholder.validate()
    message = str(info.value)
    assert "typo.yaml" in message
    assert "field 'source.partiton_column': unknown field; did you mean 'partition_column'?" in message
    assert "field 'source.partition_column': required field is missing" in message
    assert "field 'training.window_days': Input should be a valid integer" in message


def test_sql_in_a_param_is_refused_before_any_run(env, capfd):
    before = _state(env)
    with pytest.raises(Exception, match="source_table") as info:
        env["runner"].run("ingest", D3, {"source_table": "customer_activity; DROP TABLE customer_activity"})
    assert "ParamValidationError" in type(info.value).__name__ or "pattern" in str(info.value)
    cur = env["conn"].cursor()
    cur.execute("SELECT count(*) FROM customer_activity")
    assert cur.fetchone()[0] > 0
    assert _state(env) == before


def test_an_unknown_conf_key_is_refused_naming_the_closest_param(env, capfd):
    run, _ = _case(
        env,
        capfd,
        "predict",
        D3,
        {"partiton_date": D3},
        state="failed",
        task="batch_inference",
        words=["conf key 'partiton_date' is not a param of this DAG; did you mean 'partition_date'?"],
    )


def test_a_model_version_that_does_not_exist_fails_naming_the_versions_that_do(env, capfd):
    _case(
        env,
        capfd,
        "predict",
        D3,
        {"model_version": "999"},
        state="failed",
        task="batch_inference",
        words=["model_version '999'", "has no such version; it has versions 1"],
    )


def test_a_narrower_families_conf_registers_no_duplicate_version(env, capfd):
    """The champion's trial is cached, so a sweep of its family alone selects the same MLflow run; before,
    that run was registered again as a new version under the new sweep key."""
    from mlflow import MlflowClient

    before = _state(env)
    family = (
        MlflowClient().get_model_version(f"cormorant.{SPEC}", before["champion"]).tags["cormorant.family"]
    )
    run, _ = _run(env, capfd, "train", D3, {"window_days": 3, "families": [family]})
    assert run.state == "success"
    assert _state(env) == before


def _spec():
    from cormorant.spec import load_spec

    return load_spec(Path(Settings.from_env().specs_dir) / f"{SPEC}.yaml")
