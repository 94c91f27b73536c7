"""The trainer: one sweep trial, as a CLI, so the same code runs in a Kubernetes pod or locally.

    python -m cormorant.trainer --spec include/specs/churn.yaml --trial trial.json --output result.json

A trial reads its training partitions from the lake, cross-validates one family and parameter set,
refits on the whole training window, exports the model with its preprocessing to ONNX, scores the
holdout through ONNX Runtime, and logs everything to an MLflow child run of the sweep. The result
JSON (a reference: run id, model URI, metrics) is what the orchestrator reads back.

A trial that fails still writes a result: ``status: failed``, the cause, and whether a retry can help
(``retryable``: a lost connection can; bad data or bad hyper-parameters cannot), and exits with
:data:`EXIT_DETERMINISTIC` or :data:`EXIT_RETRYABLE`. Every outcome is also kept in the lake under
``<spec>/sweeps/<sweep key>/trials/<trial id>.json``, where the sweep's selection reads the causes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import sys
import time
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cormorant import __version__, ledger
from cormorant.config import Settings
from cormorant.errors import CormorantError, first_line
from cormorant.lake import Lake
from cormorant.spec import ModelSpec, load_spec

log = logging.getLogger("cormorant.trainer")

PARITY_TOLERANCE = 1e-4
EXIT_RETRYABLE = 1
EXIT_DETERMINISTIC = 3
SERVE_ANSWER = "cormorant-trainer: "  # how --serve's answers begin
# "fresh": a process for its trials (the CLI, a pod); "warm": a kept one (--serve), tagged on each run
TRAINER_PROCESS = "fresh"
# A warm trainer's BLAS and OpenMP pools, found once its warm-up has loaded them (threadpoolctl's
# ThreadpoolController; finding them again for each trial is 5-7 ms). None: found per trial.
WARM_POOLS: Any = None
# Errors a retry of the same trial on the same data would hit again.
DETERMINISTIC = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, NotImplementedError)


class TrialDataError(CormorantError, ValueError):
    """Bad data reached the trainer (validation is the gate; this names the day and column anyway)."""


class TrialSpecError(CormorantError, ValueError):
    """A trial's JSON that no retry can fix (a field missing)."""


@dataclass
class Trial:
    """What one trial needs; built by the sweep plan and passed to the CLI as JSON."""

    trial_id: str
    family: str
    params: dict[str, Any]
    train_partitions: list[str]
    holdout_partitions: list[str]
    folds: int
    seed: int
    sweep_key: str = ""
    parent_run_id: str | None = None
    manifest_hashes: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # for the pod; the trainer ignores it
    cache_key: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        """The trial a plan sent. A key this trainer does not know (a plan made by a newer Cormorant
        than the trainer image: version skew) is dropped with a warning naming it, not a crash that
        every retry of every trial would repeat; a missing field is a deterministic error naming it."""
        from dataclasses import fields

        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning(
                "trial %s: ignoring field(s) %s that this trainer (cormorant %s) does not know; the plan "
                "was made by another version",
                data.get("trial_id", "?"),
                unknown,
                __version__,
            )
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise TrialSpecError(f"trial JSON {data.get('trial_id', '?')!r}: missing field(s) {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})


def check_trial_data(spec: ModelSpec, partition: str, table: Any) -> None:
    """Refuse what no model can train on, naming the day and column: infinite numbers in a feature,
    nulls in the target. (NaN in a feature is a missing value here: the preprocessing imputes it.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    problems = []
    for column in spec.features.numeric:
        values = table.column(column)
        if pa.types.is_floating(values.type):
            count = pc.sum(pc.is_inf(values)).as_py() or 0
            if count:
                problems.append(f"column {column!r}: {count} infinite value(s)")
    nulls = table.column(spec.target.column).null_count
    if nulls:
        problems.append(f"target column {spec.target.column!r}: {nulls} null(s)")
    if problems:
        raise TrialDataError(
            f"spec {spec.name!r}, partition {partition}: the trainer cannot use this data: "
            + "; ".join(problems)
            + " (validation should have refused it: check the spec's validation rules)"
        )


def load_frames(spec: ModelSpec, lake: Lake, partitions: list[str]) -> Any:
    """The partitions' features with their known labels (:func:`cormorant.labels.training_table`: rows
    whose label is not known yet are left out and counted), checked day by day (:func:`check_trial_data`)."""
    import pyarrow as pa

    from cormorant.labels import training_table

    tables = []
    for partition in partitions:
        table = training_table(spec, lake, partition)
        check_trial_data(spec, partition, table)
        tables.append(table)
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def trainer_command(
    spec_path: Path | str, trial: dict[str, Any] | list[dict[str, Any]], output: Path | str
) -> list[str]:
    """The trainer CLI invocation for ``trial`` (or several, run in one process): what the local
    backend runs (a pod runs the same arguments in the trainer image)."""
    trials = trial if isinstance(trial, list) else [trial]
    given = [arg for t in trials for arg in ("--trial", json.dumps(t, sort_keys=True))]
    return [
        sys.executable,
        "-m",
        "cormorant.trainer",
        "--spec",
        str(spec_path),
        *given,
        "--output",
        str(output),
    ]


def serving_requirements() -> list[str]:
    """The pip requirements logged with a model: what scores it (ONNX Runtime) and reads it (onnx)."""
    return list(_installed_serving_requirements())


@functools.cache
def _installed_serving_requirements() -> tuple[str, ...]:
    """Read once per process: the versions a process has imported do not change under it."""
    from importlib.metadata import version

    return (f"onnx=={version('onnx')}", f"onnxruntime=={version('onnxruntime')}")


@contextlib.contextmanager
def checked_against_stated_requirements() -> Any:
    """Log a model with MLflow's requirement check reading only the packages :func:`serving_requirements`
    states, where this process has not mapped every installed package yet.

    Logging a model, MLflow checks each stated requirement against the installed version, and first
    maps every installed distribution's files to the modules they hold (``packages_distributions``:
    0.5-0.9 s of a fresh trainer process's trial with Airflow installed beside it), which the check only
    needs for a package whose version cannot be read by its name. The stated requirements are read by
    name from the installed versions, so a map of just them gives the same verdict and the same logged
    files. MLflow keeps that map per process: it is put back unbuilt afterwards, so that anything else
    in the process builds the whole one. Where the whole map is built already, this does nothing."""
    from mlflow.utils import requirements_utils as mapped

    if getattr(mapped, "_MODULES_TO_PACKAGES", True) is not None:  # built, or an MLflow without it
        yield
        return
    stated = ["mlflow", *(requirement.split("==")[0] for requirement in serving_requirements())]
    mapped._MODULES_TO_PACKAGES = {name: [name] for name in stated}
    try:
        yield
    finally:
        mapped._MODULES_TO_PACKAGES = mapped._PACKAGES_TO_MODULES = None


def trial_record_key(spec_name: str, sweep_key: str, trial_id: str) -> str:
    """Where a trial's outcome is kept in the lake (the sweep's selection reads failures from here)."""
    return f"{spec_name}/sweeps/{sweep_key or 'adhoc'}/trials/{trial_id}.json"


def failure_result(trial: Trial, error: BaseException) -> dict[str, Any]:
    """The result of a failed trial: its cause in one line, and whether a retry can help."""
    retryable = getattr(error, "retryable", not isinstance(error, DETERMINISTIC))
    cause = type(error).__name__ + (f": {first_line(error)}" if str(error).strip() else "")
    return {
        "trial_id": trial.trial_id,
        "family": trial.family,
        "params": trial.params,
        "status": "failed",
        "error": cause,
        "retryable": bool(retryable),
    }


def information_criteria(trained: Any, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AIC and BIC of a linear model on its training rows (k: coefficients and intercept; the L2
    penalty is not discounted from k), reported beside the CV scores; the selection rule is unchanged.
    Classifiers: the Bernoulli log-likelihood of the scores; regression: the Gaussian one with the
    residual variance."""
    model, n = trained.model, len(y)
    k = int(np.size(model.coef_)) + int(np.size(getattr(model, "intercept_", 0)))
    if trained.classification:
        p = np.clip(scores, 1e-15, 1 - 1e-15)
        log_likelihood = float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
    else:
        variance = max(float(np.mean((y - scores) ** 2)), 1e-300)
        log_likelihood = -0.5 * n * (np.log(2 * np.pi * variance) + 1)
    return {"aic": 2 * k - 2 * log_likelihood, "bic": k * np.log(n) - 2 * log_likelihood}


def cross_validate(spec: ModelSpec, trial: Trial, frame: Any, device: str) -> list[float]:
    """Per-fold metric values; preprocessing is fitted inside each fold (no leakage)."""
    from cormorant import families
    from cormorant.features import FittedPreprocessor, target_vector
    from cormorant.metrics import compute_metric, cv_splits

    y = target_vector(frame, spec)
    scores = []
    for train_idx, test_idx in cv_splits(y, trial.folds, trial.seed, stratified=spec.is_classification):
        train, test = frame.iloc[train_idx], frame.iloc[test_idx]
        pre = FittedPreprocessor(spec, train)
        model = families.fit(
            trial.family,
            pre.transform(train),
            y[train_idx],
            trial.params,
            classification=spec.is_classification,
            seed=trial.seed,
            device=device,
        )
        scores.append(
            compute_metric(
                spec.training.metric, y[test_idx], families.predict_score(model, pre.transform(test))
            )
        )
    return scores


def log_trial_metrics(
    run_id: str, model_id: str, metrics: dict[str, float], folds_key: str, folds: list[float]
) -> None:
    """The trial's metrics, and each CV fold's score as a step of ``folds_key``, in one write linked to
    the logged model (what ``mlflow.log_metrics(..., model_id=)`` does, with the folds' steps).

    Written after the model: logging a model copies each metric already on its run to it, a query
    and a write per metric; the run and the model show the same metrics either way."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    written = [Metric(folds_key, v, now, i, model_id=model_id, run_id=run_id) for i, v in enumerate(folds)]
    written += [Metric(k, v, now, 0, model_id=model_id, run_id=run_id) for k, v in metrics.items()]
    MlflowClient().log_batch(run_id, metrics=written)


def run_trial(spec: ModelSpec, trial: Trial, settings: Settings) -> dict[str, Any]:
    """Run one trial end to end and return its result contract (see the module docstring)."""
    import mlflow

    from cormorant import families
    from cormorant.drift import build_reference
    from cormorant.explain import log_explainer
    from cormorant.export import export_model, onnx_scores, onnx_session
    from cormorant.features import FittedPreprocessor, onnx_feed, target_vector
    from cormorant.importance import feature_importance
    from cormorant.metrics import compute_metric
    from cormorant.tracking import ensure_experiment

    started = time.monotonic()
    device = families.device_for(trial.family)
    families.import_for(trial.family)
    log.info("trial %s: %s %s on %s", trial.trial_id, trial.family, trial.params, device)
    lake = Lake(settings.lake_uri)
    train = load_frames(spec, lake, trial.train_partitions)
    holdout = load_frames(spec, lake, trial.holdout_partitions)
    experiment_id = ensure_experiment(spec, settings)

    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{trial.trial_id}",
        parent_run_id=trial.parent_run_id,
        nested=trial.parent_run_id is not None,
        tags={
            "cormorant.spec": spec.name,
            "cormorant.family": trial.family,
            "cormorant.trial_id": trial.trial_id,
            "cormorant.sweep_key": trial.sweep_key,
            "cormorant.spec_fingerprint": spec.fingerprint,
            "cormorant.trainer_version": __version__,
            "cormorant.device": device,
            "cormorant.cache_key": trial.cache_key,
            "cormorant.trainer_process": TRAINER_PROCESS,
        },
    ) as run:
        mlflow.log_params({**trial.params, "family": trial.family, "folds": trial.folds, "seed": trial.seed})
        mlflow.log_dict(
            {
                "train": trial.train_partitions,
                "holdout": trial.holdout_partitions,
                "manifest_hashes": trial.manifest_hashes,
            },
            "inputs.json",
        )
        cv_started = time.monotonic()
        fold_scores = cross_validate(spec, trial, train, device)
        metric = spec.training.metric
        cv_mean, cv_std = float(np.mean(fold_scores)), float(np.std(fold_scores, ddof=1))
        cv_seconds = time.monotonic() - cv_started
        ledger.add("fitting and scoring", time.time() - cv_seconds, time.time(), trial=trial.trial_id)

        refit_started = time.monotonic()
        pre = FittedPreprocessor(spec, train)
        y_train = target_vector(train, spec)
        X_train = pre.transform(train)
        fitted = families.fit(
            trial.family,
            X_train,
            y_train,
            trial.params,
            classification=spec.is_classification,
            seed=trial.seed,
            device=device,
        )
        refit_seconds = time.monotonic() - refit_started
        ledger.add("fitting and scoring", time.time() - refit_seconds, time.time(), trial=trial.trial_id)
        onnx_model = export_model(pre, fitted, spec, X_train.shape[1], graph_cache=settings.graph_cache)
        log_explainer(spec, fitted, pre, X_train)  # per-row reason codes at scoring time
        session = onnx_session(onnx_model, threads=families.trial_threads())
        scoring_started = time.monotonic()
        holdout_scores = onnx_scores(session, onnx_feed(holdout, spec))
        native = families.predict_score(fitted, pre.transform(holdout))
        parity = float(np.max(np.abs(holdout_scores - native))) if len(native) else 0.0
        if parity > PARITY_TOLERANCE:
            raise RuntimeError(
                f"ONNX export of {trial.family} differs from the native model by {parity:.2e} "
                f"(> {PARITY_TOLERANCE}) on the holdout"
            )
        holdout_metric = compute_metric(metric, target_vector(holdout, spec), holdout_scores)
        train_scores = onnx_scores(session, onnx_feed(train, spec))
        mlflow.log_dict(
            feature_importance(spec, fitted, pre, session, holdout, seed=trial.seed), "importance.json"
        )
        # fitting and scoring: the trial's compute; everything else is its fixed cost
        scoring_seconds = time.monotonic() - scoring_started
        ledger.add("fitting and scoring", time.time() - scoring_seconds, time.time(), trial=trial.trial_id)
        compute_seconds = cv_seconds + refit_seconds + scoring_seconds
        metrics = {
            f"cv_{metric}_mean": cv_mean,
            f"cv_{metric}_std": cv_std,
            f"holdout_{metric}": holdout_metric,
            "onnx_parity_max_abs_diff": parity,
            "cv_seconds": cv_seconds,
            "compute_seconds": compute_seconds,
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            **(information_criteria(fitted, y_train, train_scores) if trial.family == "linear" else {}),
        }
        # compact: log_dict indents, which takes json's Python encoder (the reference is tens of thousands
        # of numbers: 33 ms indented against 8 ms, and twice the bytes)
        mlflow.log_text(json.dumps(build_reference(train, train_scores, spec), default=str), "reference.json")
        # what serving needs, stated: MLflow would otherwise infer it by importing the model's modules in
        # a subprocess (2 s of every trial)
        with checked_against_stated_requirements():
            info = mlflow.onnx.log_model(onnx_model, name="model", pip_requirements=serving_requirements())
        seconds = time.monotonic() - started
        log_trial_metrics(
            run.info.run_id, info.model_id, {**metrics, "trial_seconds": seconds}, f"cv_{metric}", fold_scores
        )
        result = {
            "trial_id": trial.trial_id,
            "family": trial.family,
            "params": trial.params,
            "status": "ok",
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "metric": metric,
            "cv_mean": cv_mean,
            "cv_std": cv_std,
            "cv_folds": fold_scores,
            "holdout_metric": holdout_metric,
            "onnx_parity": parity,
            "device": device,
            "seconds": round(seconds, 2),
            "compute_seconds": round(compute_seconds, 3),
        }
        mlflow.log_dict(result, "result.json")  # what a cache hit returns
    log.info(
        "trial %s: cv %s %.4f ± %.4f, holdout %.4f (%.1fs)",
        trial.trial_id,
        metric,
        cv_mean,
        cv_std,
        holdout_metric,
        seconds,
    )
    return result


def warm_up() -> None:
    """Import what trials use, ahead of the first one: MLflow, scikit-learn and skl2onnx, XGBoost and
    onnxmltools, ONNX Runtime, and (where installed) torch with its ONNX exporter (one export of a tiny
    MLP imports torch, ``torch._dynamo``, which the first optimiser step would, and onnxscript)."""
    import importlib

    for name in (
        "mlflow",
        "mlflow.onnx",
        "mlflow.pyfunc",  # what logging a model imports on its first call (55 ms)
        "sklearn.linear_model",
        "skl2onnx",
        "xgboost",
        "onnxmltools",
        "onnxruntime",
        "cormorant.export",
        "cormorant.features",
        "cormorant.explain",
        "cormorant.importance",
        "cormorant.drift",
    ):
        try:
            importlib.import_module(name)
        except ImportError:
            log.debug("warm-up: %s is not installed", name)
    # What a process's first trial builds once, done now: what torch's ONNX exporter keeps (the first
    # export of an MLP took 2.9 s under the profiler, later ones 1.7 s). MLflow's map of every installed
    # package is not built: a trial's requirement check reads only the stated ones
    # (checked_against_stated_requirements), and the whole map is 0.35-1.5 s of each trainer's CPU.
    from cormorant import families

    with contextlib.suppress(ImportError):  # a trainer image without torch serves the other families
        families.warm_exporter()
    with contextlib.suppress(Exception):  # the first trial opens it then, and says why it cannot
        open_tracking_store(Settings.from_env())
    with contextlib.suppress(Exception):  # the tags MLflow gives every run (the source's git commit,
        # found once per process with GitPython: 40-60 ms of the first run), resolved and kept now
        from mlflow.tracking.context.registry import resolve_tags

        resolve_tags()
    global WARM_POOLS
    with contextlib.suppress(ImportError):
        from threadpoolctl import ThreadpoolController

        WARM_POOLS = ThreadpoolController()  # every pool a trial loads is loaded by now


def open_tracking_store(settings: Settings) -> None:
    """Open MLflow's SQL tracking store now, where it exists: a process's first run otherwise pays for
    it (SQLAlchemy and the schema check: 0.8-1.1 s on this machine); MLflow keeps the store per URI. A
    SQLite store that does not exist yet is left to whoever creates it (trainers opening it side by
    side would race to create its tables); a tracking server has no store to open here."""
    from mlflow import MlflowClient

    from cormorant.tracking import configure

    sqlite = settings.mlflow_sqlite_path
    if settings.mlflow_served or (sqlite is not None and not sqlite.exists()):
        return
    configure(settings)
    MlflowClient().search_experiments(max_results=1)


def serve() -> int:
    """Serve trials to a parent that keeps this process (:class:`cormorant.sweep.TrainerPool`).

    It warms up and says so, and when (:data:`SERVE_ANSWER` ``{"ready": true, "at": TIME}``); then for
    each line of JSON on stdin, ``{"spec": PATH, "trials": [...], "output": PATH}``, it runs the trials
    as the CLI does, writes their results to ``output`` and answers :data:`SERVE_ANSWER`
    ``{"output": PATH, "code": N}``. It ends at the end of stdin."""
    import os

    global TRAINER_PROCESS
    TRAINER_PROCESS = "warm"
    # answers on a copy of stdout; anything else printed (by any library) goes to stderr
    stdout = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    warm_up()
    stdout.write(SERVE_ANSWER + json.dumps({"ready": True, "at": time.time()}) + "\n")
    stdout.flush()
    settings = Settings.from_env()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        results, code = _run_all(_spec_as_it_is(request["spec"]), request["trials"], settings)
        Path(request["output"]).write_text(json.dumps(results, sort_keys=True))
        stdout.write(SERVE_ANSWER + json.dumps({"output": request["output"], "code": code}) + "\n")
        stdout.flush()
    stdout.close()
    return 0


def _spec_as_it_is(path: str) -> ModelSpec:
    """The spec file as it is now: parsed again only when it changed (a warm trainer gets a request per
    trial, most with the same spec; parsing and checking it is 7-15 ms)."""
    import os

    stat = os.stat(path)
    return _parsed_spec(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _parsed_spec(path: str, mtime_ns: int, size: int) -> ModelSpec:
    return load_spec(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cormorant-trainer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep running: warm up, then run the trials asked for on stdin (one JSON request per line)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="lower this process's CPU priority by this much (os.nice)",
    )
    parser.add_argument("--spec", type=Path, help="the model spec YAML file")
    parser.add_argument(
        "--trial",
        action="append",
        help="the trial as JSON, or @FILE to read it from a file; several run one after another in this "
        "process (its start-up and imports paid once)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the result JSON, a list for several trials (default: stdout)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.nice:
        import os

        os.nice(args.nice)
    if args.serve:
        return serve()
    if args.spec is None or not args.trial:
        parser.error("--spec and --trial are required (or --serve)")
    given = [json.loads(Path(g[1:]).read_text() if g.startswith("@") else g) for g in args.trial]
    results, code = _run_all(load_spec(args.spec), given, Settings.from_env())
    text = json.dumps(results[0] if len(results) == 1 else results, sort_keys=True)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)
    return code


def _run_all(
    spec: ModelSpec, trials: list[dict[str, Any]], settings: Settings
) -> tuple[list[dict[str, Any]], int]:
    """Run and record ``trials`` one after another; their results, and the exit code the first failure
    calls for (0 if none failed)."""
    results, code = [], 0
    for given in trials:
        try:
            trial = Trial.from_dict(given)
        except TrialSpecError as e:
            log.error("%s", e)
            results.append(
                {
                    "trial_id": given.get("trial_id"),
                    "family": given.get("family"),
                    "params": given.get("params"),
                    "status": "failed",
                    "error": f"{type(e).__name__}: {e}",
                    "retryable": False,
                }
            )
            code = code or EXIT_DETERMINISTIC
            continue
        result, trial_code = _run_and_record(spec, trial, settings)
        results.append(result)
        code = code or trial_code
    return results, code


def _run_and_record(spec: ModelSpec, trial: Trial, settings: Settings) -> tuple[dict[str, Any], int]:
    """Run one trial, keep its record in the lake; its result and the exit code it calls for."""
    from threadpoolctl import threadpool_limits

    from cormorant.families import trial_threads

    code = 0
    try:
        # The BLAS and OpenMP pools that numpy, SciPy, scikit-learn and torch load start a thread per
        # CPU, whatever the trial was given, and spin between calls: trials side by side then take
        # each other's CPUs. They get the trial's threads, as its fits and ONNX sessions do.
        with WARM_POOLS.limit(limits=trial_threads()) if WARM_POOLS else threadpool_limits(trial_threads()):
            result = run_trial(spec, trial, settings)
    except Exception as e:
        result = failure_result(trial, e)
        code = EXIT_RETRYABLE if result["retryable"] else EXIT_DETERMINISTIC
        log.error("trial %s (%s) failed: %s", trial.trial_id, trial.family, result["error"], exc_info=True)
    try:
        Lake(settings.lake_uri).write_json(
            trial_record_key(spec.name, trial.sweep_key, trial.trial_id), result
        )
    except Exception:  # the result file still carries the outcome
        log.warning("trial %s: could not keep its record in the lake", trial.trial_id, exc_info=True)
    return result, code


def cli() -> None:
    """The CLI's entry point: :func:`main`, then an exit that skips tearing the interpreter down.

    Everything a trainer writes is written and flushed by then (results, MLflow runs, the lake's
    records, logs); what is left is Python finalizing every module that trials import (torch,
    onnxscript, MLflow ...): 2.0-2.5 s measured on this machine, on every trial process and pod."""
    import os

    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
