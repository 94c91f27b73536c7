"""What every Cormorant operator shares: its spec, settings, lake and partitions."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from cormorant_provider.partitions import resolve_partitions

if TYPE_CHECKING:
    from airflow.sdk import Context

    from cormorant.config import Settings
    from cormorant.lake import Lake
    from cormorant.spec import ModelSpec


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
        from airflow.sdk import ObjectStoragePath

        from cormorant.lake import Lake

        return Lake(ObjectStoragePath(self.settings.lake_uri, conn_id=self.settings.lake_conn_id))

    def partitions(self, context: Context) -> list[str]:
        return resolve_partitions(context)

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
