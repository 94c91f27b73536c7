"""The Airflow web UI, driven by Playwright in Debian's headless Chromium against a real API server,
scheduler and DAG processor: a person logs in, opens a Cormorant DAG, fills its typed trigger form and
watches the run succeed. Screenshots of every step are kept in ``test-artifacts/ui/`` (a failure adds
``failure-*.png`` and the page's HTML)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import pytest
from airflow_stack import airflow_stack, manual_runs
from support import E2E_TIMEOUT_S

from cormorant.config import PROJECT_ROOT
from cormorant.synthetic import rows_for_day, seed_sqlite

pytestmark = pytest.mark.e2e
USER = "ui-analyst"
PASSWORD = secrets.token_urlsafe(16)
ARTIFACTS = Path(os.environ.get("CORMORANT_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts")) / "ui"
# Debian's chromium as root on a machine with no route out: no sandbox, no background calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = (
        os.environ.get("CORMORANT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not found:
        message = (
            "no Chromium: install Debian's chromium (scripts/ensure_chromium.sh) or set CORMORANT_CHROMIUM"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-ui")
    seed_sqlite(home / "warehouse.db", [date(2024, 3, 1), date(2024, 3, 2)])
    with airflow_stack(home, users={USER: PASSWORD}, unpause=("churn__ingest",)) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=E2E_TIMEOUT_S * 1000)  # Playwright's own default is 5 s
    executable = _chromium()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(E2E_TIMEOUT_S * 1000)
    page.set_default_navigation_timeout(E2E_TIMEOUT_S * 1000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        page.screenshot(path=ARTIFACTS / f"failure-{request.node.name}.png", full_page=True)
        (ARTIFACTS / f"failure-{request.node.name}.html").write_text(page.content())
    context.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def _log_in(page, password: str = PASSWORD) -> None:
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_the_ui_refuses_a_wrong_password(page, airflow):
    from playwright.sync_api import expect

    page.goto(f"{airflow['url']}/dags")
    expect(page).to_have_url(re.compile(r"/auth/login"))  # not logged in: sent to the login form
    _log_in(page, password="not-the-password")
    expect(page.get_by_text("Invalid credentials")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/auth/login"))
    _shot(page, "00-wrong-password")


def test_log_in_fill_the_trigger_form_and_watch_the_run_succeed(page, airflow):
    from playwright.sync_api import expect

    day = "2024-03-02"
    page.goto(f"{airflow['url']}/dags")
    expect(page).to_have_url(re.compile(r"/auth/login"))
    _shot(page, "01-login")
    _log_in(page)

    # The DAG list shows every stage of the example spec; open ingest.
    expect(page.get_by_role("link", name="churn__ingest", exact=True)).to_be_visible()
    _shot(page, "02-dag-list")
    page.get_by_role("link", name="churn__ingest", exact=True).click()
    expect(page).to_have_url(re.compile(r"/dags/churn__ingest$"))
    expect(page.get_by_role("heading", name="churn__ingest")).to_be_visible()
    expect(page.get_by_role("button", name="Trigger Dag")).to_have_count(1)  # the list has gone

    # The trigger form is built from the DAG's typed Params: titles, descriptions, a date picker.
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    expect(form.get_by_text("Partition date", exact=True)).to_be_visible()
    expect(form.get_by_text("Source table", exact=True)).to_be_visible()
    expect(form.get_by_text(re.compile(r"^The lake partition \(YYYY-MM-DD\)"))).to_be_visible()
    expect(form.locator("#element_partition_date")).to_have_attribute("type", "date")
    _shot(page, "03-trigger-form")

    # A table name carrying SQL is refused by Airflow, the form names the param, and no run is created.
    before = len(manual_runs(airflow, "churn__ingest"))
    form.locator("#element_source_table").fill("customer_activity; DROP TABLE customer_activity")
    form.get_by_role("button", name="Trigger", exact=True).click()
    expect(form.get_by_text(re.compile(r"Invalid input for param source_table"))).to_be_visible()
    _shot(page, "04-refused-sql-in-table-name")
    assert len(manual_runs(airflow, "churn__ingest")) == before

    # Corrected: the partition to land, the spec's own table.
    form.locator("#element_source_table").fill("")
    form.locator("#element_partition_date").fill(day)
    form.get_by_role("button", name="Advanced Options").click()
    expect(form.get_by_text(f'"partition_date": "{day}"')).to_be_visible()  # the conf the form will send
    _shot(page, "05-form-filled")
    form.get_by_role("button", name="Trigger", exact=True).click()

    # The UI moves to the new run, which the scheduler runs to success while the page refreshes itself.
    expect(page).to_have_url(re.compile(r"/dags/churn__ingest/runs/manual__"))
    run_id = unquote(page.url.split("/runs/", 1)[1])
    _shot(page, "06-run-started")
    header = page.get_by_role("heading", name=run_id, exact=True).locator("xpath=..")  # id + state badge
    expect(header).to_contain_text("Success")
    _shot(page, "07-run-succeeded")

    # Its task log, in the UI, reports the committed partition.
    page.get_by_role("link", name="warehouse_to_lake").last.click()
    rows = rows_for_day(date.fromisoformat(day))
    expect(page.get_by_text(f"Committed churn/raw/ds={day}: {rows} rows")).to_be_visible()
    _shot(page, "08-task-log")

    # What the UI showed is what happened: the run carries the form's conf and user, the partition landed.
    (run,) = [r for r in manual_runs(airflow, "churn__ingest") if r["dag_run_id"] == run_id]
    assert run["state"] == "success"
    assert run["conf"] == {"partition_date": day, "source_table": None}
    assert run["triggering_user_name"] == USER
    partition = airflow["home"] / "cormorant" / "lake" / "churn" / "raw" / f"ds={day}"
    assert json.loads((partition / "_manifest.json").read_text())["row_count"] == rows


def test_the_train_form_has_typed_widgets_held_to_the_params_limits(page, airflow):
    from playwright.sync_api import expect

    page.goto(f"{airflow['url']}/dags/churn__train")
    _log_in(page)
    expect(page.get_by_role("heading", name="churn__train")).to_be_visible()
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")

    # Families: a multi-select of the spec's families, labelled, all chosen by default.
    for label in ("Linear baseline", "XGBoost", "PyTorch MLP"):
        expect(form.get_by_label(f"Remove {label}")).to_be_visible()
    form.get_by_label("Remove XGBoost").get_by_role("button").click()
    form.get_by_label("Remove PyTorch MLP").get_by_role("button").click()
    # Numbers: spin buttons that keep a value inside the Param's minimum and maximum.
    folds = form.get_by_role("spinbutton", name="CV folds")
    expect(folds).to_have_value("3")  # the spec's default
    folds.fill("50")
    folds.blur()
    form.locator("#element_partition_date").fill("2024-03-02")
    expect(folds).to_have_value("20")
    _shot(page, "09-train-form")
    form.get_by_role("button", name="Advanced Options").click()
    conf = form.locator(".monaco-editor .view-lines")  # the conf JSON the form will send
    expect(conf).to_contain_text('"folds": 20')  # clamped to the maximum, 50 never leaves the browser
    expect(conf).to_contain_text(re.compile(r'"families":\s*\[\s*"linear"\s*\]'))
    form.get_by_role("button", name="Close").click()
    assert manual_runs(airflow, "churn__train") == []
