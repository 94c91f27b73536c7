"""Model-selection sweeps: plan the trials, run each one through a backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast

if TYPE_CHECKING:
    from airflow.sdk import Context

TRIAL_BACKENDS = ("local",)
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def log_level(line: str, previous: int) -> int:
    """The level of a trainer log line (``<date> <time> LEVEL name: message``); lines without one (a
    traceback) keep the level of the line they continue."""
    parts = line.split(" ", 3)
    return LEVELS.get(parts[2], previous) if len(parts) > 2 else previous


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

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.sweep import plan_sweep, sweep_options
        from cormorant.tracking import start_sweep_run

        end = max(self.partitions(context))
        plan = plan_sweep(self.spec, self.lake, end, **sweep_options(context["params"]))
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
        from cormorant.trainer import trainer_command

        return trainer_command(self.spec_path, self.trial, output)

    def trainer_environment(self) -> dict[str, str]:
        """The worker's environment with the lake connection's credentials (the trainer reads the lake
        outside Airflow: :func:`cormorant_provider.storage.lake_environment`); the trial fits with its
        share of the CPUs when as many trials as the task's max_active_tis_per_dag run at once (unless
        the deployment set the threads)."""
        from cormorant.sweep import trial_threads_when_sharing
        from cormorant_provider.storage import lake_environment

        env = {**os.environ, **lake_environment(self.settings)}
        if not env.get("CORMORANT_TRIAL_THREADS"):
            env["CORMORANT_TRIAL_THREADS"] = str(trial_threads_when_sharing(self.max_active_tis_per_dag or 1))
        return env

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
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
                env=self.trainer_environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            assert self._process.stdout is not None
            level = LEVELS["INFO"]
            for raw in self._process.stdout:
                line = raw.decode(errors="replace").rstrip()
                level = log_level(line, level)
                self.log.log(level, "%s", line)
            code = self._process.wait(timeout=self.timeout_s)
            result = json.loads(output.read_text()) if output.exists() else None
            if code != 0 or result is None or result.get("status") != "ok":
                self.fail_trial(code, result)
            return result

    def fail_trial(self, code: int, result: dict[str, Any] | None) -> None:
        """Raise the trial's own cause; a trainer that died without a result (killed) is retryable."""
        from cormorant.errors import TrialFailed
        from cormorant.trainer import trial_record_key

        trial_id, family = self.trial["trial_id"], self.trial["family"]
        if result is None:
            result = {
                "trial_id": trial_id,
                "family": family,
                "params": self.trial.get("params"),
                "status": "failed",
                "error": f"the trainer exited with code {code} without a result (killed, or out of memory?)",
                "retryable": True,
            }
            key = trial_record_key(self.spec.name, self.trial.get("sweep_key", ""), trial_id)
            self.lake.write_json(key, result)
        self.log.error("Trial %s (%s) failed: %s", trial_id, family, result["error"])
        raise TrialFailed(
            f"trial {trial_id} ({family}, {self.trial.get('params')}): {result['error']}",
            cause=result["error"],
            retryable=bool(result.get("retryable")),
        )

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
