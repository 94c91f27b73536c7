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
    mlflow_artifact_uri: str
    trial_backend: str

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
        return cls(
            home=home,
            specs_dir=Path(env.get("CORMORANT_SPECS_DIR") or PROJECT_ROOT / "include" / "specs"),
            lake_uri=env.get("CORMORANT_LAKE_URI") or (home / "lake").as_uri(),
            lake_conn_id=env.get("CORMORANT_LAKE_CONN_ID") or None,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            mlflow_artifact_uri=env.get("CORMORANT_MLFLOW_ARTIFACT_URI")
            or (home / "mlflow" / "artifacts").as_uri(),
            trial_backend=backend,
        )


def embedded_environment(home: Path, *, specs_dir: Path | None = None) -> dict[str, str]:
    """Environment variables that run Airflow and Cormorant on one machine under ``home``.

    Airflow's metadata database is SQLite, the warehouse is a SQLite file reached through the
    ``cormorant_warehouse`` connection, the lake is a local folder and MLflow uses a SQLite store.
    """
    home = home.resolve()
    warehouse = home / "warehouse.db"
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
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
