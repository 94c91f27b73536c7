"""Model-selection sweeps: plan the trials, run each one through a backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

TRIAL_BACKENDS = ("local",)


def cached_trial_result(operator: Any, spec_name: str, trial: dict[str, Any]) -> dict[str, Any] | None:
    """Trial caching: the result of a finished MLflow run with the same inputs, so nothing is launched."""
    from cormorant.config import Settings
    from cormorant.spec import experiment_name
    from cormorant.tracking import find_cached_trial

    found = find_cached_trial(experiment_name(spec_name), Settings.from_env(), trial.get("cache_key", ""))
    if found is None:
        return None
    operator.log.info(
        "Trial %s: inputs unchanged since MLflow run %s (cache key %s); reusing it, launching nothing",
        trial["trial_id"],
        found["run_id"],
        trial["cache_key"],
    )
    return {**found, "trial_id": trial["trial_id"]}


class SweepPlanOperator(CormorantOperator):
    """Plan a sweep over the training window ending at the run's partition.

    Checks that every partition in the window is committed and validated, creates the sweep's
    parent MLflow run, pushes the plan (window, holdout, sweep key, parent run) under the XCom key
    ``plan``, and returns the trials (small references) for
    ``SweepTrialOperator.partial(...).expand(trial=...)``.

    Params read from the run: ``window_days``, ``families``, ``max_trials_per_family``, ``folds``.
    """

    ui_color = "#e8daef"

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        from cormorant.sweep import SweepNotReady, plan_sweep
        from cormorant.tracking import start_sweep_run

        params = context["params"]
        end = max(self.partitions(context))
        try:
            plan = plan_sweep(
                self.spec,
                self.lake,
                end,
                window_days=params.get("window_days"),
                families=params.get("families"),
                max_trials_per_family=params.get("max_trials_per_family"),
                folds=params.get("folds"),
            )
        except SweepNotReady as e:
            raise AirflowFailException(str(e)) from e
        parent = start_sweep_run(
            self.spec,
            self.settings,
            end_partition=end,
            sweep_key=plan["sweep_key"],
            tags={"airflow.run_id": context["ti"].run_id},
        )
        for trial in plan["trials"]:
            trial["parent_run_id"] = parent
        trials = plan.pop("trials")
        context["ti"].xcom_push(
            key="plan",
            value={
                **plan,
                "end_partition": end,
                "parent_run_id": parent,
                "trial_ids": [t["trial_id"] for t in trials],
            },
        )
        self.log.info(
            "Sweep %s: %d trials; window %s, holdout %s, parent run %s",
            plan["sweep_key"],
            len(trials),
            plan["train_partitions"],
            plan["holdout_partitions"],
            parent,
        )
        return trials


class SweepTrialOperator(CormorantOperator):
    """Run one sweep trial with the trainer CLI and return its result (run id, model URI, metrics).

    :param trial: the trial from the plan (templated; usually mapped with ``expand``).
    :param backend: ``local`` runs ``python -m cormorant.trainer`` as a subprocess on the worker.
    :param timeout_s: the trial is stopped, and fails, after this many seconds.
    """

    template_fields: Sequence[str] = (*CormorantOperator.template_fields, "trial")
    ui_color = "#d5f5e3"

    def __init__(
        self, *, trial: dict[str, Any] | Any, backend: str = "local", timeout_s: int = 3600, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if backend not in TRIAL_BACKENDS:
            raise ValueError(f"trial backend {backend!r} is not available; expected one of {TRIAL_BACKENDS}")
        self.trial = trial
        self.backend = backend
        self.timeout_s = timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    def trainer_command(self, output: Path) -> list[str]:
        """The trainer CLI invocation; the same arguments a pod runs."""
        return [
            sys.executable,
            "-m",
            "cormorant.trainer",
            "--spec",
            str(self.spec_path),
            "--trial",
            json.dumps(self.trial, sort_keys=True),
            "--output",
            str(output),
        ]

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        cached = cached_trial_result(self, self.spec.name, self.trial)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="cormorant-trial-") as tmp:
            output = Path(tmp) / "result.json"
            self.log.info(
                "Trial %s (%s) via the %s backend", self.trial["trial_id"], self.trial["family"], self.backend
            )
            self._process = subprocess.Popen(
                self.trainer_command(output),
                env=os.environ.copy(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            assert self._process.stdout is not None
            for line in self._process.stdout:
                self.log.info("%s", line.decode(errors="replace").rstrip())
            code = self._process.wait(timeout=self.timeout_s)
            if code != 0:
                raise AirflowException(f"trial {self.trial['trial_id']}: the trainer exited with code {code}")
            return json.loads(output.read_text())

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
