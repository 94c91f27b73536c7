"""`cormorant run`'s day-by-day replay: the order the nightly chain would run the DAGs in."""

from __future__ import annotations

from dataclasses import dataclass, field

from cormorant.config import PROJECT_ROOT
from cormorant.spec import load_spec
from cormorant_provider import cli
from cormorant_provider.pipeline import StageRun

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]


@dataclass
class FakeRunner:
    """Records each run; every stage succeeds; the stages named in ``signals`` signal retraining."""

    signals: set[tuple[str, str]] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def run(self, stage, partition, conf=None, *, check=True):
        self.calls.append((stage, partition))
        tasks = {
            "validate": {"validate_partition": "success", "validate_labels": "success"},
            "labels": {"validate_labels": "success"},
            "predict": {"batch_inference": "success"},
        }.get(stage, {})
        if (stage, partition) in self.signals:
            tasks = {**tasks, "signal_retraining": "success"}
        return StageRun(f"x__{stage}", partition, "success", tasks)


def test_late_labels_score_a_day_before_its_labels_land_and_measure_it_when_they_do():
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")  # labels a day late
    runner = FakeRunner(signals={("drift", DAYS[3])})
    assert cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=False) == []
    calls = runner.calls
    # the first model once two labelled days exist (one to train on, one held out): on day 3
    assert calls.index(("labels", DAYS[1])) < calls.index(("train", DAYS[2]))
    assert ("train", DAYS[1]) not in calls and ("predict", DAYS[1]) not in calls
    # day 3 is scored on day 3; its labels land on day 4, and its performance is measured then
    assert (
        calls.index(("predict", DAYS[2]))
        < calls.index(("labels", DAYS[2]))
        < calls.index(("performance", DAYS[2]))
    )
    assert calls.index(("ingest", DAYS[3])) < calls.index(("labels", DAYS[2]))
    assert ("labels", DAYS[3]) not in calls  # final on day 5, after the range
    # drift signals on day 4: train on the window ending there, then score and check again
    assert calls[-3:] == [("train", DAYS[3]), ("predict", DAYS[3]), ("drift", DAYS[3])]


def test_labels_with_the_features_measure_the_same_day_and_a_performance_signal_retrains(example_spec):
    runner = FakeRunner(signals={("performance", DAYS[2])})
    cli.replay(runner, example_spec, DAYS, list(cli.STAGES), champion=False)
    calls = runner.calls
    assert not [c for c in calls if c[0] == "labels"]  # landed by the validate DAG
    assert calls.index(("train", DAYS[1])) < calls.index(("predict", DAYS[1]))
    day3 = calls[calls.index(("ingest", DAYS[2])) : calls.index(("ingest", DAYS[3]))]
    assert day3 == [
        ("ingest", DAYS[2]),
        ("validate", DAYS[2]),
        ("predict", DAYS[2]),
        ("drift", DAYS[2]),
        ("performance", DAYS[2]),
        ("train", DAYS[2]),
        ("predict", DAYS[2]),
        ("drift", DAYS[2]),
    ]


def test_stages_limit_what_runs(example_spec):
    runner = FakeRunner()
    cli.replay(runner, example_spec, DAYS[:2], ["ingest", "validate"], champion=False)
    assert {stage for stage, _ in runner.calls} == {"ingest", "validate"}


def test_a_retraining_signal_without_the_train_stage_scores_the_day_once(capsys):
    """With train left out of --stages, a day whose drift signalled retraining was predicted and checked
    twice, with the same model."""
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")
    runner = FakeRunner(signals={("drift", DAYS[2])})
    stages = [s for s in cli.STAGES if s != "train"]
    assert cli.replay(runner, spec, DAYS, stages, champion=True) == []
    assert runner.calls.count(("predict", DAYS[2])) == 1 and runner.calls.count(("drift", DAYS[2])) == 1
    assert "train" not in {stage for stage, _ in runner.calls}
    assert (
        f"{DAYS[2]}: retraining signalled; not retrained (train is not among --stages)"
        in capsys.readouterr().out
    )


def test_a_failed_retraining_does_not_score_the_day_again():
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")

    class FailingTrain(FakeRunner):
        def run(self, stage, partition, conf=None, *, check=True):
            outcome = super().run(stage, partition, conf, check=check)
            return (
                StageRun(outcome.dag_id, partition, "failed", {"plan_sweep": "failed"})
                if stage == "train"
                else outcome
            )

    runner = FailingTrain(signals={("drift", DAYS[2])})
    failed = cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=True)
    assert failed == [f"x__train {DAYS[2]}: failed (failed tasks: ['plan_sweep'])"]
    assert runner.calls.count(("predict", DAYS[2])) == 1
