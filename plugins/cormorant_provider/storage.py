"""The lake as Airflow processes open it: through ObjectStoragePath, so S3 credentials come from the
lake connection (``CORMORANT_LAKE_CONN_ID``), for the operators and the UI plugin alike; and the same
credentials for a process outside Airflow that reads the lake (the trainer, on the local backend)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cormorant.config import Settings
    from cormorant.lake import Lake


def airflow_lake(settings: Settings) -> Lake:
    from airflow.sdk import ObjectStoragePath

    from cormorant.lake import Lake

    return Lake(ObjectStoragePath(settings.lake_uri, conn_id=settings.lake_conn_id))


def lake_environment(settings: Settings) -> dict[str, str]:
    """The lake connection as the AWS SDK's environment variables (keys, session token, endpoint,
    region), for a trainer process started by a worker: it reads the lake with s3fs, outside Airflow,
    so without them it finds no credentials (and, on an S3-compatible store, the wrong endpoint).
    Empty for a lake that is not on S3 or has no connection (the process's own chain applies).

    They reach the process through its environment only: never its command line, and never a log."""
    if not settings.lake_conn_id or not settings.lake_uri.startswith(("s3://", "s3a://")):
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=settings.lake_conn_id, client_type="s3")
    credentials = hook.get_credentials()
    env = {"AWS_ACCESS_KEY_ID": credentials.access_key, "AWS_SECRET_ACCESS_KEY": credentials.secret_key}
    if credentials.token:
        env["AWS_SESSION_TOKEN"] = credentials.token
    if hook.conn_config.endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = hook.conn_config.endpoint_url
    if hook.conn_config.region_name:
        env["AWS_DEFAULT_REGION"] = hook.conn_config.region_name
    return env
