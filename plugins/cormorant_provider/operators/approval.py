"""The approval step of a train DAG whose spec says ``promotion.approval: required``:
register_and_promote (the alias left alone) >> approve_promotion >> promote."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Context

from cormorant_provider.operators.base import CormorantOperator, fails_fast

REGISTER = "register_and_promote"
APPROVE = "approve_promotion"


def _summary(context: Context) -> dict[str, Any] | None:
    return context["ti"].xcom_pull(task_ids=REGISTER)


class PromotionApprovalOperator(ApprovalOperator, CormorantOperator):
    """Airflow's own human-in-the-loop approval of a version that beat the champion and was blessed.

    Skipped (nothing to approve) when the registration promoted nothing; otherwise the approver sees
    the version's holdout metric against the champion's, its blessing and links to its model card and
    MLflow run in the UI's required actions (and over REST). No answer within ``timeout`` rejects it.
    A rejection is recorded on the version here (who, or nobody in time), before the promote task is
    skipped.
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, *CormorantOperator.template_fields)
    ui_color = "#fdebd0"

    def __init__(self, *, timeout: timedelta, **kwargs: Any) -> None:
        super().__init__(
            subject="Promote a model version to champion?",
            defaults=ApprovalOperator.REJECT,
            response_timeout=timeout,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        from cormorant.approval import approval_request

        summary = _summary(context)
        if not summary or not summary.get("awaiting_approval"):
            reason = summary.get("reason") if summary else "nothing was registered"
            raise AirflowSkipException(f"nothing to approve: {reason}")
        self.subject, self.body = approval_request(summary)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from cormorant.approval import record_rejection

        if "error" not in event and ApprovalOperator.APPROVE not in (event.get("chosen_options") or []):
            record_rejection(self.spec, self.settings, self.lake, _summary(context), event)
        return super().execute_complete(context, event)


class PromoteApprovedOperator(CormorantOperator):
    """Move ``champion`` to the approved version (runs only when the approver chose Approve)."""

    template_fields: Sequence[str] = CormorantOperator.template_fields
    ui_color = "#fadbd8"

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from cormorant.approval import promote_approved

        answer = context["ti"].xcom_pull(task_ids=APPROVE) or {}
        outcome = promote_approved(self.spec, self.settings, self.lake, _summary(context), answer)
        self.log.info("%s", outcome["decision"])
        return outcome
