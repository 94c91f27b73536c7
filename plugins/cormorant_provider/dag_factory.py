"""Builds a spec's DAGs: ingest, validate, train, predict, drift, performance, and labels when they
arrive later than the features.

They are chained with Assets (a landed partition triggers validation, a validated one triggers
prediction, landed predictions trigger the drift check, landed labels or predictions trigger the
performance check, and a drift or performance verdict that calls for it triggers training), and each
also has a nightly cron as a safety net. Params are typed, so the UI
shows a form and REST callers are validated by Airflow.

Only the spec's YAML is read at parse time; nothing heavy is imported.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param

from cormorant.spec import FAMILIES, QUALIFIED_IDENTIFIER, ModelSpec, SpecError, invalid_spec_dag_id
from cormorant_provider.assets import spec_asset

FAMILY_LABELS = {"linear": "Linear baseline", "xgboost": "XGBoost", "mlp": "PyTorch MLP"}


class InvalidSpecError(SpecError):
    """A malformed spec, raised where Airflow records it: as the import error of the spec's own DAG
    file (:mod:`cormorant_provider.bundle`), naming the spec file and every bad field."""

    def __init__(self, error: SpecError):
        super().__init__(error.path, error.field, error.problem, more=error.problems[1:])
        self.args = (
            f"{error}\n\nThis spec has no DAGs until its file is fixed; the other specs' DAGs are not "
            "affected.",
        )


class InvalidSpecDag(DAG):
    """Stands in for a malformed spec in its DAG file: the DagBag calls ``validate`` before bagging a
    DAG, so the error is recorded as the file's import error with its own message (a plain raise at
    import would record a traceback through Airflow's importer)."""

    spec_error: SpecError | None = None

    def validate(self) -> None:
        raise InvalidSpecError(self.spec_error or SpecError("<unknown>", "<root>", "invalid spec"))


def _partition_param() -> Param:
    return Param(
        None,
        type=["null", "string"],
        format="date",
        title="Partition date",
        description="The lake partition (YYYY-MM-DD) to process. Empty: the partitions named by the "
        "triggering asset events, else the run's data interval start.",
    )


def _dag(
    spec: ModelSpec, spec_path: Path, stage: str, schedule: Any, params: dict[str, Param], doc: str
) -> DAG:
    return DAG(
        dag_id=spec.dag_id(stage),
        description=f"{spec.name}: {doc.splitlines()[0]}",
        doc_md=f"### {spec.name} · {stage}\n\n{doc}\n\nSpec: `{spec_path.name}`. {spec.description}",
        schedule=schedule,
        start_date=pendulum.parse(spec.start_date, tz=spec.source.timezone),
        catchup=False,
        # Partitions are independent and every run is idempotent, so a run waiting on a late partition
        # (retrying) must not hold the others back; sweeps are heavy, so one at a time.
        max_active_runs=1 if stage == "train" else 4,
        # the zone's tag tells REST clients what a day is here (Airflow's API reports a DAG's zone as UTC)
        tags=["cormorant", f"spec:{spec.name}", stage, f"timezone:{spec.source.timezone}", *spec.tags],
        params={"partition_date": _partition_param(), **params},
        default_args={
            "owner": spec.owner,
            "retries": 2,
            "retry_delay": timedelta(minutes=2),
            "retry_exponential_backoff": True,
        },
        render_template_as_native_obj=True,
    )


def _cron(expression: str, timezone: str = "UTC") -> CronDataIntervalTimetable:
    """Nightly intervals in the spec's time zone: one run per local day, its logical date that day's
    local midnight (which is the partition it processes)."""
    return CronDataIntervalTimetable(expression, timezone=timezone)


def _asset_or_cron(spec: ModelSpec, stage: str, *upstream: str) -> AssetOrTimeSchedule:
    from airflow.sdk import AssetAny

    cron = getattr(spec.schedules, "validate_" if stage == "validate" else stage)
    assets = [spec_asset(spec.name, u) for u in upstream]
    return AssetOrTimeSchedule(
        timetable=_cron(cron, spec.source.timezone),
        assets=assets[0] if len(assets) == 1 else AssetAny(*assets),
    )


def build_spec_dags(
    spec: ModelSpec, spec_path: Path, *, trial_backend: str = "local", trial_retry_delay_s: int = 60
) -> dict[str, DAG]:
    """The five DAGs of one spec, keyed by dag_id."""
    from cormorant.config import LOCAL_TRIAL_SLOTS
    from cormorant_provider.operators.drift import DriftCheckOperator
    from cormorant_provider.operators.inference import BatchInferenceOperator
    from cormorant_provider.operators.ingest import WarehouseToLakeOperator
    from cormorant_provider.operators.labels import LabelValidationOperator, LandLabelsOperator
    from cormorant_provider.operators.performance import PerformanceCheckOperator
    from cormorant_provider.operators.registry import RegisterAndPromoteOperator
    from cormorant_provider.operators.sweep import SweepPlanOperator, SweepTrialOperator
    from cormorant_provider.operators.validation import DataValidationOperator

    path = str(spec_path)
    asset = {
        stage: spec_asset(spec.name, stage)
        for stage in ("raw", "validated", "labels", "model", "predictions", "retrain")
    }
    dags: dict[str, DAG] = {}

    with _dag(
        spec,
        spec_path,
        "ingest",
        _cron(spec.schedules.ingest, spec.source.timezone),
        {
            "source_table": Param(
                None,
                type=["null", "string"],
                pattern=QUALIFIED_IDENTIFIER.pattern,
                title="Source table",
                description="Read this table (same columns) instead of the spec's source, e.g. a corrected "
                "staging copy. A plain identifier, optionally schema-qualified.",
            )
        },
        "Warehouse to lake: one Parquet partition per day, committed atomically.",
    ) as dag:
        WarehouseToLakeOperator(
            task_id="warehouse_to_lake",
            spec_path=path,
            outlets=[asset["raw"]],
            source_table="{{ params.source_table }}",
        )
    dags[dag.dag_id] = dag

    with _dag(
        spec,
        spec_path,
        "validate",
        _asset_or_cron(spec, "validate", "raw"),
        {},
        "Great Expectations gate: the features suite gates scoring (a failure stops the chain and names "
        "each failed expectation)"
        + (
            "; the labels, which come with the features, are landed and gate training."
            if spec.labels_inline
            else "."
        ),
    ) as dag:
        DataValidationOperator(task_id="validate_partition", spec_path=path, outlets=[asset["validated"]])
        if spec.labels_inline:  # a failure here keeps the day out of training, not out of scoring
            LandLabelsOperator(task_id="land_labels", spec_path=path) >> LabelValidationOperator(
                task_id="validate_labels", spec_path=path, outlets=[asset["labels"]]
            )
    dags[dag.dag_id] = dag

    if not spec.labels_inline:
        k = spec.target.available_after_days
        with _dag(
            spec,
            spec_path,
            "labels",
            _cron(spec.schedules.labels, spec.source.timezone),
            {},
            f"Labels that arrive later: the run of day R lands the labels of day R - {k} from the label "
            "source (the typed or param date is the labelled day itself), and the labels suite gates "
            "training and performance monitoring.",
        ) as dag:
            LandLabelsOperator(task_id="land_labels", spec_path=path) >> LabelValidationOperator(
                task_id="validate_labels", spec_path=path, outlets=[asset["labels"]]
            )
        dags[dag.dag_id] = dag

    families = list(spec.training.search_space)
    train_params = {
        "window_days": Param(
            spec.training.window_days,
            type="integer",
            minimum=2,
            maximum=366,
            title="Window (days)",
            description="Days of partitions to train on, ending at "
            "the partition date; the last holdout_days are held out.",
        ),
        "families": Param(
            families,
            type="array",
            minItems=1,
            uniqueItems=True,
            items={"type": "string", "enum": [f for f in FAMILIES if f in families]},
            examples=families,  # the UI shows a multi-select of these; `enum` is what the API enforces
            values_display={f: FAMILY_LABELS.get(f, f) for f in families},
            title="Model families",
            description="Which of the spec's families to sweep.",
        ),
        "max_trials_per_family": Param(
            spec.training.max_trials_per_family,
            type="integer",
            minimum=1,
            maximum=100,
            title="Trials per family",
        ),
        "folds": Param(spec.training.folds, type="integer", minimum=2, maximum=20, title="CV folds"),
    }
    with _dag(
        spec,
        spec_path,
        "train",
        _asset_or_cron(spec, "train", "retrain"),
        train_params,
        "Sweep model families with k-fold CV, register the best as ONNX, promote it if it wins.",
    ) as dag:
        plan = SweepPlanOperator(task_id="plan_sweep", spec_path=path)
        if trial_backend == "kubernetes":
            from cormorant.config import KubernetesSettings
            from cormorant_provider.operators.kubernetes_trial import KubernetesTrialOperator

            # The pool caps the GPU pods running at once (create it: airflow pools set cormorant_gpu 4 ...).
            trials = KubernetesTrialOperator.partial(
                task_id="trial",
                spec_name=spec.name,
                pool=KubernetesSettings.from_env().pool,
                retry_delay=timedelta(seconds=trial_retry_delay_s),
            ).expand(trial=plan.output)
        else:
            trials = SweepTrialOperator.partial(
                task_id="trial",
                spec_path=path,
                backend=trial_backend,
                max_active_tis_per_dag=LOCAL_TRIAL_SLOTS,
                retry_delay=timedelta(seconds=trial_retry_delay_s),
                retry_exponential_backoff=False,
            ).expand(trial=plan.output)
        register = RegisterAndPromoteOperator(
            task_id="register_and_promote",
            spec_path=path,
            plan=plan.output["plan"],
            results=trials.output,
            # The plan is an upstream too: when every trial failed, the plan's success still lets this run
            # (and name each failed trial's cause); when the plan failed, nothing runs here.
            trigger_rule="all_done_min_one_success",
            outlets=[asset["model"]],
        )
        if spec.promotion.approval == "required":
            from cormorant_provider.operators.approval import (
                PromoteApprovedOperator,
                PromotionApprovalOperator,
            )

            approve = PromotionApprovalOperator(
                task_id="approve_promotion",
                spec_path=path,
                timeout=timedelta(minutes=spec.promotion.approval_timeout_minutes),
                retries=0,
            )
            promote = PromoteApprovedOperator(task_id="promote", spec_path=path, outlets=[asset["model"]])
            register >> approve >> promote
    dags[dag.dag_id] = dag

    predict_params = {
        "model_version": Param(
            None,
            type=["null", "string"],
            pattern="^[0-9]+$",
            title="Model version",
            description="A registered version to score with; empty: the champion. It must have passed "
            "its blessing.",
        ),
        "allow_unblessed_version": Param(
            False,
            type="boolean",
            title="Allow an unblessed version",
            description="Score with the model version given even if it did not pass its blessing.",
        ),
    }
    with _dag(
        spec,
        spec_path,
        "predict",
        _asset_or_cron(spec, "predict", "validated"),
        predict_params,
        "Batch inference with ONNX Runtime; predictions carry the model version.",
    ) as dag:
        BatchInferenceOperator(
            task_id="batch_inference",
            spec_path=path,
            model_version="{{ params.model_version }}",
            allow_unblessed="{{ params.allow_unblessed_version }}",
            outlets=[asset["predictions"]],
        )
    dags[dag.dag_id] = dag

    with _dag(
        spec,
        spec_path,
        "drift",
        _asset_or_cron(spec, "drift", "predictions"),
        {},
        "Drift of features and predictions against the training reference (PSI, KS).",
    ) as dag:
        _check_and_signal(
            DriftCheckOperator(task_id="drift_check", spec_path=path), "drift", asset["retrain"]
        )
    dags[dag.dag_id] = dag

    with _dag(
        spec,
        spec_path,
        "performance",
        _asset_or_cron(spec, "performance", "labels", "predictions"),
        {},
        "Realized performance of the version that scored a day, once its labels land, against that "
        "version's holdout metric; a drop beyond the spec's bound signals retraining.",
    ) as dag:
        _check_and_signal(
            PerformanceCheckOperator(task_id="performance_check", spec_path=path),
            "performance",
            asset["retrain"],
        )
    dags[dag.dag_id] = dag
    return dags


def _check_and_signal(check: Any, signal: str, retrain: Any) -> None:
    """check >> retraining_needed (short circuit) >> signal_retraining (emits the retrain asset)."""
    from airflow.providers.standard.operators.python import ShortCircuitOperator

    from cormorant_provider.operators.performance import SignalRetrainingOperator, retraining_needed

    gate = ShortCircuitOperator(
        task_id="retraining_needed", python_callable=retraining_needed, op_args=[check.output]
    )
    gate >> SignalRetrainingOperator(
        task_id="signal_retraining",
        spec_path=check.spec_path,
        verdicts=check.output,
        signal=signal,
        outlets=[retrain],
    )


def spec_dags(spec_path: Path | str) -> dict[str, DAG]:
    """The DAGs of one spec file, keyed by dag_id: what its loader in the specs bundle exposes. A
    malformed spec gives one placeholder whose validation raises :class:`InvalidSpecError`."""
    from cormorant.config import Settings
    from cormorant.spec import load_spec

    path = Path(spec_path)
    try:
        twin = path.with_suffix(".yaml")
        if path.suffix == ".yml" and twin.exists():
            raise SpecError(path, "<file>", f"{twin.name} defines the same spec; keep one of the two files")
        spec = load_spec(path)
    except SpecError as e:
        placeholder = InvalidSpecDag(dag_id=invalid_spec_dag_id(path), schedule=None)
        placeholder.spec_error = e
        return {placeholder.dag_id: placeholder}
    settings = Settings.from_env()
    return build_spec_dags(
        spec, path, trial_backend=settings.trial_backend, trial_retry_delay_s=settings.trial_retry_delay_s
    )
