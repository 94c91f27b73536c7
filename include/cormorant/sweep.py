"""Sweep planning: the training window, its readiness, and the trials to run.

The window is the ``window_days`` days ending at the run's partition; the last ``holdout_days`` are
held out for the champion comparison, the rest is cross-validated. Every partition used must be
committed and have passed validation on its current content; a partition that failed validation
stops the sweep (nothing is trained, nothing promoted).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import sys
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cormorant import __version__
from cormorant.config import LOCAL_TRIAL_SLOTS
from cormorant.errors import CormorantError, PartitionNotValidated
from cormorant.lake import Lake
from cormorant.spec import FAMILIES, ModelSpec, TrialResources
from cormorant.trainer import Trial
from cormorant.validation import require_validated
from cormorant.warehouse import raw_dataset

log = logging.getLogger(__name__)


class SweepNotReady(CormorantError, RuntimeError):
    """The training window cannot be used; the message lists every partition at fault. Retryable only
    when every fault is a partition not validated *yet*."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


def window(end: str, days: int) -> list[str]:
    last = date.fromisoformat(end)
    return [(last - timedelta(days=i)).isoformat() for i in reversed(range(days))]


def grid(space: dict[str, list[Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` points of a parameter grid, in a stable order."""
    names = sorted(space)
    points = [
        dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))
    ]
    return points[:limit]


def ready_partitions(spec: ModelSpec, lake: Lake, candidates: list[str]) -> dict[str, str]:
    """Partitions among ``candidates`` whose features and labels are committed and validated
    (-> their content hashes, ``features+labels``); raises on a bad one.

    Days not in the lake, empty days (a holiday, a gap) and days whose labels have not landed yet
    (they are final ``target.available_after_days`` later) are left out of the window, with a log line.
    """
    from cormorant.labels import LabelsNotLanded, require_labels

    ready: dict[str, str] = {}
    problems: list[PartitionNotValidated] = []
    absent: list[str] = []
    empty: list[str] = []
    unlabelled: list[str] = []
    for partition in candidates:
        manifest = lake.manifest(raw_dataset(spec), partition)
        if manifest is None:
            absent.append(partition)
        elif manifest.row_count == 0:
            empty.append(partition)
        else:
            try:
                require_validated(spec, lake, partition)
                labels = require_labels(spec, lake, partition)
            except LabelsNotLanded:
                unlabelled.append(partition)
            except PartitionNotValidated as e:
                problems.append(e)
            else:
                ready[partition] = f"{manifest.content_hash}+{labels.content_hash}"
    if absent:
        log.info("sweep %s: %d day(s) of the window are not in the lake: %s", spec.name, len(absent), absent)
    if empty:
        log.info("sweep %s: %d day(s) of the window have no rows: %s", spec.name, len(empty), empty)
    if unlabelled:
        log.info(
            "sweep %s: %d day(s) of the window have no labels yet and are left out: %s",
            spec.name,
            len(unlabelled),
            unlabelled,
        )
    if problems:
        raise SweepNotReady(
            f"spec {spec.name!r}: the training window has partitions that cannot be used:\n- "
            + "\n- ".join(str(e) for e in problems),
            retryable=all(e.retryable for e in problems),
        )
    return ready


def usable_days(spec: ModelSpec, lake: Lake) -> list[str]:
    """Every day of the lake a training window could use: features committed with rows and validated,
    labels landed and validated (what :func:`ready_partitions` keeps), whichever run landed them."""
    from cormorant.labels import labels_dataset

    usable = []
    for partition in lake.partitions(labels_dataset(spec)):
        try:
            if ready_partitions(spec, lake, [partition]):
                usable.append(partition)
        except SweepNotReady:
            continue  # failed validation: not usable
    return usable


def check_label_classes(spec: ModelSpec, lake: Lake, train: list[str], holdout: list[str]) -> None:
    """A binary classifier needs both classes in its training days and in its holdout days; refuse the
    sweep before any trial runs otherwise, naming the days and the class counts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cormorant.labels import labels_dataset

    if not spec.is_classification:
        return
    target = spec.target.column
    for role, days in (("training", train), ("holdout", holdout)):
        column = pa.chunked_array(
            [lake.read(labels_dataset(spec), d, columns=[target]).column(target) for d in days]
        )
        counts = {
            str(row["values"]): row["counts"] for row in pc.value_counts(pc.drop_null(column)).to_pylist()
        }
        if len(counts) < 2:
            raise SweepNotReady(
                f"spec {spec.name!r}: the {role} days {days[0]}..{days[-1]} ({len(days)} partition(s)) hold "
                f"one class of {target!r}: counts {counts}; a binary classifier needs both classes "
                f"(widen window_days, or check the label's source)"
            )


def trial_cache_key(spec: ModelSpec, trial: dict[str, Any]) -> str:
    """What makes two trials the same: data (manifest hashes), trainer version, spec, family, params, CV."""
    keyed = {
        k: trial[k]
        for k in (
            "family",
            "params",
            "train_partitions",
            "holdout_partitions",
            "folds",
            "seed",
            "manifest_hashes",
        )
    }
    payload = {"trial": keyed, "trainer": __version__, "spec": spec.fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


SWEEP_PARAMS = ("window_days", "families", "max_trials_per_family", "folds")


def sweep_options(params: Any) -> dict[str, Any]:
    """plan_sweep's keyword arguments from a run's params (None: the spec's value)."""
    return {name: params.get(name) for name in SWEEP_PARAMS}


def local_trial_parallelism(cpus: int | None = None) -> int:
    """How many trials run at once on this machine: its CPUs, at most LOCAL_TRIAL_SLOTS."""
    import os

    return max(1, min(LOCAL_TRIAL_SLOTS, cpus or len(os.sched_getaffinity(0))))


def trial_threads_when_sharing(parallel: int, cpus: int | None = None) -> int:
    """Each of ``parallel`` trials' share of the machine's CPUs, at least one thread."""
    import os

    return max(1, (cpus or len(os.sched_getaffinity(0))) // max(1, parallel))


# Trial kinds by how long a trial usually takes beyond its data (scripts/benchmark_trial.py: the MLP's
# training and export, then XGBoost): a warm pool starts the long ones first.
LONGEST_FIRST = {"mlp": 0, "xgboost": 1, "linear": 2}
# Warm trainers warm up (6-8 s of imports each) while the pipeline ingests and validates its first
# days, on the same CPUs: at a lower priority, they take the CPU the pipeline leaves; a sweep, which
# the pipeline waits on, has the machine to itself either way.
NICE = 10


class TrainerPool:
    """Trainer processes started ahead of the trials and kept (``python -m cormorant.trainer --serve``).

    Each imports what trials use as it starts, while the pipeline does other work, and then serves
    trial after trial: sweeps run on it pay no process start-up or imports. The embedded runner starts
    one per pipeline run (``cormorant run``); a scheduler's trial tasks and pods start their own
    process as before. A worker that died is replaced by a one-off trainer process for its share."""

    def __init__(self, size: int, env: dict[str, str] | None = None):
        import os
        import subprocess
        import tempfile
        import threading
        import time

        self.size = max(1, size)
        self.started_at = time.time()  # when its workers were started
        self.env = {
            **os.environ,
            **(env or {}),
            "CORMORANT_TRIAL_THREADS": str(trial_threads_when_sharing(self.size)),
        }
        self.logs = tempfile.TemporaryDirectory(prefix="cormorant-trainers-")
        self.locks = [threading.Lock() for _ in range(self.size)]
        # when each worker said it had warmed up (its wall clock, time.time()); None until it has
        self.ready_at: list[float | None] = [None] * self.size
        self.workers = []
        for i in range(self.size):
            with open(Path(self.logs.name) / f"trainer-{i}.log", "w") as log_file:
                self.workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "cormorant.trainer", "--serve", "--nice", str(NICE)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log_file,
                        env=self.env,
                        text=True,
                    )
                )
        log.info("started %d warm trainer processes", self.size)

    def run(self, worker: int, spec_path: Path | str, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run ``trials`` one after another on worker ``worker``; their results (none if it died)."""
        import tempfile

        process = self.workers[worker]
        with self.locks[worker], tempfile.TemporaryDirectory(prefix="cormorant-trials-") as tmp:
            output = Path(tmp) / "results.json"
            request = {"spec": str(spec_path), "trials": trials, "output": str(output)}
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                self._answer(worker, "output")
            except (BrokenPipeError, OSError) as exc:
                log.warning("trainer process %d is gone (%s)", process.pid, exc)
            if not output.exists():  # it died on the way: one-off trainer processes take its share
                log.warning(
                    "trainer process %d ended (%s); running its trials afresh", process.pid, process.poll()
                )
                return _run_in_process(spec_path, trials, self.env)
            return json.loads(output.read_text())  # --serve writes a list

    def _answer(self, worker: int, key: str) -> dict[str, Any] | None:
        """Worker ``worker``'s next answer holding ``key`` (None if it ended first); the moment it said
        it was ready is kept on the way (:attr:`ready_at`)."""
        from cormorant.trainer import SERVE_ANSWER

        for line in self.workers[worker].stdout:
            if line.startswith(SERVE_ANSWER):
                answer = json.loads(line[len(SERVE_ANSWER) :])
                if "ready" in answer:
                    self.ready_at[worker] = answer["at"]
                if key in answer:
                    return answer
        return None

    def wait_ready(self) -> None:
        """Block until every worker has done its imports (a benchmark starts its clock after this)."""
        for worker, ready_at in enumerate(self.ready_at):
            if ready_at is None:
                with self.locks[worker]:
                    self._answer(worker, "ready")

    def waited_for_warm_up(self, since: float) -> float:
        """Seconds after ``since`` (a ``time.time()``) until the last worker was warm: what a sweep
        begun then waited for the pool's warm-up (0 if every worker was warm by then)."""
        known = [at for at in self.ready_at if at is not None]
        return max(0.0, max(known) - since) if known else 0.0

    def close(self) -> None:
        for process in self.workers:
            with contextlib.suppress(OSError):
                process.stdin.close()
        for process in self.workers:
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()
                process.wait()
        self.logs.cleanup()

    def __enter__(self) -> TrainerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_in_process(
    spec_path: Path | str, trials: list[dict[str, Any]], env: dict[str, str]
) -> list[dict[str, Any]]:
    """``trials`` in a trainer process of their own (the CLI); the results that came back."""
    import subprocess
    import tempfile

    from cormorant.trainer import trainer_command

    with tempfile.TemporaryDirectory(prefix="cormorant-trials-") as tmp:
        output = Path(tmp) / "results.json"
        proc = subprocess.run(trainer_command(spec_path, trials, output), env=env, capture_output=True)
        if proc.returncode != 0:
            log.info("trials %s: the trainer exited %d", [t["trial_id"] for t in trials], proc.returncode)
        if not output.exists():
            return []
        results = json.loads(output.read_text())
        return results if isinstance(results, list) else [results]


def run_trials_locally(
    spec_path: Path | str,
    trials: list[dict[str, Any]],
    *,
    parallel: int,
    env: dict[str, str] | None = None,
    pool: TrainerPool | None = None,
) -> list[dict[str, Any]]:
    """Run ``trials`` with the trainer CLI in ``parallel`` processes, each running its share of the
    trials one after another (start-up and imports paid once per process) with its share of the CPUs,
    or on ``pool``'s warm processes (its size is the parallelism; they keep the environment they were
    started with, so ``env`` is for the former); the results that came back. The
    trainer records each trial in MLflow under its cache key, so a trial task given the same trial
    afterwards reuses it."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from cormorant.config import Settings
    from cormorant.spec import load_spec
    from cormorant.tracking import ensure_experiment

    lock = threading.Lock()
    parallel = max(1, min(pool.size if pool else parallel, len(trials)))
    threads = trial_threads_when_sharing(pool.size if pool else parallel)
    base = {**os.environ, **(env or {}), "CORMORANT_TRIAL_THREADS": str(threads)}
    # Trainers started side by side on a store that does not exist yet would race to create its tables
    # (SQLite: "table _alembic_tmp_metrics already exists"): create the store and experiment first.
    ensure_experiment(load_spec(spec_path), Settings.from_env(base))

    queue = sorted(trials, key=lambda t: LONGEST_FIRST.get(t["family"], 0))  # stable: plan order within

    def share(worker: int) -> list[dict[str, Any]]:
        if not pool:  # a process per share: its imports are paid once for its share
            return _run_in_process(spec_path, trials[worker::parallel], base)
        done: list[dict[str, Any]] = []
        while True:  # warm processes take the next trial as they come free, the longest kinds first
            with lock:
                if not queue:
                    return done
                trial = queue.pop(0)
            done += pool.run(worker, spec_path, [trial])

    log.info(
        "running %d trials in %d processes, %d thread(s) each%s",
        len(trials),
        parallel,
        threads,
        " (warm)" if pool else "",
    )
    with ThreadPoolExecutor(max_workers=parallel) as pool_threads:
        return [r for rs in pool_threads.map(share, range(parallel)) for r in rs]


def plan_sweep(
    spec: ModelSpec,
    lake: Lake,
    end_partition: str,
    *,
    window_days: int | None = None,
    families: list[str] | None = None,
    max_trials_per_family: int | None = None,
    folds: int | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """The sweep for the window ending at ``end_partition``: trials (as dicts) and the data they use."""
    cfg = spec.training
    days = window_days or cfg.window_days
    chosen = families or list(cfg.search_space)
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model families {unknown}; expected some of {list(FAMILIES)}")
    ready = ready_partitions(spec, lake, window(end_partition, days))
    end = lake.manifest(raw_dataset(spec), end_partition)
    if end is None or end.row_count == 0:
        raise SweepNotReady(
            f"spec {spec.name!r}: the window's last partition {end_partition} "
            + ("is not in the lake yet" if end is None else "has no rows; train on a day with data"),
            retryable=end is None,
        )
    if end_partition not in ready and spec.labels_inline:  # labels that come later may still be pending
        raise SweepNotReady(
            f"spec {spec.name!r}: the labels of the window's last partition {end_partition} have not "
            f"landed yet (the validate DAG lands them with the features)",
            retryable=True,
        )
    partitions = sorted(ready)
    if len(partitions) <= cfg.holdout_days:
        raise SweepNotReady(
            f"spec {spec.name!r}: {len(partitions)} usable partition(s) (validated, with validated labels) "
            f"in the {days}-day window ending {end_partition}; need more than "
            f"holdout_days={cfg.holdout_days}"
            + (
                f" (labels are final {spec.target.available_after_days} day(s) after their day: widen "
                f"window_days or train later)"
                if not spec.labels_inline
                else ""
            )
        )
    train, holdout = partitions[: -cfg.holdout_days], partitions[-cfg.holdout_days :]
    check_label_classes(spec, lake, train, holdout)
    limit = max_trials_per_family or cfg.max_trials_per_family
    points = [(f, p) for f in chosen if f in cfg.search_space for p in grid(cfg.search_space[f], limit)]
    if not points:
        raise ValueError(f"spec {spec.name!r}: none of the families {chosen} is in training.search_space")
    sweep_key = hashlib.sha256(
        json.dumps(
            {
                "spec": spec.fingerprint,
                "data": ready,
                "trainer": __version__,
                "points": points,
                "folds": folds or cfg.folds,
                "holdout": holdout,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:24]
    trials = [
        asdict(
            Trial(
                trial_id=f"{family}-{i}",
                family=family,
                params=params,
                train_partitions=train,
                holdout_partitions=holdout,
                folds=folds or cfg.folds,
                seed=cfg.seed,
                sweep_key=sweep_key,
                parent_run_id=parent_run_id,
                manifest_hashes=ready,
                resources=cfg.resources.get(family, TrialResources()).model_dump(),
            )
        )
        for family in chosen
        for i, params in enumerate(p for f, p in points if f == family)
    ]
    for trial in trials:
        trial["cache_key"] = trial_cache_key(spec, trial)
    log.info(
        "sweep %s: %d trials over %d training and %d holdout partitions (key %s)",
        spec.name,
        len(trials),
        len(train),
        len(holdout),
        sweep_key,
    )
    return {
        "sweep_key": sweep_key,
        "train_partitions": train,
        "holdout_partitions": holdout,
        "trials": trials,
    }
