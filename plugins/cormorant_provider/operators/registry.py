"""Register the sweep's best model and promote it when it beats the champion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator

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

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from cormorant.registry import register_and_promote
        from cormorant.tracking import finish_sweep_run

        if not self.plan:
            raise AirflowFailException("no sweep plan: the plan task did not succeed")
        results = [r for r in (self.results or []) if r]
        try:
            summary = register_and_promote(self.spec, self.settings, self.lake, self.plan, results)
        except ValueError as e:  # no trial succeeded
            raise AirflowFailException(str(e)) from e
        finish_sweep_run(self.settings, self.plan["parent_run_id"], summary)
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
