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
    done = cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=False, window_days=3)
    assert done.failed == [] and done.trained == [DAYS[2], DAYS[3]] and done.why_no_model is None
    calls = runner.calls
    # the first model once the 3-day window holds its two labelled days (the third is final tomorrow)
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
    cli.replay(runner, example_spec, DAYS, list(cli.STAGES), champion=False, window_days=2)
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
    assert cli.replay(runner, spec, DAYS, stages, champion=True).failed == []
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
    failed = cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=True).failed
    assert failed == [f"x__train {DAYS[2]}: failed (failed tasks: ['plan_sweep'])"]
    assert runner.calls.count(("predict", DAYS[2])) == 1


def _trainings(runner):
    return [(day, conf) for stage, day, conf in runner.confs if stage == "train"]


class ConfRunner(FakeRunner):
    """Also records each run's conf."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.confs = []

    def run(self, stage, partition, conf=None, *, check=True):
        self.confs.append((stage, partition, conf))
        return super().run(stage, partition, conf, check=check)


def test_the_first_model_waits_for_the_specs_window_and_says_why_it_did_not_come():
    """It trained as soon as holdout_days + 1 labelled days had landed, on the days so far, ignoring
    training.window_days, and a run that trained nothing ended "Champion: none" with no reason."""
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")  # 7 days, a day late
    runner = ConfRunner()
    done = cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=False)
    assert _trainings(runner) == [] and ("predict", DAYS[3]) not in runner.calls
    assert done.why_no_model == (
        f"no model yet: 3 labelled day(s) in the lake in the 7-day window ending {DAYS[3]}; a first "
        "training needs 6 (the window's 7 days, less the 1 day(s) whose labels are final only later); "
        "land more days, or set --window-days or --train-at"
    )


def test_days_that_earlier_runs_landed_count_toward_the_first_window():
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")
    earlier = {f"2024-02-{d}" for d in range(25, 30)}  # landed by an earlier run
    runner = ConfRunner()
    done = cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=False, usable=earlier)
    # Feb 25-29 and Mar 1 (its labels land on Mar 2): six labelled days in the window ending Mar 2
    assert _trainings(runner) == [(DAYS[1], {"window_days": 7})]
    assert done.trained == [DAYS[1]] and ("predict", DAYS[0]) not in runner.calls
    assert ("predict", DAYS[1]) in runner.calls and done.why_no_model is None


def test_train_at_lands_the_history_trains_on_the_window_given_and_scores_forward():
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")
    runner = ConfRunner()
    done = cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=True, window_days=30, train_at=DAYS[2])
    assert _trainings(runner) == [(DAYS[2], {"window_days": 30})] and done.trained == [DAYS[2]]
    # a champion from before scores the days before it; the new model scores from its day on
    assert [d for s, d in runner.calls if s == "predict"] == DAYS
    assert runner.calls.index(("train", DAYS[2])) < runner.calls.index(("predict", DAYS[2]))


def test_stages_train_alone_trains_on_what_the_lake_holds():
    """--stages could not force a training: the run counted only the labels it landed itself."""
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")
    lake_days = {f"2024-02-{d}" for d in range(20, 30)}
    runner = ConfRunner()
    done = cli.replay(runner, spec, ["2024-02-29"], ["train"], champion=False, usable=lake_days)
    assert runner.calls == [("train", "2024-02-29")] and done.trained == ["2024-02-29"]


def test_a_failed_first_training_is_reported_once_not_retried_every_day():
    spec = load_spec(PROJECT_ROOT / "include" / "examples" / "churn_late.yaml")

    class FailingTrain(ConfRunner):
        def run(self, stage, partition, conf=None, *, check=True):
            outcome = super().run(stage, partition, conf, check=check)
            if stage == "train":
                return StageRun(outcome.dag_id, partition, "failed", {"plan_sweep": "failed"})
            return outcome

    runner = FailingTrain()
    done = cli.replay(runner, spec, DAYS, list(cli.STAGES), champion=False, window_days=3)
    assert [d for d, _ in _trainings(runner)] == [DAYS[2]] and len(done.failed) == 1
    assert done.why_no_model == f"no model: the training on {DAYS[2]} did not succeed (above)"
    assert "predict" not in {s for s, _ in runner.calls}


def test_a_window_that_can_never_hold_enough_labelled_days_is_refused_before_anything_runs(tmp_path, capsys):
    code = cli.main(
        ["run", str(PROJECT_ROOT / "include/examples/churn_late.yaml"), "--from", DAYS[0], "--to", DAYS[1]]
        + ["--window-days", "2", "--home", str(tmp_path / "home")]
    )
    assert code == cli.EXIT_USAGE and not (tmp_path / "home").exists()
    assert (
        "--window-days 2: a window ending on a day holds at most 1 labelled day(s)" in capsys.readouterr().err
    )
