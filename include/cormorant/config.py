"""Deployment settings, read from environment variables in this one place.

Production settings (a PostgreSQL warehouse, an S3 lake, an MLflow server, Kubernetes trials) are
environment variables and Airflow connections, never code changes. Every variable has an embedded
default that runs on one machine with nothing installed but Python.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Trials of a sweep running at once on one machine: the trial task's max_active_tis_per_dag, and what
# the embedded runner runs side by side (cormorant.sweep.local_trial_parallelism).
LOCAL_TRIAL_SLOTS = 4

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WAREHOUSE_CONN_ID = "cormorant_warehouse"
TRIAL_BACKENDS = ("local", "kubernetes")


@dataclass(frozen=True)
class Settings:
    """Where Cormorant keeps things; see :func:`Settings.from_env` for the variables."""

    home: Path
    specs_dir: Path
    lake_uri: str
    lake_conn_id: str | None
    mlflow_tracking_uri: str
    # None: the tracking server's own artifact store (an MLflow server proxies it: mlflow-artifacts:/)
    mlflow_artifact_uri: str | None
    trial_backend: str
    trial_retry_delay_s: int = 60
    # where trials keep the MLP's exported ONNX graph per architecture (cormorant.graph_cache): a folder
    # or a URI; None: off
    graph_cache: str | None = None
    # where people open MLflow's UI (the view links there); None: the tracking URI when it is a server
    mlflow_ui_url: str | None = None

    @property
    def mlflow_served(self) -> bool:
        """Whether MLflow is a tracking server reached over HTTP (no store of its own to open here)."""
        return _served(self.mlflow_tracking_uri)

    @property
    def mlflow_sqlite_path(self) -> Path | None:
        """The SQLite file of a local MLflow store; None for any other store."""
        uri = self.mlflow_tracking_uri
        return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``CORMORANT_*`` and ``MLFLOW_TRACKING_URI``, falling back to the embedded default."""
        env = os.environ if env is None else env
        home = Path(env.get("CORMORANT_HOME") or PROJECT_ROOT / ".cormorant").resolve()
        backend = env.get("CORMORANT_TRIAL_BACKEND", "local")
        if backend not in TRIAL_BACKENDS:
            raise ValueError(
                f"CORMORANT_TRIAL_BACKEND must be one of {', '.join(TRIAL_BACKENDS)}; found {backend!r}"
            )
        tracking_uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        served = _served(tracking_uri)
        lake_uri = env.get("CORMORANT_LAKE_URI") or (home / "lake").as_uri()
        return cls(
            home=home,
            specs_dir=Path(env.get("CORMORANT_SPECS_DIR") or PROJECT_ROOT / "include" / "specs"),
            lake_uri=lake_uri,
            lake_conn_id=env.get("CORMORANT_LAKE_CONN_ID") or None,
            mlflow_tracking_uri=tracking_uri,
            # beside a local store, a local folder; with a tracking server, wherever the server keeps them
            mlflow_artifact_uri=env.get("CORMORANT_MLFLOW_ARTIFACT_URI")
            or (None if served else (home / "mlflow" / "artifacts").as_uri()),
            trial_backend=backend,
            trial_retry_delay_s=int(env.get("CORMORANT_TRIAL_RETRY_DELAY_S", "60")),
            graph_cache=_graph_cache(env.get("CORMORANT_GRAPH_CACHE"), home, lake_uri),
            mlflow_ui_url=env.get("CORMORANT_MLFLOW_UI_URL") or None,
        )


def _graph_cache(configured: str | None, home: Path, lake_uri: str) -> str | None:
    """``CORMORANT_GRAPH_CACHE``: a folder or URI; ``lake``, a folder in the lake (``_cache/onnx-graphs``,
    what trial pods share); ``off``; unset: ``$CORMORANT_HOME/cache/onnx-graphs``."""
    value = (configured or "").strip()
    if not value:
        return str(home / "cache" / "onnx-graphs")
    if value.lower() == "off":
        return None
    if value.lower() == "lake":
        return f"{lake_uri.rstrip('/')}/_cache/onnx-graphs"
    return value if "://" in value else str(Path(value).resolve())


def _served(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://", "databricks"))


def dag_bundles(specs: Path | str | None = None, refresh_interval_s: int = 10) -> str:
    """``[dag_processor] dag_bundle_config_list`` (JSON): Airflow's dags-folder bundle for hand-written
    DAGs, and the specs bundle that gives every spec a DAG file of its own
    (``cormorant_provider.bundle.SpecBundle``; its specs default to ``$CORMORANT_SPECS_DIR``). Its
    refresh only compares a few small files, so it runs often: a new, fixed or deleted spec shows in
    Airflow within ``refresh_interval_s``."""
    import json

    kwargs: dict[str, object] = {"refresh_interval": refresh_interval_s}
    if specs is not None:
        kwargs["specs"] = str(specs)
    return json.dumps(
        [
            {
                "name": "dags-folder",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {},
            },
            {
                "name": "cormorant-specs",
                "classpath": "cormorant_provider.bundle.SpecBundle",
                "kwargs": kwargs,
            },
        ]
    )


def embedded_environment(
    home: Path, *, specs_dir: Path | None = None, spec_file: Path | None = None
) -> dict[str, str]:
    """Environment variables that run Airflow and Cormorant on one machine under ``home``.

    Airflow's metadata database is SQLite, the warehouse is a SQLite file reached through the
    ``cormorant_warehouse`` connection, the lake is a local folder and MLflow uses a SQLite store. The
    specs bundle holds every spec of ``specs_dir``, or ``spec_file`` alone.
    """
    home = home.resolve()
    warehouse = home / "warehouse.db"
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": dag_bundles(spec_file),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "airflow" / "dag-bundles"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}": f'{{"conn_type": "sqlite", "host": "{warehouse}"}}',
        "CORMORANT_HOME": str(home),
        "CORMORANT_SPECS_DIR": str(specs_dir or PROJECT_ROOT / "include" / "specs"),
        "CORMORANT_LAKE_URI": (home / "lake").as_uri(),
        "CORMORANT_TRIAL_BACKEND": "local",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "CORMORANT_MLFLOW_ARTIFACT_URI": (home / "mlflow" / "artifacts").as_uri(),
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "true",
    }


def _json(env: Mapping[str, str], name: str, default: object) -> object:
    import json

    raw = env.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} must be JSON; found {raw!r}: {e}") from e


@dataclass(frozen=True)
class KubernetesSettings:
    """Where and how trial pods run (``CORMORANT_K8S_*`` variables); secrets are referenced by name only."""

    image: str
    namespace: str
    service_account: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, object]]
    affinity: dict[str, object]
    gpu_resource: str
    gpu_type_label: str
    mlflow_secret: str
    storage_secret: str
    pool: str
    startup_timeout_s: int
    schedule_timeout_s: int
    run_as_user: int
    # a ConfigMap holding the spec files, mounted where the image keeps them (None: the image's own)
    specs_config_map: str | None = None
    scratch_size: str = "10Gi"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubernetesSettings:
        env = os.environ if env is None else env
        return cls(
            image=env.get("CORMORANT_TRAINER_IMAGE", "ghcr.io/cormorant/trainer:0.1.0"),
            namespace=env.get("CORMORANT_K8S_NAMESPACE", "cormorant"),
            service_account=env.get("CORMORANT_K8S_SERVICE_ACCOUNT", "cormorant-trainer"),
            node_selector=_json(env, "CORMORANT_K8S_NODE_SELECTOR", {}),  # type: ignore[arg-type]
            tolerations=_json(
                env,
                "CORMORANT_K8S_TOLERATIONS",
                [  # type: ignore[arg-type]
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            ),
            affinity=_json(env, "CORMORANT_K8S_AFFINITY", {}),  # type: ignore[arg-type]
            gpu_resource=env.get("CORMORANT_K8S_GPU_RESOURCE", "nvidia.com/gpu"),
            gpu_type_label=env.get("CORMORANT_K8S_GPU_TYPE_LABEL", "nvidia.com/gpu.product"),
            mlflow_secret=env.get("CORMORANT_K8S_MLFLOW_SECRET", "cormorant-mlflow"),
            storage_secret=env.get("CORMORANT_K8S_STORAGE_SECRET", "cormorant-lake"),
            pool=env.get("CORMORANT_GPU_POOL", "cormorant_gpu"),
            startup_timeout_s=int(env.get("CORMORANT_K8S_STARTUP_TIMEOUT_S", "600")),
            schedule_timeout_s=int(env.get("CORMORANT_K8S_SCHEDULE_TIMEOUT_S", "1800")),
            run_as_user=int(env.get("CORMORANT_K8S_RUN_AS_USER", "50000")),
            specs_config_map=env.get("CORMORANT_K8S_SPECS_CONFIGMAP") or None,
            scratch_size=env.get("CORMORANT_K8S_SCRATCH_SIZE", "10Gi"),
        )
