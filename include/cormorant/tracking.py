"""MLflow helpers: one experiment per spec, with its artifacts where the settings say."""

from __future__ import annotations

import json
import logging

from cormorant.config import Settings
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)


def configure(settings: Settings) -> None:
    """Point the MLflow client at the settings' tracking server (or SQLite store)."""
    import mlflow

    if settings.mlflow_sqlite_path is not None:
        settings.mlflow_sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


def ensure_experiment(spec: ModelSpec, settings: Settings) -> str:
    """The spec's experiment id, creating it (with the configured artifact location) if needed."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(settings)
    client = MlflowClient()
    found = client.get_experiment_by_name(spec.experiment_name)
    if found is not None:
        return found.experiment_id
    try:
        root = settings.mlflow_artifact_uri
        location = f"{root.rstrip('/')}/{spec.name}" if root else None
        return client.create_experiment(
            spec.experiment_name, artifact_location=location, tags={"cormorant.spec": spec.name}
        )
    except MlflowException:  # created concurrently by another trial
        found = client.get_experiment_by_name(spec.experiment_name)
        if found is None:
            raise
        return found.experiment_id


def start_sweep_run(
    spec: ModelSpec,
    settings: Settings,
    *,
    end_partition: str,
    sweep_key: str,
    tags: dict[str, str] | None = None,
) -> str:
    """The sweep's parent run; every trial logs a child run under it. A sweep with the same key still
    running (a retried plan, or trials started ahead of the DAG by the in-process runner) keeps its
    parent run instead of opening a second one."""
    from mlflow import MlflowClient

    experiment_id = ensure_experiment(spec, settings)
    client = MlflowClient()
    tags = {
        "cormorant.spec": spec.name,
        "cormorant.sweep_key": sweep_key,
        "cormorant.role": "sweep",
        **(tags or {}),
    }
    running = client.search_runs(
        [experiment_id],
        f"tags.`cormorant.sweep_key` = '{sweep_key}' and tags.`cormorant.role` = 'sweep' "
        "and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if running:
        run_id = running[0].info.run_id
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        return run_id
    return client.create_run(experiment_id, run_name=f"sweep {end_partition}", tags=tags).info.run_id


def finish_sweep_run(settings: Settings, run_id: str, summary: dict[str, object]) -> None:
    """Record the sweep's outcome on its parent run and close it."""
    from mlflow import MlflowClient

    configure(settings)
    client = MlflowClient()
    for key in ("cv_mean", "cv_std", "holdout_metric"):
        value = summary.get(key)
        if isinstance(value, (int, float)):
            client.log_metric(run_id, f"best_{key}", float(value))
    for key in ("best_trial", "family", "version", "promoted", "champion_version", "failed_trials"):
        client.set_tag(run_id, f"cormorant.{key}", str(summary.get(key)))
    causes = summary.get("failure_causes") or {}
    if causes:
        client.set_tag(run_id, "cormorant.failure_causes", json.dumps(causes, sort_keys=True)[:5000])
    client.set_terminated(run_id, "FINISHED")


def find_cached_trial(experiment_name: str, settings: Settings, cache_key: str) -> dict[str, object] | None:
    """The result of a finished trial run with the same cache key, or None (trial caching)."""
    import mlflow
    from mlflow import MlflowClient

    if not cache_key:
        return None
    configure(settings)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`cormorant.cache_key` = '{cache_key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    result = mlflow.artifacts.load_dict(f"runs:/{runs[0].info.run_id}/result.json")
    return {**result, "cached": True}


def prepare(spec: ModelSpec, settings: Settings) -> bool:
    """Make the store ready for a pipeline run, ahead of it: its tables (a new SQLite store's are
    created and migrated then, 1.8 s here) and the spec's experiment; whether the spec has a champion.

    ``cormorant run`` runs this in a process of its own (``python -m cormorant.tracking SPEC``) beside
    ``airflow db migrate``, before it starts its warm trainers: they open a store that exists."""
    from cormorant.errors import NothingToDo
    from cormorant.inference import resolve_model

    ensure_experiment(spec, settings)
    try:
        resolve_model(spec, settings)
    except NothingToDo:
        return False
    return True


if __name__ == "__main__":
    import sys

    from cormorant.spec import load_spec

    print(json.dumps({"champion": prepare(load_spec(sys.argv[1]), Settings.from_env())}))
