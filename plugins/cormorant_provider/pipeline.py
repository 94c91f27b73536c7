"""Run a spec's DAGs in-process with ``dag.test()``, in the order the Asset chain would.

Used by the demo (``scripts/demo.py``) and the end-to-end tests. It needs an initialised Airflow
metadata database (``airflow db migrate``) and the embedded environment
(:func:`cormorant.config.embedded_environment`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class StageRun:
    dag_id: str
    partition: str
    state: str
    task_states: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    @property
    def retrain_signalled(self) -> bool:
        return self.task_states.get("signal_retraining") == "success"

    @property
    def failed_tasks(self) -> list[str]:
        return sorted(t for t, s in self.task_states.items() if s in ("failed", "upstream_failed"))


class PipelineFailed(RuntimeError):
    def __init__(self, run: StageRun):
        self.run = run
        super().__init__(
            f"{run.dag_id} for {run.partition} ended {run.state}; failed tasks: {run.failed_tasks}"
        )


class PipelineRunner:
    """Runs ``<spec>__<stage>`` DAGs for given partitions and reports their outcome."""

    def __init__(self, dags: dict[str, Any], spec_name: str):
        self.dags, self.spec_name = dags, spec_name
        self.history: list[StageRun] = []

    @classmethod
    def from_dag_folder(cls, folder: Path | str, spec_name: str) -> PipelineRunner:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(str(folder))
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        return cls(bag.dags, spec_name)

    def run(
        self, stage: str, partition: str, conf: dict[str, Any] | None = None, *, check: bool = True
    ) -> StageRun:
        # A fresh copy per run: dag.test() renders templated fields onto the task objects and writes the
        # run's conf into the tasks' Param objects, in place. A deployment deserializes fresh tasks for
        # every run; here the next run would inherit the last run's values (a source_table param, say).
        # BaseOperator's deepcopy shares the Param objects (params is a shallow-copy attribute), so they
        # are copied again.
        dag = copy.deepcopy(self.dags[f"{self.spec_name}__{stage}"])
        dag.params = copy.deepcopy(dag.params)
        for task in dag.tasks:
            params = getattr(task, "params", None)
            if params is not None:
                with contextlib.suppress(AttributeError):  # a mapped task's params are read-only
                    task.params = copy.deepcopy(params)
        print(f"→ {dag.dag_id} for {partition} ...", end=" ", flush=True)
        dag_run = dag.test(run_conf={"partition_date": partition, **(conf or {})})
        states = {
            ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
            for ti in dag_run.get_task_instances()
        }
        states.update({k.split("[")[0]: v for k, v in states.items() if "[" not in k})
        run = StageRun(dag.dag_id, partition, str(dag_run.state), states)
        print(run.state, flush=True)
        self.history.append(run)
        if check and not run.succeeded:
            raise PipelineFailed(run)
        return run

    def summary(self) -> dict[str, Any]:
        from cormorant.config import Settings
        from cormorant.lake import Lake
        from cormorant.spec import load_spec
        from cormorant.summary import pipeline_summary

        settings = Settings.from_env()
        spec = load_spec(Path(settings.specs_dir) / f"{self.spec_name}.yaml")
        return pipeline_summary(spec, Lake(settings.lake_uri), settings)

    def summary_text(self) -> str:
        from cormorant.summary import format_summary

        return format_summary(self.summary())
