"""The Cormorant view inside the Airflow UI, on the embedded default as a user runs it: ``make demo``'s
pipeline (the real DAGs, late labels, a drifted last day), then ``airflow api-server`` alone on its
SQLite metadata database with the plugin loaded. Every endpoint refuses anonymous callers and leaks no
secret; the panels say what the lake and MLflow hold; a person logs in, opens the Cormorant entry in
headless Chromium and follows a link to a DAG run. Screenshots are kept in ``test-artifacts/view/``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from airflow_stack import embedded_api_server
from support import E2E_TIMEOUT_S
from test_ui import CHROMIUM_ARGS, _chromium

from cormorant.config import PROJECT_ROOT
from cormorant.lake import Lake
from cormorant.synthetic import rows_for_day

pytestmark = pytest.mark.e2e
USER, PASSWORD = "ml-lead", secrets.token_urlsafe(16)
# the auth manager (tests/e2e/denying_auth_manager.py) denies the auditor one DAG of the use case and
# the outsider every DAG
AUDITOR, OUTSIDER = "auditor", "outsider"
OTHERS = {AUDITOR: secrets.token_urlsafe(16), OUTSIDER: secrets.token_urlsafe(16)}
DENIED = {AUDITOR: ["churn_late__train"], OUTSIDER: ["*"]}
SECRETS = {"warehouse": secrets.token_urlsafe(12), "mlflow": secrets.token_urlsafe(12)}
NAME = "churn_late"
ARTIFACTS = Path(os.environ.get("CORMORANT_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts")) / "view"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``make demo`` into a folder of this module's, then its API server with a second, broken spec
    beside the demo's and secrets in the environment that must never come back."""
    home = tmp_path_factory.mktemp("view")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}  # the demo's own
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "demo.py"), "--home", str(home / "demo")],
        capture_output=True,
        text=True,
        env=clean,
        timeout=E2E_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    specs = home / "specs"
    specs.mkdir()
    shutil.copy(PROJECT_ROOT / "include" / "examples" / f"{NAME}.yaml", specs)
    (specs / "fraud.yaml").write_text("name: fraud\nsource: {table: tx}\n")  # no features, target, ...
    env = {
        "CORMORANT_SPECS_DIR": str(specs),
        "AIRFLOW_CONN_SOME_WAREHOUSE": f"postgresql://svc:{SECRETS['warehouse']}@db.internal:5432/dw",
        "MLFLOW_TRACKING_PASSWORD": SECRETS["mlflow"],
        "AIRFLOW__CORE__AUTH_MANAGER": "denying_auth_manager.DenyingAuthManager",
        "CORMORANT_TEST_DENIED_DAGS": json.dumps(DENIED),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    users = {USER: PASSWORD, **OTHERS}
    with embedded_api_server(home / "demo", users=users, extra_env=env) as server:
        yield {**server, "demo_stdout": done.stdout}


def _get(demo, path, **kwargs):
    return requests.get(f"{demo['url']}/cormorant{path}", timeout=E2E_TIMEOUT_S, **kwargs)


def _lake(demo) -> Lake:
    return Lake(demo["env"]["CORMORANT_LAKE_URI"])


def _client(demo):
    from mlflow import MlflowClient

    uri = demo["env"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _day(demo):
    return _lake(demo).partitions(f"{NAME}/raw")[-1]


def _paths(demo) -> list[str]:
    return [
        "/",
        f"/use-cases/{NAME}",
        "/static/plotly.min.js",
        "/api/use-cases",
        f"/api/use-cases/{NAME}",
        f"/api/use-cases/{NAME}/reports/drift/{_day(demo)}",
        f"/api/use-cases/{NAME}/reports/validation/{_day(demo)}",
    ]


def test_every_endpoint_refuses_anonymous_callers_and_answers_a_user(demo):
    for path in _paths(demo):
        assert _get(demo, path).status_code == 401, path
        forged = {"Authorization": "Bearer not-a-token"}
        assert _get(demo, path, headers=forged).status_code in (401, 403), path
        assert _get(demo, path, headers=demo["headers"]).status_code == 200, path
    assert (
        requests.post(
            f"{demo['url']}/cormorant/api/use-cases", headers=demo["headers"], timeout=E2E_TIMEOUT_S
        ).status_code
        == 405
    )  # read-only


def _headers_of(demo, user: str) -> dict[str, str]:
    response = requests.post(
        f"{demo['url']}/auth/token",
        json={"username": user, "password": OTHERS[user]},
        timeout=E2E_TIMEOUT_S,
    )
    assert response.ok, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_use_case_shows_only_to_users_the_auth_manager_lets_read_all_its_dags(demo):
    auditor = _headers_of(demo, AUDITOR)
    # the auth manager is in effect: Airflow's own API refuses the auditor that DAG
    dag = requests.get(f"{demo['url']}/api/v2/dags/{NAME}__train", headers=auditor, timeout=E2E_TIMEOUT_S)
    assert dag.status_code == 403
    found = _get(demo, "/api/use-cases", headers=auditor).json()
    assert found["use_cases"] == [] and [b["file"] for b in found["broken"]] == ["fraud.yaml"]
    assert _get(demo, "/", headers=auditor).status_code == 200  # the broken spec is still theirs to see
    for path in _paths(demo)[1:]:
        if path not in ("/static/plotly.min.js", "/api/use-cases"):
            response = _get(demo, path, headers=auditor)
            assert response.status_code == 403 and NAME in response.json()["detail"], path


def test_a_user_who_may_read_no_dag_gets_403_from_every_page_as_from_airflows_api(demo):
    outsider = _headers_of(demo, OUTSIDER)
    dags = requests.get(f"{demo['url']}/api/v2/dags", headers=outsider, timeout=E2E_TIMEOUT_S)
    assert dags.status_code == 403
    for path in _paths(demo):
        expected = 200 if path == "/static/plotly.min.js" else 403  # the script holds no data
        assert _get(demo, path, headers=outsider).status_code == expected, path


def test_no_secret_appears_in_any_response(demo):
    for path in _paths(demo):
        body = _get(demo, path, headers=demo["headers"]).text
        for secret in (*SECRETS.values(), demo["env"]["AIRFLOW__API_AUTH__JWT_SECRET"], PASSWORD):
            assert secret not in body, path


def test_the_list_says_what_the_lake_and_the_registry_hold(demo):
    found = _get(demo, "/api/use-cases", headers=demo["headers"]).json()
    (case,) = found["use_cases"]
    lake, days = _lake(demo), _lake(demo).partitions(f"{NAME}/raw")
    champion = _client(demo).get_model_version_by_alias(f"cormorant.{NAME}", "champion")
    assert (case["name"], case["days"], case["latest"]["landed"]) == (NAME, len(days), days[-1])
    assert case["champion"]["version"] == str(champion.version)
    assert case["latest"]["scored"] == lake.partitions(f"{NAME}/predictions")[-1]
    # the demo's last day is drifted: red, saying which day and features
    assert (
        case["drift"] == "drift" and case["mark"] == "red" and case["why"].startswith(f"{days[-1]} drifted")
    )
    (broken,) = found["broken"]
    assert broken["file"] == "fraud.yaml" and "features" in broken["error"]
    assert str(demo["home"].parent) not in json.dumps(found)  # no server path


def test_one_use_case_panels_match_the_manifests_reports_and_runs(demo):
    u = _get(demo, f"/api/use-cases/{NAME}", headers=demo["headers"]).json()
    lake, client = _lake(demo), _client(demo)
    for day in u["timeline"]:
        manifest = lake.require(f"{NAME}/raw", day["day"])
        assert day["rows"] == manifest.row_count
        assert day["ingest_run"] == f"/dags/{manifest.lineage['dag_id']}/runs/{manifest.lineage['run_id']}"
        predictions = lake.manifest(f"{NAME}/predictions", day["day"])
        assert day["predictions"] == (predictions.row_count if predictions else None)
        performance = lake.read_json(f"{NAME}/reports/performance/ds={day['day']}/report.json")
        if performance:
            assert day["realized_metric"] == performance["metrics"][u["metric"]]
    assert u["timeline"][-1]["drift"] == "drift" and u["timeline"][-1]["drifted_features"]
    assert u["performance"]["days"] and len(u["performance"]["realized"]) == len(u["performance"]["holdout"])
    heat = u["drift_heatmap"]
    assert len(heat["psi"]) == len(heat["days"]) and all(len(r) == len(heat["features"]) for r in heat["psi"])
    versions = client.search_model_versions(f"name = 'cormorant.{NAME}'")
    assert sorted(v["version"] for v in u["champions"]) == sorted(str(v.version) for v in versions)
    (champion,) = [v for v in u["champions"] if v["champion"]]
    assert champion["promotion"].startswith("promoted") and champion["blessing"] == "passed"
    board = u["leaderboard"]
    runs = client.search_runs(
        [client.get_experiment_by_name(f"cormorant/{NAME}").experiment_id],
        f"tags.`cormorant.sweep_key` = '{board['sweep']}' and tags.`cormorant.trial_id` != ''",
    )
    assert {t["run_id"] for t in board["trials"]} == {r.info.run_id for r in runs}
    means = [t["cv_mean"] for t in board["trials"]]
    assert means == sorted(means, reverse=True)


def test_reports_are_served_and_anything_else_is_not_found(demo):
    day = _day(demo)
    drift = _get(demo, f"/api/use-cases/{NAME}/reports/drift/{day}", headers=demo["headers"])
    assert drift.headers["content-type"].startswith("text/html") and "drift" in drift.text.lower()
    for path in (
        f"/api/use-cases/{NAME}/reports/drift/..%2F..%2Fetc",
        f"/api/use-cases/{NAME}/reports/secrets/{day}",
        "/api/use-cases/nope",
        f"/api/use-cases/{NAME}/reports/performance/1999-01-01",
    ):
        assert _get(demo, path, headers=demo["headers"]).status_code == 404, path


def test_a_person_opens_the_cormorant_entry_and_follows_a_link_to_a_dag_run(demo):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=E2E_TIMEOUT_S * 1000)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(E2E_TIMEOUT_S * 1000)
        try:
            page.goto(f"{demo['url']}/")
            page.get_by_label("Username").fill(USER)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("link", name="Cormorant").first.click()  # the navigation entry
            view = page.frame_locator("iframe")
            row = view.locator(f'[data-testid="use-case"][data-name="{NAME}"]')
            expect(row).to_be_visible()
            # Airflow's UI writes the view's own path into the page's URL once the view has loaded (a
            # link to it opens the same page of the view); before that the URL is the entry's
            expect(page).to_have_url(f"{demo['url']}/plugin/cormorant/cormorant/")
            expect(row.locator('[data-testid="why"]')).to_contain_text("drifted")
            expect(view.locator('[data-testid="broken"]')).to_contain_text("fraud.yaml")
            champion = _client(demo).get_model_version_by_alias(f"cormorant.{NAME}", "champion")
            expect(row.locator('[data-testid="champion"]')).to_contain_text(f"v{champion.version}")
            page.screenshot(path=ARTIFACTS / "use-cases.png", full_page=True)

            # a link to a page of the view inside Airflow's UI, as that URL gives it, opens that page there
            page.goto(f"{demo['url']}/plugin/cormorant/cormorant/use-cases/{NAME}")
            expect(view.locator("body[data-ready=true]")).to_be_attached()
            expect(view.locator('[data-testid="day"]').first).to_be_visible()

            page.goto(f"{demo['url']}/cormorant/use-cases/{NAME}")  # the use case page on its own
            expect(page.locator("body[data-ready=true]")).to_be_attached()
            days = _lake(demo).partitions(f"{NAME}/raw")
            expect(page.locator('[data-testid="day"]')).to_have_count(len(days))
            expect(page.locator('[data-testid="heatmap"] .main-svg').first).to_be_visible()  # Plotly drew it
            expect(page.locator('[data-testid="performance"] .main-svg').first).to_be_visible()
            expect(page.locator('[data-testid="leaderboard-chart"] .main-svg').first).to_be_visible()
            champion = _client(demo).get_model_version_by_alias(f"cormorant.{NAME}", "champion")
            expect(page.locator('[data-testid="version"].champion')).to_have_attribute(
                "data-version", str(champion.version)
            )
            last_day = page.locator(f'[data-testid="day"][data-day="{days[-1]}"]')
            rows = _lake(demo).require(f"{NAME}/raw", days[-1]).row_count
            expect(last_day.locator('[data-testid="rows"]')).to_have_text(str(rows))
            expect(last_day.locator('[data-testid="drift"]')).to_contain_text("drift")
            expect(last_day.locator('[data-testid="validation"]')).to_have_text("passed")
            page.screenshot(path=ARTIFACTS / "use-case.png", full_page=True)

            last = page.locator(f'[data-testid="day"][data-day="{days[-1]}"] td').first.locator("a")
            last.click()
            manifest = _lake(demo).require(f"{NAME}/raw", days[-1])
            expect(page).to_have_url(
                f"{demo['url']}/dags/{manifest.lineage['dag_id']}/runs/{manifest.lineage['run_id']}"
            )
            expect(page.get_by_text(manifest.lineage["run_id"]).first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "dag-run.png", full_page=True)
        except Exception:
            page.screenshot(path=ARTIFACTS / "failure.png", full_page=True)
            (ARTIFACTS / "failure.html").write_text(page.content())
            raise
        finally:
            browser.close()
    assert {p.name for p in ARTIFACTS.iterdir()} == {"use-cases.png", "use-case.png", "dag-run.png"}


def test_the_pages_load_their_script_from_wherever_airflow_is_served(demo):
    """Behind a proxy that serves Airflow under a path prefix, a page's script must resolve under that
    prefix: it used to be loaded from ``/cormorant/static/...``, outside it, and the charts failed."""
    import re
    from urllib.parse import urljoin

    proxied = "https://gateway.example/airflow"
    for path in ("/", f"/use-cases/{NAME}"):
        html = _get(demo, path, headers=demo["headers"]).text
        sources = re.findall(r'<script src="([^"]+)"', html)
        assert sources, path
        for src in sources:
            url = urljoin(f"{proxied}/cormorant{path}", src)
            assert url.startswith(f"{proxied}/cormorant/"), (path, src, url)
            served = _get(demo, url.removeprefix(f"{proxied}/cormorant"), headers=demo["headers"])
            assert served.status_code == 200 and "javascript" in served.headers["content-type"], url


def test_the_demo_says_where_its_time_went_and_the_pipeline_benchmark_reads_it(demo):
    """`make demo` prints its pipeline time against the compute inside it and where the rest went, and
    keeps both (what `make bench`'s pipeline benchmark reads): 22 runs, each with its tasks' time, and
    parts that add up to no more than the wall time."""
    script = PROJECT_ROOT / "scripts" / "benchmark_pipeline.py"
    benchmark_pipeline = importlib.util.module_from_spec(
        spec := importlib.util.spec_from_file_location("benchmark_pipeline", script)
    )
    spec.loader.exec_module(benchmark_pipeline)
    assert re.search(r"pipeline time / compute: [\d.]+x", demo["demo_stdout"])
    assert re.search(r"Where it went: the tasks [\d.]+ s; .* of 22 run\(s\)", demo["demo_stdout"])
    kept = json.loads((demo["home"] / "pipeline-time.json").read_text())
    assert len(kept["runs"]) == 22 and all(run["task_seconds"] > 0 for run in kept["runs"])
    figures = benchmark_pipeline.figures(demo["home"], demo["demo_stdout"], 1)
    assert (figures["days"], figures["dag_runs"]) == (4, 22)
    assert figures["rows"] == sum(rows_for_day(date(2024, 3, 1) + timedelta(days=i)) for i in range(4))
    assert figures["ratio"] == pytest.approx(figures["seconds"] / figures["compute_seconds"])
    parts = figures["task_seconds"] + figures["sweep_seconds"] + figures["airflow_seconds"]
    assert parts + figures["between_runs_seconds"] == pytest.approx(figures["seconds"], abs=0.01)
    assert 0 <= figures["warm_up_wait_seconds"] <= figures["sweep_seconds"]
