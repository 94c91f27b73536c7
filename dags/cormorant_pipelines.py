"""Cormorant: five DAGs (ingest, validate, train, predict, drift) for every model spec.

Specs are the YAML files in ``$CORMORANT_SPECS_DIR`` (default ``include/specs``); adding a use case
needs no Python. A malformed spec shows as an import error of this file naming the spec file and
field, and the other specs' DAGs still load.
"""

from __future__ import annotations

from airflow.sdk import DAG

from cormorant_provider.dag_factory import load_dags

dags: dict[str, DAG] = load_dags()
globals().update(dags)
