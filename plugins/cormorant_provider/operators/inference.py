"""Batch inference with ONNX Runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class BatchInferenceOperator(CormorantOperator):
    """Score the run's partition(s) with a registered model and write predictions to the lake.

    :param model_alias: the registry alias to score with (templated).
    :param model_version: an explicit registered version, overriding the alias (templated).

    Skips when the registry has no model under the alias yet (nothing has been trained).
    """

    template_fields: Sequence[str] = (*CormorantOperator.template_fields, "model_alias", "model_version")
    ui_color = "#d1f2eb"

    def __init__(
        self, *, model_alias: str = "champion", model_version: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model_alias = model_alias
        self.model_version = model_version

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from cormorant.inference import NoChampion, predict_partition, predictions_dataset, resolve_model

        try:
            model = resolve_model(
                self.spec, self.settings, alias=self.model_alias, version=self.model_version or None
            )
        except NoChampion as e:
            raise AirflowSkipException(str(e)) from e
        refs = []
        for partition in self.partitions(context):
            manifest = predict_partition(
                self.spec, self.lake, partition, model, lineage=self.lineage(context)
            )
            refs.append(
                {
                    "partition": partition,
                    "rows": manifest.row_count,
                    "model_version": model["version"],
                    "uri": self.lake.uri(self.lake.partition_key(predictions_dataset(self.spec), partition)),
                }
            )
        self.emit(context, partitions=[r["partition"] for r in refs], model_version=model["version"])
        return refs
