"""The Cormorant view's panels: one read-only function per panel, each returning a JSON-ready document.

The Airflow UI plugin (``plugins/cormorant_provider/view.py``) serves them; nothing here imports
Airflow. Every panel reads the lake's manifests and reports and MLflow's registry and runs, never the
Parquet data, so a use case with a year of days renders from a few hundred small files.

- :func:`use_cases`: every spec with its owner, tags, champion, the latest day at each stage, its drift
  and performance verdicts and a red/amber/green mark saying why; broken specs with their error.
- :func:`use_case`: one spec's page, composed of its panels: :func:`timeline` (the days),
  :func:`drift_heatmap` (feature x day PSI), :func:`performance_series` (realized metric against the
  holdout metric), :func:`champion_history` and :func:`leaderboard` (the latest sweep), with links;
  :func:`report` serves a day's report.

Links: Airflow's UI paths (``/dags/<dag>/runs/<run>``, relative to the Airflow base URL), the MLflow UI
when the tracking URI is a server (credentials removed), and each report through the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import ModelSpec, SpecError, discover_specs, invalid_spec_dag_id

GREEN, AMBER, RED = "green", "amber", "red"
REPORTS = ("validation", "drift", "performance")  # the reports a day links to (see :func:`report`)


def timeline(spec: ModelSpec, lake: Lake) -> list[dict[str, Any]]:
    """The timeline panel: each landed day's state, read from its manifests and reports (in parallel:
    on S3 each is a request)."""
    from cormorant.summary import day_reports
    from cormorant.warehouse import raw_dataset

    days = lake.partitions(raw_dataset(spec))
    with ThreadPoolExecutor(8, thread_name_prefix="cormorant-view") as pool:
        return list(pool.map(lambda day: _day(spec, lake, day, day_reports(spec, lake, day)), days))


def _run_link(lineage: dict[str, Any] | None) -> str | None:
    if not lineage or not lineage.get("dag_id") or not lineage.get("run_id"):
        return None
    return f"/dags/{lineage['dag_id']}/runs/{lineage['run_id']}"


def _day(spec: ModelSpec, lake: Lake, day: str, found: dict[str, Any]) -> dict[str, Any]:
    raw, validation, predictions = found["raw"], found["validation"], found["predictions"]
    drift, labels, performance = found["drift"], found["labels"], found["performance"]
    metric = spec.training.metric
    return {
        "day": day,
        "rows": raw.row_count if raw else None,
        "ingest_run": _run_link(raw.lineage if raw else None),
        "validation": None if validation is None else ("passed" if validation.get("success") else "failed"),
        "failed_expectations": [
            {"expectation": f.get("expectation"), "column": f.get("column"), "message": f.get("detail")}
            for f in (validation or {}).get("failures", [])
        ],
        "predictions": predictions.row_count if predictions else None,
        "model_version": (predictions.source.get("model") or {}).get("version") if predictions else None,
        "predict_run": _run_link(predictions.lineage if predictions else None),
        "drift": None if drift is None else drift.get("verdict"),
        "drifted_features": (drift or {}).get("drifted_features") or [],
        "psi": {c: s.get("psi") for c, s in ((drift or {}).get("features") or {}).items()},
        "labels": None if labels is None else ("passed" if labels.get("success") else "failed"),
        "performance": None if performance is None else performance.get("verdict"),
        "realized_metric": ((performance or {}).get("metrics") or {}).get(metric),
        "holdout_metric": (performance or {}).get("holdout"),
        "reports": {kind: f"reports/{kind}/{day}" for kind in REPORTS if found[kind] is not None},
    }


def _mlflow_ui(settings: Settings) -> str | None:
    from cormorant.lineage import without_credentials

    uri = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    return without_credentials(uri).rstrip("/") if uri.startswith(("http://", "https://")) else None


def champion_history(spec: ModelSpec, settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """The champion history panel: every registered version, oldest first (when, metric, blessing,
    approval, the promotion decision and why), and the champion's version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from cormorant.registry import current_champion
    from cormorant.tracking import configure

    configure(settings)
    client = MlflowClient()
    name, metric = spec.registered_model_name, spec.training.metric
    try:
        found = client.search_model_versions(f"name = '{name}'", max_results=10_000)
    except MlflowException:
        found = []
    ui = _mlflow_ui(settings)
    # search results do not carry aliases on every store: ask for the champion itself
    found_champion = current_champion(client, name) if found else None
    champion = None if found_champion is None else str(found_champion.version)
    versions = [
        {
            "version": str(v.version),
            "created": v.creation_timestamp,
            "family": v.tags.get("cormorant.family"),
            "trial": v.tags.get("cormorant.trial_id"),
            "holdout_metric": _float(v.tags.get(f"holdout_{metric}")),
            "promotion": v.tags.get("cormorant.promotion"),
            "blessing": v.tags.get("cormorant.blessing"),
            "approval": v.tags.get("cormorant.approval"),
            "selection": v.tags.get("cormorant.selection"),
            "champion": str(v.version) == champion,
            "run_id": v.run_id,
            "mlflow": f"{ui}/#/models/{name}/versions/{v.version}" if ui else None,
        }
        for v in found
    ]
    versions.sort(key=lambda v: int(v["version"]))
    return versions, champion


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _latest(days: list[dict[str, Any]], key: str, value: Any = None) -> str | None:
    hits = [d["day"] for d in days if (d[key] is not None if value is None else d[key] == value)]
    return hits[-1] if hits else None


def _mark(days: list[dict[str, Any]], champion: str | None) -> tuple[str, str]:
    """Red, amber or green for a use case, with the reason."""
    if not days:
        return AMBER, "no day has landed yet"
    last = days[-1]
    checked = [d for d in days if d["drift"] is not None]
    judged = [d for d in days if d["performance"] not in (None, "not judged")]
    if last["validation"] == "failed":
        return RED, f"{last['day']} failed validation"
    if judged and judged[-1]["performance"] == "degraded":
        return RED, f"realized {judged[-1]['day']}: degraded against the holdout"
    if checked and checked[-1]["drift"] == "drift":
        return RED, f"{checked[-1]['day']} drifted: {', '.join(checked[-1]['drifted_features']) or 'score'}"
    if champion is None:
        return AMBER, "no champion yet"
    if last["validation"] is None:
        return AMBER, f"{last['day']} not validated yet"
    if last["predictions"] is None:
        return AMBER, f"{last['day']} not scored yet"
    return GREEN, f"{last['day']} landed, passed and scored"


def _heading(spec: ModelSpec, days: list[dict[str, Any]], champion: str | None) -> dict[str, Any]:
    """What the list's row and the page both start with: who and what, and the mark with its reason."""
    mark, why = _mark(days, champion)
    return {
        "name": spec.name,
        "description": spec.description,
        "owner": spec.owner,
        "tags": list(spec.tags),
        "metric": spec.training.metric,
        "mark": mark,
        "why": why,
    }


def summarize(spec: ModelSpec, lake: Lake, settings: Settings) -> dict[str, Any]:
    """One use case's row in the list (see :func:`use_cases`)."""
    days = timeline(spec, lake)
    versions, champion = champion_history(spec, settings)
    checked = [d for d in days if d["drift"] is not None]
    judged = [d for d in days if d["performance"] is not None]
    current = next((v for v in versions if v["version"] == champion), None)
    return {
        **_heading(spec, days, champion),
        "champion": None
        if current is None
        else {k: current[k] for k in ("version", "family", "holdout_metric", "mlflow")},
        "versions": len(versions),
        "days": len(days),
        "latest": {
            "landed": _latest(days, "rows"),
            "validated": _latest(days, "validation", "passed"),
            "scored": _latest(days, "predictions"),
            "checked": _latest(days, "drift"),
            "measured": _latest(days, "realized_metric"),
        },
        "drift": checked[-1]["drift"] if checked else None,
        "performance": judged[-1]["performance"] if judged else None,
    }


def use_cases(
    settings: Settings, lake: Lake, readable: Callable[[set[str]], set[str]] | None = None
) -> dict[str, Any]:
    """The list page: every spec in ``settings.specs_dir`` (see the module docstring).

    ``readable`` filters DAG ids to those the viewer may read (the auth manager's); a use case shows only
    when all of its DAGs are readable, a broken spec only when the DAG id its file stands for is. Broken
    specs name their file, never the folder it lies in.
    """
    found = visible_specs(settings, readable)
    specs = [s for s in found.values() if not isinstance(s, SpecError)]
    broken = [
        {"file": path.name, "error": error.describe(path.name)}
        for path, error in found.items()
        if isinstance(error, SpecError)
    ]
    return {"use_cases": [summarize(s, lake, settings) for s in specs], "broken": broken}


def spec_dag_ids(path: Path, spec: ModelSpec | SpecError) -> list[str]:
    """The DAG ids a spec file stands for: its DAGs, or its placeholder when it is malformed."""
    return [invalid_spec_dag_id(path)] if isinstance(spec, SpecError) else spec.dag_ids


def visible_specs(
    settings: Settings, readable: Callable[[set[str]], set[str]] | None = None
) -> dict[Path, ModelSpec | SpecError]:
    """The spec files (parsed, or their error) whose DAGs ``readable`` lets the viewer read (all of them
    with no ``readable``)."""
    found = discover_specs(settings.specs_dir)
    if readable is None:
        return found
    allowed = readable({d for path, spec in found.items() for d in spec_dag_ids(path, spec)})
    return {p: s for p, s in found.items() if set(spec_dag_ids(p, s)) <= allowed}


def find_spec(settings: Settings, name: str) -> ModelSpec | None:
    for spec in discover_specs(settings.specs_dir).values():
        if not isinstance(spec, SpecError) and spec.name == name:
            return spec
    return None


def leaderboard(spec: ModelSpec, settings: Settings) -> dict[str, Any]:
    """The latest sweep's trials (MLflow child runs of the newest sweep run): CV mean and spread, the
    chosen trial and the selection rule's reason."""
    from mlflow import MlflowClient

    from cormorant.tracking import configure

    configure(settings)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(spec.experiment_name)
    if experiment is None:
        return {"sweep": None, "trials": []}
    metric = spec.training.metric
    (latest,) = client.search_runs(
        [experiment.experiment_id],
        "tags.`cormorant.trial_id` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    ) or [None]
    if latest is None:
        return {"sweep": None, "trials": []}
    sweep = latest.data.tags.get("cormorant.sweep_key")
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`cormorant.sweep_key` = '{sweep}' and tags.`cormorant.trial_id` != ''",
        max_results=1000,
    )
    ui = _mlflow_ui(settings)
    trials = sorted(
        (
            {
                "trial": r.data.tags.get("cormorant.trial_id"),
                "family": r.data.tags.get("cormorant.family"),
                "params": {k: v for k, v in r.data.params.items() if k not in ("family", "folds", "seed")},
                "cv_mean": r.data.metrics.get(f"cv_{metric}_mean"),
                "cv_std": r.data.metrics.get(f"cv_{metric}_std"),
                "holdout": r.data.metrics.get(f"holdout_{metric}"),
                "status": r.info.status,
                "run_id": r.info.run_id,
                "mlflow": f"{ui}/#/experiments/{experiment.experiment_id}/runs/{r.info.run_id}"
                if ui
                else None,
            }
            for r in runs
        ),
        key=lambda t: (
            t["cv_mean"] is None,
            -(t["cv_mean"] or 0) * (1 if spec.metric_higher_is_better else -1),
        ),
    )
    return {"sweep": sweep, "metric": metric, "trials": trials}


def drift_heatmap(spec: ModelSpec, days: list[dict[str, Any]]) -> dict[str, Any]:
    """The drift heatmap panel: PSI by feature and checked day (from :func:`timeline`)."""
    features, checked = list(spec.feature_columns), [d for d in days if d["drift"] is not None]
    return {
        "features": features,
        "days": [d["day"] for d in checked],
        "psi": [[d["psi"].get(f) for f in features] for d in checked],
    }


def performance_series(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The realized-metric panel: each measured day's metric and the scoring model's holdout metric."""
    measured = [d for d in days if d["realized_metric"] is not None]
    return {
        "days": [d["day"] for d in measured],
        "realized": [d["realized_metric"] for d in measured],
        "holdout": [d["holdout_metric"] for d in measured],
    }


def use_case(spec: ModelSpec, settings: Settings, lake: Lake) -> dict[str, Any]:
    """The page of one use case (see the module docstring)."""
    days = timeline(spec, lake)
    versions, champion = champion_history(spec, settings)
    chosen = next((v for v in reversed(versions) if v["selection"]), None)
    board = leaderboard(spec, settings)
    by_run = {v["run_id"]: v["version"] for v in versions}
    for trial in board["trials"]:
        trial["registered_as"] = by_run.get(trial["run_id"])
    return {
        **_heading(spec, days, champion),
        "champion": champion,
        "dags": {
            stage: f"/dags/{spec.name}__{stage}"
            for stage in ("ingest", "validate", "train", "predict", "drift")
        },
        "timeline": days,
        "drift_heatmap": drift_heatmap(spec, days),
        "performance": performance_series(days),
        "champions": versions,
        "selection": chosen["selection"] if chosen else None,
        "leaderboard": board,
    }


def report(spec: ModelSpec, lake: Lake, kind: str, day: str) -> tuple[bytes, str] | None:
    """A day's report from the lake (bytes and media type), or None."""
    from cormorant.drift import drift_report_prefix
    from cormorant.performance import performance_report_prefix
    from cormorant.validation import validation_report_key

    key = {
        "validation": lambda: validation_report_key(spec, day),
        "drift": lambda: f"{drift_report_prefix(spec, day)}/report.html",
        "performance": lambda: f"{performance_report_prefix(spec, day)}/report.html",
    }[kind]()
    path = lake.path(key)
    if not path.exists():
        return None
    return path.read_bytes(), "application/json" if key.endswith(".json") else "text/html"
