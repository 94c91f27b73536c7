"""Warehouse to lake."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context

    from cormorant.spec import ModelSpec


class WarehouseToLakeOperator(CormorantOperator):
    """Copy the run's partition(s) of the spec's source table (or SQL) into the lake.

    Each partition is one day of the spec's partition column, committed atomically; a re-run
    replaces it exactly. Returns the committed partitions' references.

    :param conn_id: the warehouse connection; defaults to the spec's ``source.conn_id`` (templated).
    :param batch_size: rows per fetch and per Parquet row group.
    :param redshift_iam_role: for a Redshift connection, the IAM role UNLOAD writes to the S3 lake with;
        defaults to ``$CORMORANT_REDSHIFT_IAM_ROLE`` (templated).

    PostgreSQL connections stream with ``COPY ... TO STDOUT``; Redshift connections ``UNLOAD`` to
    Parquet in the (S3) lake; any other DbApiHook is read with batched cursors.
    """

    template_fields: Sequence[str] = (
        *CormorantOperator.template_fields,
        "conn_id",
        "redshift_iam_role",
        "source_table",
    )

    def __init__(
        self,
        *,
        conn_id: str | None = None,
        batch_size: int = 50_000,
        redshift_iam_role: str | None = None,
        source_table: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.batch_size = batch_size
        self.redshift_iam_role = redshift_iam_role
        self.source_table = source_table

    @cached_property
    def spec(self) -> ModelSpec:
        """The spec, reading ``source_table`` instead of its own source when one is given."""
        spec = super().spec
        if not self.source_table:
            return spec
        from cormorant.spec import QUALIFIED_IDENTIFIER

        if not QUALIFIED_IDENTIFIER.match(self.source_table):
            from cormorant.errors import ParamError

            raise ParamError(f"source_table {self.source_table!r} is not a plain SQL identifier")
        return spec.model_copy(
            update={"source": spec.source.model_copy(update={"table": self.source_table, "sql": None})}
        )

    @cached_property
    def hook(self) -> DbApiHook:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id or self.spec.source.conn_id).get_hook()

    @property
    def dialect(self) -> str:
        """``redshift``, ``postgres`` (the COPY fast path), or ``generic`` for any other DbApiHook."""
        from airflow.providers.amazon.aws.hooks.redshift_sql import RedshiftSQLHook
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        if isinstance(self.hook, RedshiftSQLHook):
            return "redshift"
        return "postgres" if isinstance(self.hook, PostgresHook) else "generic"

    def unload(self, partition: str, context: Context) -> Any:
        """Redshift: UNLOAD the partition into a new attempt folder of the lake, then commit it."""
        import os

        from airflow.sdk.exceptions import AirflowFailException

        from cormorant.redshift import unload_statement
        from cormorant.warehouse import raw_dataset

        role = self.redshift_iam_role or os.environ.get("CORMORANT_REDSHIFT_IAM_ROLE")
        if not role:
            raise AirflowFailException(
                "a Redshift source needs redshift_iam_role or $CORMORANT_REDSHIFT_IAM_ROLE"
            )
        dataset = raw_dataset(self.spec)
        attempt, folder = self.lake.new_attempt(dataset, partition)
        statement = unload_statement(self.spec, partition, str(folder), iam_role=role)
        self.hook.run(statement)
        return self.lake.commit_files(
            dataset,
            partition,
            attempt,
            partition_column=self.spec.source.partition_column,
            source={
                "conn_id": self.conn_id or self.spec.source.conn_id,
                "dialect": "redshift",
                "query": statement,
            },
            lineage=self.lineage(context),
        )

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from cormorant.warehouse import raw_dataset

        conn_id = self.conn_id or self.spec.source.conn_id
        return self.sql_datasets(self.hook, conn_id, self.spec.source), [
            self.lake_dataset(raw_dataset(self.spec))
        ]

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.warehouse import extract_partition, raw_dataset

        refs = []
        for partition in self.partitions(context):
            if self.dialect == "redshift":
                manifest = self.unload(partition, context)
                refs.append(
                    {
                        "partition": partition,
                        "rows": manifest.row_count,
                        "content_hash": manifest.content_hash,
                        "uri": self.lake.uri(self.lake.partition_key(raw_dataset(self.spec), partition)),
                    }
                )
                continue
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
