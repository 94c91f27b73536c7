"""Run a spec's DAGs in-process with ``dag.test()``, in the order the Asset chain would.

Used by the demo (``scripts/demo.py``) and the end-to-end tests. It needs an initialised Airflow
metadata database (``airflow db migrate``) and the embedded environment
(:func:`cormorant.config.embedded_environment`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

log = logging.getLogger(__name__)

# What the DAG bundle was when a dag.test() in this process last wrote it to the database (any runner's)
_last_synced: tuple | None = None


@dataclass
class StageRun:
    dag_id: str
    partition: str
    state: str
    task_states: dict[str, str] = field(default_factory=dict)
    # where the run's wall time went: its tasks (their spans, overlaps counted once), the sweep run
    # ahead of a train run's tasks (and how much of that waited for the warm trainers' warm-up); the
    # rest is Airflow's bookkeeping around the tasks (dag.test(): the run, its scheduling, the
    # execution API)
    seconds: float = 0.0
    task_seconds: float = 0.0
    sweep_seconds: float = 0.0
    warm_up_wait_seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    @property
    def retrain_signalled(self) -> bool:
        return self.task_states.get("signal_retraining") == "success"

    @property
    def failed_tasks(self) -> list[str]:
        """The tasks that ran and failed (not those that never ran because one upstream failed)."""
        return sorted(t for t, s in self.task_states.items() if s == "failed")

    @property
    def not_run_tasks(self) -> list[str]:
        """The tasks that never ran because a task upstream of them failed."""
        return sorted(t for t, s in self.task_states.items() if s == "upstream_failed")

    def describe_failure(self) -> str:
        """``failed tasks: [...]``, with the tasks that did not run because of them."""
        text = f"failed tasks: {self.failed_tasks}"
        return text + (f"; not run because of them: {self.not_run_tasks}" if self.not_run_tasks else "")


class PipelineFailed(RuntimeError):
    def __init__(self, run: StageRun):
        self.run = run
        super().__init__(f"{run.dag_id} for {run.partition} ended {run.state}; {run.describe_failure()}")


class PipelineRunner:
    """Runs ``<spec>__<stage>`` DAGs for given partitions and reports their outcome."""

    def __init__(self, dags: dict[str, Any], spec_name: str):
        self.dags, self.spec_name = dags, spec_name
        self.history: list[StageRun] = []
        self.trainers: Any = None  # cormorant.sweep.TrainerPool, once started

    def start_trainers(self) -> None:
        """Start warm trainer processes now (:class:`cormorant.sweep.TrainerPool`), for the sweeps this
        runner will run side by side: their imports overlap the stages before the first sweep, and
        every sweep of the run reuses them. Nothing when the spec's trials do not run locally."""
        from cormorant.sweep import TrainerPool, local_trial_parallelism

        trial_task = self.dags.get(f"{self.spec_name}__train", None)
        trial_task = trial_task and trial_task.task_dict.get("trial")
        backend = getattr(trial_task, "partial_kwargs", {}).get("backend", "local")
        if trial_task is None or backend != "local" or local_trial_parallelism() < 2 or self.trainers:
            return
        self.trainers = TrainerPool(local_trial_parallelism())

    def close(self) -> None:
        if self.trainers is not None:
            self.trainers.close()
            self.trainers = None

    @classmethod
    def for_spec(cls, spec_name: str) -> PipelineRunner:
        """The spec's DAGs as Airflow loads them: from the spec's own DAG file in the specs bundle
        (:mod:`cormorant_provider.bundle`), so another spec's malformed file changes nothing here."""
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.dagbag import DagBag

        from cormorant_provider.bundle import BUNDLE_NAME

        bundle = DagBundlesManager().get_bundle(BUNDLE_NAME)
        bundle.initialize()
        loader = bundle.path / f"{spec_name}.py"
        bag = DagBag(str(loader), bundle_path=bundle.path, bundle_name=bundle.name)
        if bag.import_errors or not bag.dags:
            raise RuntimeError(f"spec {spec_name!r} has no DAGs: {bag.import_errors or 'no spec file'}")
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
        started = time.monotonic()
        sweep_seconds = waited = 0.0
        if stage == "train":
            waited = self.trials_ahead(dag, partition, conf or {})
            sweep_seconds = time.monotonic() - started
        with _bundle_synced_once(), _execution_api_for_this_client():
            dag_run = dag.test(run_conf={"partition_date": partition, **(conf or {})})
        task_instances = dag_run.get_task_instances()
        states = {
            ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
            for ti in task_instances
        }
        states.update({k.split("[")[0]: v for k, v in states.items() if "[" not in k})
        run = StageRun(
            dag.dag_id,
            partition,
            str(dag_run.state),
            states,
            seconds=time.monotonic() - started,
            task_seconds=_tasks_covered_seconds(task_instances),
            sweep_seconds=sweep_seconds,
            warm_up_wait_seconds=waited,
        )
        print(f"{run.state} ({run.seconds:.1f} s)", flush=True)
        self.history.append(run)
        if check and not run.succeeded:
            raise PipelineFailed(run)
        return run

    def trials_ahead(self, dag: Any, partition: str, conf: dict[str, Any]) -> float:
        """``dag.test()`` runs one task at a time; a scheduler runs a sweep's trials side by side (up to
        the trial task's ``max_active_tis_per_dag``). So that the embedded default does too, the sweep
        the run's plan task will make is planned here, under the same parent MLflow run, and its trials
        run with the trainer CLI, as many at once as the machine's CPUs allow; the run's trial tasks
        then find each finished trial in the trial cache, and rerun (and report) any that failed. A
        plan that cannot be made here is left for the run's plan task to report. Returns the seconds
        the sweep waited for the warm trainers' warm-up (0 without them)."""
        from cormorant.config import Settings
        from cormorant.lake import Lake
        from cormorant.spec import experiment_name, load_spec
        from cormorant.sweep import local_trial_parallelism, plan_sweep, run_trials_locally, sweep_options
        from cormorant.tracking import find_cached_trial, start_sweep_run

        trial_task = dag.task_dict.get("trial")
        if getattr(trial_task, "partial_kwargs", {}).get("backend", "local") != "local":
            return 0.0
        parallel = local_trial_parallelism()
        if parallel < 2:
            return 0.0
        settings = Settings.from_env()
        spec_path = Path(dag.task_dict["plan_sweep"].spec_path)
        spec = load_spec(spec_path)
        params = {**dag.params.dump(), **conf}
        try:
            plan = plan_sweep(spec, Lake(settings.lake_uri), partition, **sweep_options(params))
        except Exception as exc:  # the plan task says why, with its retry policy
            log.debug("no sweep ahead of %s for %s: %s", dag.dag_id, partition, exc)
            return 0.0
        pending = [
            t
            for t in plan["trials"]
            if find_cached_trial(experiment_name(spec.name), settings, t["cache_key"]) is None
        ]
        if len(pending) < 2:  # nothing to run side by side: the run's trial tasks do it
            return 0.0
        parent = start_sweep_run(spec, settings, end_partition=partition, sweep_key=plan["sweep_key"])
        began = time.time()
        run_trials_locally(
            spec_path,
            [{**t, "parent_run_id": parent} for t in pending],
            parallel=parallel,
            pool=self.trainers,
        )
        return self.trainers.waited_for_warm_up(began) if self.trainers is not None else 0.0

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


@contextlib.contextmanager
def _bundle_synced_once() -> Iterator[None]:
    """``dag.test()`` parses the DAG bundle again and writes every DAG of it to the metadata database
    on every call, so that sibling DAGs are current (apache/airflow#64884): 0.09 s of each of the
    demo's 22 runs. When nothing it parses has changed since a run in this process last synced it (the
    bundle's files, the specs folder's, the ``AIRFLOW_*`` and ``CORMORANT_*`` environment), the parse
    and the write would give the same DAGs, so the run skips them; any change syncs again."""
    global _last_synced
    from airflow.dag_processing import dagbag

    state = _bundle_state()
    if state != _last_synced:
        yield
        _last_synced = state  # dag.test() returned: it synced the bundle before running tasks
        return
    with (
        mock.patch.object(dagbag, "BundleDagBag", return_value=None),
        mock.patch.object(dagbag, "sync_bag_to_db", return_value=None),
    ):
        yield


@contextlib.contextmanager
def _execution_api_for_this_client() -> Iterator[None]:
    """``dag.test()`` runs tasks against Airflow's execution API in the process. Airflow builds it with
    the routes of every API version it still serves (nine, for task SDKs of older releases), generated
    by Cadwyn on its first request: building the app and its first request take 3.1-3.2 s, against
    0.5-0.6 s with the newest version alone (timed alone), for one client, the task SDK in this
    process, which speaks only the newest version. So the runs get the same app built with that
    version alone (:func:`_newest_version_only_execution_api`): the same routes, models and handlers
    (a request of the newest version is migrated in neither), so the same answers."""
    from airflow.sdk.execution_time import supervisor

    api = _newest_version_only_execution_api()
    if api is None:
        yield
        return
    with mock.patch.object(supervisor, "in_process_api_server", return_value=api):
        yield


@functools.lru_cache(maxsize=1)  # one per process, as Airflow's own (supervisor.in_process_api_server)
def _newest_version_only_execution_api() -> Any:
    """Airflow's in-process execution API (``InProcessExecutionAPI``), its app built as Airflow builds
    it but with a version bundle of the newest version alone, and without the routes that only older
    versions have (Cadwyn requires a route marked so to be restored by an older version); its routes
    generated now, by one request, so that a failure to build it shows here. None, so that the runs
    use Airflow's own app with every version, when the task SDK speaks another version, or when
    building this one failed (an Airflow or Cadwyn that moved what it uses: slower, never wrong, with
    a warning that says why)."""
    from airflow.api_fastapi.execution_api import versions
    from airflow.sdk.api.client import API_VERSION

    if versions.bundle.versions[0].value != API_VERSION:
        return None
    try:
        import httpx
        from airflow.api_fastapi.execution_api import routes
        from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
        from cadwyn import HeadVersion, Version, VersionBundle
        from cadwyn.route_generation import _DELETED_ROUTE_TAG
        from fastapi.routing import APIRoute

        newest = VersionBundle(HeadVersion(), Version(API_VERSION))
        router = copy.copy(routes.execution_api_router)
        router.routes = [
            r for r in router.routes if not (isinstance(r, APIRoute) and _DELETED_ROUTE_TAG in r.tags)
        ]
        api = InProcessExecutionAPI()
        with (
            mock.patch.object(versions, "bundle", newest),
            mock.patch.object(routes, "execution_api_router", router),
        ):
            api.app  # noqa: B018 (builds the app, which reads the two names above)
        with httpx.Client(transport=api.transport, base_url="http://in-process.invalid") as client:
            client.get("/health/ping", headers={"airflow-api-version": API_VERSION}).raise_for_status()
    except Exception as exc:
        log.warning("runs use Airflow's own execution API, every version's routes: %s", exc)
        return None
    return api


def _tasks_covered_seconds(task_instances: Any) -> float:
    """The wall time the task instances' runs covered (from each one's start to its end; tasks that ran
    side by side count once); a task that never started adds nothing."""
    from cormorant.ledger import covered_seconds

    return covered_seconds(
        [
            (ti.start_date.timestamp(), ti.end_date.timestamp())
            for ti in task_instances
            if ti.start_date is not None and ti.end_date is not None
        ]
    )


def _bundle_state() -> tuple:
    """What ``dag.test()``'s parse of the DAG bundle depends on: the environment that configures Airflow
    and Cormorant (not the ``AIRFLOW_CTX_*`` context a task leaves behind), and each file of the DAG
    folder and the specs folder (path, size, modification time; Python's bytecode caches left out)."""
    from airflow.configuration import conf

    from cormorant.config import Settings

    env = tuple(
        sorted(
            (k, v)
            for k, v in os.environ.items()
            if k.startswith(("AIRFLOW_", "CORMORANT_")) and not k.startswith("AIRFLOW_CTX_")
        )
    )
    files = []
    for root in (Path(conf.get("core", "dags_folder")), Path(Settings.from_env().specs_dir)):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                stat = path.stat()
                files.append((str(path), stat.st_size, stat.st_mtime_ns))
    return env, tuple(files)
