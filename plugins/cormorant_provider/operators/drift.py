"""Drift checks against the training reference."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast

if TYPE_CHECKING:
    from airflow.sdk import Context


class DriftCheckOperator(CormorantOperator):
    """Compare the run's partition(s) and predictions with the training reference (PSI, KS).

    Writes a JSON and an HTML report per partition and returns small verdicts:
    ``[{partition, verdict, retrain, drifted_features, report_uri, html_uri}]``.
    """

    ui_color = "#f6ddcc"

    checked_with: str | None = None  # the model version whose reference it compared with (OpenLineage)

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from cormorant.inference import predictions_dataset
        from cormorant.warehouse import raw_dataset

        inputs = [
            self.lake_dataset(raw_dataset(self.spec)),
            self.lake_dataset(predictions_dataset(self.spec)),
        ]
        inputs += self.model_dataset(self.checked_with)
        return inputs, [self.lake_dataset(f"{self.spec.name}/reports/drift")]

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.drift import check_partition

        def check(partition: str) -> dict[str, Any]:
            report = check_partition(self.spec, self.lake, partition, self.settings)
            version = (report.get("model") or {}).get("version")
            self.checked_with = None if version is None else str(version)
            self.log.info(
                "Drift %s: %s; drifted features %s; report %s",
                partition,
                report["verdict"],
                report["drifted_features"] or "none",
                report["html_uri"],
            )
            return {
                k: report[k]
                for k in ("partition", "verdict", "retrain", "drifted_features", "report_uri", "html_uri")
            }

        return self.per_partition(context, check)
