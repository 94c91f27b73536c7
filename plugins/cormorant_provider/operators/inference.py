"""Batch inference with ONNX Runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast

if TYPE_CHECKING:
    from airflow.sdk import Context


class BatchInferenceOperator(CormorantOperator):
    """Score the run's partition(s) with a registered model and write predictions to the lake.

    :param model_alias: the registry alias to score with (templated).
    :param model_version: an explicit registered version, overriding the alias (templated); it must have
        passed its blessing unless ``allow_unblessed``.
    :param allow_unblessed: score with an explicit version that did not pass its blessing (templated).

    Only partitions that passed validation for their current commit are scored; any other fails the
    task naming the partition and its validation report. Skips when the registry has no model under
    the alias yet (nothing has been trained) or every partition is an empty day; an explicit version
    that does not exist fails, naming the versions that do.
    """

    template_fields: Sequence[str] = (
        *CormorantOperator.template_fields,
        "model_alias",
        "model_version",
        "allow_unblessed",
    )
    ui_color = "#d1f2eb"

    def __init__(
        self,
        *,
        model_alias: str = "champion",
        model_version: str | None = None,
        allow_unblessed: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_alias = model_alias
        self.model_version = model_version
        self.allow_unblessed = allow_unblessed

    scored_with: str | None = None  # the model version this run scored with (for OpenLineage)

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from cormorant.inference import predictions_dataset
        from cormorant.warehouse import raw_dataset

        inputs = [self.lake_dataset(raw_dataset(self.spec)), *self.model_dataset(self.scored_with)]
        return inputs, [self.lake_dataset(predictions_dataset(self.spec))]

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.inference import predict_partition, predictions_dataset, resolve_model

        model = resolve_model(
            self.spec,
            self.settings,
            alias=self.model_alias,
            version=self.model_version or None,
            allow_unblessed=self.allow_unblessed in (True, "True", "true"),
        )
        self.scored_with = model["version"]

        def score(partition: str) -> dict[str, Any]:
            manifest = predict_partition(
                self.spec, self.lake, partition, model, lineage=self.lineage(context)
            )
            return {
                "partition": partition,
                "rows": manifest.row_count,
                "model_version": model["version"],
                "uri": self.lake.uri(self.lake.partition_key(predictions_dataset(self.spec), partition)),
            }

        refs = self.per_partition(context, score)
        self.emit(context, partitions=[r["partition"] for r in refs], model_version=model["version"])
        return refs
