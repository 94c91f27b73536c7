"""The compute ledger behind `cormorant run`'s "pipeline time / compute" line."""

from __future__ import annotations

import json

import pytest

from cormorant import ledger


def test_spans_that_ran_side_by_side_count_once():
    assert ledger.covered_seconds([]) == 0
    assert ledger.covered_seconds([(0, 2), (1, 3), (5, 6)]) == 4  # 0..3 and 5..6
    assert ledger.covered_seconds([(0, 10), (2, 3), (4, 5)]) == 10  # nested spans add nothing
    assert ledger.covered_seconds([(3, 4), (0, 1)]) == 2  # in any order


def test_nothing_is_written_unless_a_ledger_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(ledger.LEDGER_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    ledger.add("extraction", 0, 1)
    assert list(tmp_path.iterdir()) == []


def test_timed_work_is_recorded_even_when_it_fails_and_summarized_per_kind(tmp_path, monkeypatch):
    path = tmp_path / "compute.jsonl"
    monkeypatch.setenv(ledger.LEDGER_ENV, str(path))

    @ledger.timed("extraction")
    def extract(fail):
        if fail:
            raise ValueError("bad day")
        return "ok"

    assert extract(False) == "ok"
    with pytest.raises(ValueError, match="bad day"):
        extract(True)
    ledger.add("fitting and scoring", 100.0, 104.0, trial="a")
    ledger.add("fitting and scoring", 102.0, 106.0, trial="b")  # beside a
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["extraction", "extraction", "fitting and scoring"] + [
        "fitting and scoring"
    ]
    summary = ledger.summarize(path, wall_seconds=12.0)
    fitting = summary["kinds"]["fitting and scoring"]
    assert (fitting["seconds"], fitting["covered_seconds"], fitting["pieces"]) == (8.0, 6.0, 2)
    assert summary["kinds"]["extraction"]["pieces"] == 2
    assert summary["compute_seconds"] == pytest.approx(
        6.0 + summary["kinds"]["extraction"]["covered_seconds"]
    )
    assert summary["ratio"] == pytest.approx(12.0 / summary["compute_seconds"])
    text = ledger.format_summary(summary)
    assert "fitting and scoring 8.0 s in 2 (side by side: 6.0 s of wall time)" in text


def test_time_spent_splits_a_pipelines_wall_time_by_where_the_runner_spent_it():
    runs = [
        {"seconds": 2.0, "task_seconds": 1.5, "sweep_seconds": 0.0, "warm_up_wait_seconds": 0.0},
        {"seconds": 6.0, "task_seconds": 2.0, "sweep_seconds": 3.5, "warm_up_wait_seconds": 1.25},
    ]
    spent = ledger.time_spent(10.0, runs)
    assert spent == {
        "runs": 2,
        "task_seconds": 3.5,
        "sweep_seconds": 3.5,
        "warm_up_wait_seconds": 1.25,
        "airflow_seconds": pytest.approx(1.0),  # 0.5 around the first run's tasks, 0.5 around the second's
        "between_runs_seconds": 2.0,
    }
    text = ledger.format_time_spent(spent)
    assert "the tasks 3.5 s" in text
    assert "tasks 3.5 s (1.2 s of it waiting for the warm trainers' warm-up)" in text
    assert "Airflow's bookkeeping around the tasks of 2 run(s) 1.0 s (0.50 s a run)" in text
    assert "the runner between runs 2.0 s" in text
    # no sweep waited: nothing said about waiting
    assert "waiting" not in ledger.format_time_spent(ledger.time_spent(2.0, runs[:1]))
