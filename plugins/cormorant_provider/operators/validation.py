"""Data validation gate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast

if TYPE_CHECKING:
    from airflow.sdk import Context


class DataValidationOperator(CormorantOperator):
    """Validate the run's lake partition(s) with the spec's Great Expectations suite.

    A report is written for every partition. If any expectation fails the task fails at once (a retry
    cannot fix data), naming each failed expectation and column, and downstream DAGs are not
    triggered. Returns the reports' URIs.
    """

    ui_color = "#fcf3cf"

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from cormorant.warehouse import raw_dataset

        return [self.lake_dataset(raw_dataset(self.spec))], [
            self.lake_dataset(f"{self.spec.name}/reports/validation")
        ]

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.validation import validate_partition, validation_report_key
        from cormorant.warehouse import raw_dataset

        def validate(partition: str) -> tuple[Any, str]:
            result = validate_partition(self.lake, raw_dataset(self.spec), partition, self.spec)
            return result, self.lake.write_json(validation_report_key(self.spec, partition), result.to_dict())

        return self.gate(context, validate, "Validation of")

    def gate(self, context: Context, validate: Any, what: str) -> list[dict[str, Any]]:
        """``validate(partition) -> (result, report URI)`` for each of the run's partitions; fails naming
        every failed partition with every failed expectation, else emits the outlet with the partitions."""
        from cormorant.errors import CormorantError
        from cormorant.validation import DataValidationError

        refs, failed = [], []
        for partition in self.partitions(context):
            result, uri = validate(partition)
            self.log.info(
                "%s %s: %s (%d expectations); report at %s",
                what,
                partition,
                "passed" if result.success else "FAILED",
                result.evaluated,
                uri,
            )
            refs.append({"partition": partition, "success": result.success, "report_uri": uri})
            if not result.success:
                failed.append(DataValidationError(result))
        if failed:  # every failed partition, each with every failed expectation
            raise failed[0] if len(failed) == 1 else CormorantError("\n\n".join(map(str, failed)))
        self.emit(context, partitions=[r["partition"] for r in refs])
        return refs
