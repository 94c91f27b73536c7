"""An auth manager for tests: Airflow's simple auth manager, except that it denies the DAGs named for a
user in ``CORMORANT_TEST_DENIED_DAGS`` (JSON: user -> fnmatch patterns of DAG ids; ``"*"`` denies every
DAG, and DAG-wide questions without an id too). Set it with
``AIRFLOW__CORE__AUTH_MANAGER=denying_auth_manager.DenyingAuthManager`` and this folder on PYTHONPATH."""

from __future__ import annotations

import json
import os
from fnmatch import fnmatch

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class DenyingAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        denied = json.loads(os.environ.get("CORMORANT_TEST_DENIED_DAGS", "{}")).get(user.get_name(), [])
        dag_id = details.id if details is not None else None
        if any(pattern == "*" or (dag_id and fnmatch(dag_id, pattern)) for pattern in denied):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
