"""The lake as Airflow processes open it: through ObjectStoragePath, so S3 credentials come from the
lake connection (``CORMORANT_LAKE_CONN_ID``), for the operators and the UI plugin alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cormorant.config import Settings
    from cormorant.lake import Lake


def airflow_lake(settings: Settings) -> Lake:
    from airflow.sdk import ObjectStoragePath

    from cormorant.lake import Lake

    return Lake(ObjectStoragePath(settings.lake_uri, conn_id=settings.lake_conn_id))
