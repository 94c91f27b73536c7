"""Redshift: no ``COPY ... TO STDOUT``, so a partition is extracted with ``UNLOAD`` to Parquet on S3.

UNLOAD writes straight into a new attempt folder of the lake partition; the partition is then
committed like any other, by writing the manifest last (:meth:`cormorant.lake.Lake.commit_files`).
The statement follows the amazon provider's RedshiftToS3Operator form (``UNLOAD ($$ select $$) TO
's3://...' <credentials> <options>``); the interval bounds are inlined as validated literals because
UNLOAD takes no bind parameters.
"""

from __future__ import annotations

from datetime import date

from cormorant.spec import ModelSpec
from cormorant.warehouse import partition_bounds

DEFAULT_OPTIONS = ("FORMAT AS PARQUET", "ALLOWOVERWRITE", "MAXFILESIZE 256 MB")


def unload_select(spec: ModelSpec, partition: str) -> str:
    """The SELECT for one partition with its bounds inlined (identifiers were checked by the spec)."""
    date.fromisoformat(partition)  # raises on anything but YYYY-MM-DD: nothing else reaches the SQL
    start, end = partition_bounds(partition, spec.source.timezone)
    source = spec.source
    if "$$" in (source.sql or ""):
        raise ValueError(f"spec {spec.name!r}: source.sql may not contain '$$' when unloading from Redshift")
    relation = source.table or f"({source.sql}) AS cormorant_source"
    col = source.partition_column
    return (
        f"SELECT * FROM {relation} WHERE {col} >= '{start:%Y-%m-%d %H:%M:%S}' "
        f"AND {col} < '{end:%Y-%m-%d %H:%M:%S}'"
    )


def unload_statement(
    spec: ModelSpec,
    partition: str,
    s3_prefix: str,
    *,
    iam_role: str,
    options: tuple[str, ...] = DEFAULT_OPTIONS,
) -> str:
    """``UNLOAD`` of one partition into Parquet files under ``s3_prefix`` (an attempt folder)."""
    if not s3_prefix.startswith("s3://") or "'" in s3_prefix:
        raise ValueError(f"UNLOAD needs an s3:// prefix without quotes; found {s3_prefix!r}")
    if not iam_role.startswith("arn:aws:iam::") or "'" in iam_role:
        raise ValueError(f"UNLOAD needs an IAM role ARN (arn:aws:iam::...); found {iam_role!r}")
    prefix = s3_prefix.rstrip("/") + "/part-"
    return (
        f"UNLOAD ($$ {unload_select(spec, partition)} $$)\n"
        f"TO '{prefix}'\n"
        f"IAM_ROLE '{iam_role}'\n" + "\n".join(options)
    )
