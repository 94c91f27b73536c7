"""Warehouse to lake."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context


class WarehouseToLakeOperator(CormorantOperator):
    """Copy the run's partition(s) of the spec's source table (or SQL) into the lake.

    Each partition is one day of the spec's partition column, committed atomically; a re-run
    replaces it exactly. Returns the committed partitions' references.

    :param conn_id: the warehouse connection; defaults to the spec's ``source.conn_id`` (templated).
    :param batch_size: rows per fetch and per Parquet row group.
    """

    template_fields: Sequence[str] = (*CormorantOperator.template_fields, "conn_id")

    def __init__(self, *, conn_id: str | None = None, batch_size: int = 50_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.batch_size = batch_size

    @cached_property
    def hook(self) -> DbApiHook:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id or self.spec.source.conn_id).get_hook()

    @property
    def dialect(self) -> str:
        """``postgres`` (the COPY fast path) for a PostgresHook, ``generic`` for any other DbApiHook."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return "postgres" if isinstance(self.hook, PostgresHook) else "generic"

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        from cormorant.warehouse import SourceSchemaError, extract_partition, raw_dataset

        refs = []
        for partition in self.partitions(context):
            try:
                manifest = extract_partition(
                    self.hook.get_conn,
                    self.spec,
                    partition,
                    self.lake,
                    dialect=self.dialect,
                    placeholder=self.hook.placeholder,
                    batch_size=self.batch_size,
                    lineage=self.lineage(context),
                )
            except SourceSchemaError as e:  # a retry cannot fix a changed source
                raise AirflowFailException(str(e)) from e
            self.log.info(
                "Committed %s/ds=%s: %d rows", raw_dataset(self.spec), partition, manifest.row_count
            )
            refs.append(
                {
                    "partition": partition,
                    "rows": manifest.row_count,
                    "content_hash": manifest.content_hash,
                    "uri": self.lake.uri(self.lake.partition_key(raw_dataset(self.spec), partition)),
                }
            )
        self.emit(context, partitions=[r["partition"] for r in refs])
        return refs
