"""Register the sweep's best model and promote it when it beats the champion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast

if TYPE_CHECKING:
    from airflow.sdk import Context


class RegisterAndPromoteOperator(CormorantOperator):
    """Select the best trial, register it in MLflow and move the ``champion`` alias if it wins.

    :param plan: the sweep plan (templated; the plan task's output).
    :param results: the trials' results (templated; the mapped trial task's output). Failed trials
        are left out of the selection and listed in the summary.
    """

    template_fields: Sequence[str] = (*CormorantOperator.template_fields, "plan", "results")
    ui_color = "#fadbd8"

    def __init__(self, *, plan: Any, results: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.results = results

    registered: str | None = None  # the version this run registered (for OpenLineage)

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from cormorant.warehouse import raw_dataset

        return [self.lake_dataset(raw_dataset(self.spec))], self.model_dataset(self.registered)

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from cormorant.registry import register_and_promote
        from cormorant.tracking import finish_sweep_run

        if not self.plan:
            raise AirflowFailException("no sweep plan: the plan task did not succeed")
        # One slice request: iterating Airflow's lazy XCom sequence reads offsets until one is missing,
        # and the API client logs that expected 404 at ERROR in every run.
        results = [r for r in (self.results[:] if self.results is not None else []) if r]
        summary = register_and_promote(self.spec, self.settings, self.lake, self.plan, results)
        finish_sweep_run(self.settings, self.plan["parent_run_id"], summary)
        self.registered = summary["version"]
        self.log.info(
            "Best trial %s (%s): cv %s %.4f ± %.4f; version %s %s (%s)",
            summary["best_trial"],
            summary["family"],
            summary["metric"],
            summary["cv_mean"],
            summary["cv_std"],
            summary["version"],
            "PROMOTED" if summary["promoted"] else "not promoted",
            summary["reason"],
        )
        self.emit(
            context,
            partitions=[self.plan["end_partition"]],
            version=summary["version"],
            champion_version=summary["champion_version"],
        )
        return summary
