"""Realized performance once labels land, and the retraining signal shared with drift."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast

if TYPE_CHECKING:
    from airflow.sdk import Context


class PerformanceCheckOperator(CormorantOperator):
    """Measure the realized metric of the model version that scored the run's day(s), once the labels
    have landed; compare it with that version's holdout metric and write a JSON and HTML report.

    Skips a day that was not scored or whose labels have not landed yet (saying which); fails at once
    when the labels failed their suite. Returns small verdicts
    ``[{partition, verdict, retrain, signal, why, model_version, report_uri, html_uri}]``.
    """

    ui_color = "#d5f5e3"
    lags_behind_labels = True

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from cormorant.inference import predictions_dataset
        from cormorant.labels import labels_dataset

        inputs = [
            self.lake_dataset(predictions_dataset(self.spec)),
            self.lake_dataset(labels_dataset(self.spec)),
        ]
        return inputs, [self.lake_dataset(f"{self.spec.name}/reports/performance")]

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.performance import check_performance

        def check(partition: str) -> dict[str, Any]:
            report = check_performance(self.spec, self.lake, partition, self.settings)
            self.log.info(
                "Performance %s: model v%s, %s %s on %d labelled rows against holdout %s: %s (%s); report %s",
                partition,
                report["model"]["version"],
                report["metric"],
                report["metrics"].get(report["metric"]),
                report["labeled_rows"],
                report["holdout"],
                report["verdict"],
                report["why"],
                report["html_uri"],
            )
            out = {
                k: report[k]
                for k in ("partition", "verdict", "retrain", "signal", "why", "report_uri", "html_uri")
            }
            return {**out, "model_version": report["model"]["version"]}

        return self.per_partition(context, check)


def retraining_needed(verdicts: list[dict[str, Any]]) -> bool:
    """Short-circuit callable: go on to the retraining signal only when a day called for it."""
    return any(v.get("retrain") for v in verdicts or [])


class SignalRetrainingOperator(CormorantOperator):
    """Emit the ``retrain`` asset for the days whose check called for it, saying which signal fired
    (``drift`` or ``performance``) and why; the train DAG runs on those days.

    :param verdicts: the check's verdicts (an XCom reference, templated).
    :param signal: the check's name, for the log and the asset event.
    """

    template_fields: Sequence[str] = (*CormorantOperator.template_fields, "verdicts")
    ui_color = "#fadbd8"

    def __init__(self, *, verdicts: Any, signal: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdicts = verdicts
        self.signal = signal

    def execute(self, context: Context) -> dict[str, Any]:
        fired = [v for v in self.verdicts or [] if v.get("retrain")]
        reasons = {
            v["partition"]: v.get("why") or ", ".join(v.get("drifted_features") or []) or self.signal
            for v in fired
        }
        for partition, why in reasons.items():
            self.log.info("Retraining signalled by %s for %s: %s", self.signal, partition, why)
        extra = {"partitions": sorted(reasons), "signal": self.signal, "reasons": reasons}
        self.emit(context, **extra)
        return extra
