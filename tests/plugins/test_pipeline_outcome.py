"""What a failed run says about its tasks: the ones that failed, apart from those that never ran."""

from __future__ import annotations

from cormorant_provider.pipeline import PipelineFailed, StageRun


def test_a_failed_run_names_the_tasks_that_failed_apart_from_those_that_never_ran():
    run = StageRun(
        "churn__train",
        "2024-03-05",
        "failed",
        {
            "plan_sweep": "failed",
            "trial": "upstream_failed",
            "select_and_promote": "upstream_failed",
            "load": "success",
        },
    )
    assert run.failed_tasks == ["plan_sweep"]  # it used to list the two that never ran as failed
    assert run.not_run_tasks == ["select_and_promote", "trial"]
    message = str(PipelineFailed(run))
    assert "failed tasks: ['plan_sweep']; not run because of them: ['select_and_promote', 'trial']" in message


def test_a_failure_without_skipped_downstream_says_only_what_failed():
    run = StageRun("churn__ingest", "2024-03-05", "failed", {"warehouse_to_lake": "failed"})
    assert run.describe_failure() == "failed tasks: ['warehouse_to_lake']"
