"""What every Cormorant operator shares: its spec, settings, lake and partitions, and one error policy.

The policy (:func:`fails_fast`): a run whose conf has a key that is not a param is refused before
anything happens; a deterministic Cormorant error (bad spec, changed source, failed validation, bad
param, bad data in a trial) fails the task at once with its message at ERROR, because a retry would fail
the same way minutes later; a documented "nothing to do" skips; anything else (a connection reset, a
timeout, a lost worker) goes to the task's retry policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator

from cormorant_provider.partitions import resolve_partitions

if TYPE_CHECKING:
    from airflow.sdk import Context

    from cormorant.config import Settings
    from cormorant.lake import Lake
    from cormorant.spec import ModelSpec

R = TypeVar("R")


def unknown_conf_keys(conf: Mapping[str, Any] | None, params: Mapping[str, Any]) -> list[str]:
    """One message per conf key that is not a param of the DAG, with the closest param."""
    from cormorant.errors import closest

    names = sorted(params)
    return [
        f"conf key {key!r} is not a param of this DAG{closest(key, names)} (params: {', '.join(names)})"
        for key in sorted(conf or {})
        if key not in params
    ]


def fails_fast(execute: Callable[[Any, Context], R]) -> Callable[[Any, Context], R]:
    """Wrap an operator's ``execute`` with Cormorant's error policy (see the module docstring)."""

    @functools.wraps(execute)
    def wrapper(self: BaseOperator, context: Context) -> R:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from cormorant.errors import CormorantError, NothingToDo

        dag_run = context.get("dag_run")
        # The DAG's declared params: Airflow merges the run's conf into context["params"], unknown keys too.
        dag = self.dag if self.has_dag() else None
        declared = (dag.params if dag is not None else None) or context.get("params") or {}
        problems = unknown_conf_keys(getattr(dag_run, "conf", None), declared)
        if problems:
            message = f"{self.dag_id}: the run's conf is refused:\n- " + "\n- ".join(problems)
            self.log.error("%s", message)
            raise AirflowFailException(message)
        try:
            return execute(self, context)
        except NothingToDo as e:
            self.log.warning("Nothing to do: %s", e)
            raise AirflowSkipException(str(e)) from e
        except CormorantError as e:
            if e.retryable:
                self.log.warning("%s (a retry may help: the task's retry policy applies)", e)
                raise
            self.log.error("%s", e)
            raise AirflowFailException(str(e)) from e

    return wrapper


class CormorantOperator(BaseOperator):
    """Base for operators that act on one model spec.

    :param spec_path: the spec YAML file (templated).
    """

    template_fields: Sequence[str] = ("spec_path",)
    ui_color = "#d6eaf8"

    def __init__(self, *, spec_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path

    @cached_property
    def spec(self) -> ModelSpec:
        from cormorant.spec import load_spec

        return load_spec(self.spec_path)

    @cached_property
    def settings(self) -> Settings:
        from cormorant.config import Settings

        return Settings.from_env()

    @cached_property
    def lake(self) -> Lake:
        """The lake through Airflow's ObjectStoragePath, so S3 credentials come from a connection."""
        from cormorant_provider.storage import airflow_lake

        return airflow_lake(self.settings)

    # Days a scheduled run looks back (labels and performance: the day whose labels became final).
    lags_behind_labels = False

    def partitions(self, context: Context) -> list[str]:
        lag = self.spec.target.available_after_days if self.lags_behind_labels else 0
        return resolve_partitions(context, self.spec.source.timezone, lag)

    def per_partition(self, context: Context, work: Callable[[str], R]) -> list[R]:
        """``work(partition)`` for each of the run's partitions, passing over those with nothing to do
        (an empty day) with the reason in the log; when none had anything to do, the task is skipped
        with the reasons."""
        from cormorant.errors import NothingToDo

        results, reasons = [], []
        for partition in self.partitions(context):
            try:
                results.append(work(partition))
            except NothingToDo as e:
                self.log.warning("Nothing to do for %s: %s", partition, e)
                reasons.append(str(e))
        if reasons and not results:
            raise NothingToDo("; ".join(reasons))
        return results

    @staticmethod
    def lineage(context: Context) -> dict[str, Any]:
        ti = context["ti"]
        return {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "try_number": ti.try_number,
            "map_index": ti.map_index,
        }

    def emit(self, context: Context, **extra: Any) -> None:
        """Attach ``extra`` (references only) to the events of this task's outlet assets."""
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra

    # -- OpenLineage: the openlineage provider's listener calls these once the task ends (nothing runs
    # unless a transport is configured). Each operator names what it read and wrote in openlineage_io.
    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        """(inputs, outputs), each an OpenLineage dataset or a ``(namespace, name)`` pair
        (:mod:`cormorant.lineage`)."""
        return [], []

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self._operator_lineage(wrote=True)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._operator_lineage(wrote=False)  # what it read; a failed task commits nothing

    def _operator_lineage(self, *, wrote: bool) -> Any:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        def dataset(found: Any) -> Any:
            return Dataset(namespace=found[0], name=found[1]) if isinstance(found, tuple) else found

        inputs, outputs = self.openlineage_io()
        return OperatorLineage(
            inputs=[dataset(d) for d in inputs], outputs=[dataset(d) for d in outputs] if wrote else []
        )

    def lake_dataset(self, dataset: str) -> tuple[str, str]:
        from cormorant.lineage import lake_dataset

        return lake_dataset(self.lake.uri(dataset))

    def model_dataset(self, version: str | None) -> list[tuple[str, str]]:
        from cormorant.lineage import model_version

        if version is None:
            return []
        return [model_version(self.settings.mlflow_tracking_uri, self.spec.registered_model_name, version)]

    @staticmethod
    def sql_datasets(hook: Any, conn_id: str, relation: Any) -> list[Any]:
        """The tables a source relation (a spec's ``table`` or ``sql``) reads, named by the openlineage
        provider's SQL parser through the hook (PostgreSQL, Redshift); an SQLite table by its file."""
        from airflow.providers.openlineage.sqlparser import SQLParser, get_openlineage_facets_with_sql

        from cormorant.lineage import sqlite_table

        sql = relation.sql or f"SELECT * FROM {relation.table}"
        connection = hook.get_connection(conn_id)
        if connection.conn_type == "sqlite":
            tables = SQLParser(dialect="sqlite").parse(sql)
            return [
                sqlite_table(connection.host, t.qualified_name) for t in (tables.in_tables if tables else [])
            ]
        found = get_openlineage_facets_with_sql(
            hook=hook, sql=sql, conn_id=conn_id, database=None, use_connection=False, connection=connection
        )
        return list(found.inputs) if found else []
