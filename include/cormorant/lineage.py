"""Names of what the pipeline reads and writes, as OpenLineage datasets (namespace, name).

The operators report them through Airflow's OpenLineage integration (the
``apache-airflow-providers-openlineage`` provider calls their ``get_openlineage_facets_on_complete``), so
a lineage backend sees warehouse table -> lake dataset -> model version -> predictions. Names follow
OpenLineage's naming conventions where it has one: a local path is namespace ``file`` with the absolute
path as its name; an S3 object is namespace ``s3://bucket`` with its key; a SQL table is named by the
provider's own SQL parser (``postgres://host:port``, ``database.schema.table``). Where it has none: an
SQLite table is ``sqlite://<database file>`` with the table; a registered model version is the MLflow
tracking URI with ``models/<name>/<version>``. Credentials in a URI are never part of a name.

Lake datasets are named at the dataset level (``churn/raw``), not per day: a day is a run of the job.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

Dataset = tuple[str, str]  # (namespace, name)


def without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def lake_dataset(uri: str) -> Dataset:
    """A lake dataset from its URI (``file:///...`` or a path, ``s3://bucket/key``)."""
    parts = urlsplit(without_credentials(str(uri)))
    if parts.scheme in ("", "file"):
        return "file", parts.path
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def sqlite_table(database: str, table: str) -> Dataset:
    return f"sqlite://{database}", table


def model_version(tracking_uri: str, name: str, version: str | int) -> Dataset:
    """A registered model version in the MLflow registry at ``tracking_uri``."""
    return without_credentials(tracking_uri), f"models/{name}/{version}"
