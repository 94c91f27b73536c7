"""Model specs: one declarative YAML file per use case.

A spec names the source table, the partition column, the features, the target and task, the
validation rules, the sweep's search space, the metric that selects and promotes, and the drift
thresholds. Parsing is cheap (YAML and pydantic only) because DAG files call it at parse time.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cormorant.errors import CormorantError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
QUALIFIED_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
SPEC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# a spec's DAGs, one per stage, each named ``<spec>__<stage>`` (``labels`` only when labels arrive later)
STAGES = ("ingest", "validate", "labels", "train", "predict", "drift", "performance")

# metric -> True when larger is better
METRICS: dict[str, dict[str, bool]] = {
    "binary_classification": {"roc_auc": True, "log_loss": False, "accuracy": True, "f1": True},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
FAMILY_PARAMS: dict[str, dict[str, type]] = {
    "linear": {"C": float, "alpha": float, "max_iter": int},
    "xgboost": {
        "max_depth": int,
        "n_estimators": int,
        "learning_rate": float,
        "subsample": float,
        "colsample_bytree": float,
        "min_child_weight": float,
        "reg_lambda": float,
    },
    "mlp": {
        "hidden_units": int,
        "layers": int,
        "epochs": int,
        "learning_rate": float,
        "batch_size": int,
        "weight_decay": float,
        "dropout": float,
    },
}
FAMILIES = tuple(FAMILY_PARAMS)


def experiment_name(spec_name: str) -> str:
    """The MLflow experiment of a spec's sweeps."""
    return f"cormorant/{spec_name}"


class SpecError(CormorantError, ValueError):
    """A spec file is malformed; the message names the file and every bad field.

    ``field`` and ``problem`` are the first problem's; ``problems`` holds all of them as
    ``(field, problem)`` pairs.
    """

    def __init__(
        self, path: Path | str, field: str, problem: str, *, more: list[tuple[str, str]] | None = None
    ):
        self.path, self.field, self.problem = str(path), field, problem
        self.problems = [(field, problem), *(more or [])]
        super().__init__(self.describe(self.path))

    def describe(self, path: str) -> str:
        """The message, naming the file as ``path`` (the file name alone where a server's folders must
        not show)."""
        if len(self.problems) == 1:
            return f"model spec {path}: field '{self.field}': {self.problem}"
        return f"model spec {path}: {len(self.problems)} problems:\n" + "\n".join(
            f"- field '{f}': {p}" for f, p in self.problems
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _identifier(value: str, *, qualified: bool = False) -> str:
    pattern = QUALIFIED_IDENTIFIER if qualified else IDENTIFIER
    if not pattern.match(value):
        raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, underscores)")
    return value


class _TableOrSql(_Strict):
    """A relation given as exactly one of a table name or a SQL query."""

    table: str | None = None
    sql: str | None = None

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v, qualified=True)

    @model_validator(mode="after")
    def _one_source(self) -> _TableOrSql:
        if (self.table is None) == (self.sql is None):
            raise ValueError("give exactly one of 'table' or 'sql'")
        return self


class SourceSpec(_TableOrSql):
    conn_id: str = "cormorant_warehouse"
    partition_column: str
    key_columns: list[str] = Field(default_factory=list)
    # strict: any change of the source's columns fails ingest; additive: new columns are accepted.
    schema_evolution: Literal["strict", "additive"] = "strict"
    # A partition is a calendar day in this IANA time zone (DST included); the partition column holds
    # instants (timestamptz, or timestamps in UTC). The nightly schedules run in this zone too.
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"{v!r} is not an IANA time zone (such as 'UTC' or 'America/New_York')") from e
        return v

    @field_validator("partition_column")
    @classmethod
    def _partition_column(cls, v: str) -> str:
        return _identifier(v)

    @field_validator("key_columns")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return [_identifier(c) for c in v]


class FeaturesSpec(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @field_validator("numeric", "categorical")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return [_identifier(c) for c in v]

    @model_validator(mode="after")
    def _some(self) -> FeaturesSpec:
        if not self.numeric and not self.categorical:
            raise ValueError("at least one numeric or categorical feature is required")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(both)}")
        return self


class LabelSourceSpec(_TableOrSql):
    """Where labels come from when they are not in the feature source: a table or SQL with the spec's
    ``source.key_columns``, its partition column (the instant of the feature row a label belongs to) and
    the target column."""

    conn_id: str | None = None  # default: source.conn_id
    partition_column: str | None = None  # default: source.partition_column

    @field_validator("partition_column")
    @classmethod
    def _partition_column(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v)


class TargetSpec(_Strict):
    column: str
    task: Literal["binary_classification", "regression"]
    # The label of day D is final on day D + available_after_days; it is (re-)read then. 0: labels come
    # with the features (in the same rows) and are checked when the features are.
    available_after_days: Annotated[int, Field(ge=0, le=365)] = 0
    # A separate label source (a table or SQL keyed like the features); default: the feature source.
    source: LabelSourceSpec | None = None
    # Labels that arrive later must match the day's feature rows by source.key_columns: a labels day
    # that matches none of them fails its suite, and so does one that labels under this fraction of them.
    min_labelled_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return _identifier(v)


class ColumnRule(_Strict):
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    min: float | None = None
    max: float | None = None
    allowed_values: list[Any] | None = None


class ValidationSpec(_Strict):
    min_rows: Annotated[int, Field(ge=0)] = 1
    # For every column but the target, which may have no nulls unless its own rule says otherwise.
    default_max_null_fraction: Annotated[float, Field(ge=0, le=1)] = 0.2
    # Every numeric feature's values are finite (no NaN, +inf or -inf); nulls are governed above.
    finite_numbers: bool = True
    # No two rows of a partition share the values of source.key_columns.
    unique_keys: bool = True
    columns: dict[str, ColumnRule] = Field(default_factory=dict)


class TrialResources(_Strict):
    """What one trial pod asks Kubernetes for (the local backend ignores it)."""

    cpu: str = "2"
    memory: str = "8Gi"
    gpus: Annotated[int, Field(ge=0, le=16)] = 0
    gpu_type: str | None = None  # matched against the node label named by CORMORANT_K8S_GPU_TYPE_LABEL


def _default_resources() -> dict[str, TrialResources]:
    return {
        "linear": TrialResources(cpu="2", memory="4Gi"),
        "xgboost": TrialResources(gpus=1),
        "mlp": TrialResources(gpus=1),
    }


class TrainingSpec(_Strict):
    window_days: Annotated[int, Field(ge=1, le=366)] = 7
    holdout_days: Annotated[int, Field(ge=1, le=30)] = 1
    folds: Annotated[int, Field(ge=2, le=20)] = 5
    metric: str
    min_improvement: Annotated[float, Field(ge=0)] = 0.0
    seed: int = 42
    search_space: dict[str, dict[str, list[Any]]]
    max_trials_per_family: Annotated[int, Field(ge=1, le=100)] = 4
    resources: dict[str, TrialResources] = Field(default_factory=_default_resources)

    @field_validator("search_space")
    @classmethod
    def _space(cls, v: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        if not v:
            raise ValueError("name at least one model family")
        for family, grid in v.items():
            if family not in FAMILY_PARAMS:
                raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
            for param, values in grid.items():
                expected = FAMILY_PARAMS[family].get(param)
                if expected is None:
                    known = ", ".join(FAMILY_PARAMS[family])
                    raise ValueError(f"{family}: unknown parameter {param!r}; expected one of {known}")
                if not values:
                    raise ValueError(f"{family}.{param}: give at least one value")
                for value in values:
                    ok = isinstance(value, (int, float)) if expected is float else isinstance(value, int)
                    if not ok or isinstance(value, bool):
                        raise ValueError(
                            f"{family}.{param}: {value!r} is not a{'n' * (expected is int)} "
                            f"{expected.__name__}"
                        )
        return v


class DriftThresholds(_Strict):
    """Thresholds for one feature or the prediction; an unset one falls back to the spec-wide value."""

    psi_threshold: Annotated[float, Field(gt=0)] | None = None
    ks_pvalue_threshold: Annotated[float, Field(gt=0, lt=1)] | None = None


class DriftSpec(_Strict):
    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    ks_pvalue_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.01
    min_drifted_features: Annotated[int, Field(ge=1)] = 1
    bins: Annotated[int, Field(ge=2, le=100)] = 10
    # Features left out of drift (a day-of-week feature moves every day on daily partitions): still
    # reported, never counted towards the verdict.
    exclude: list[str] = Field(default_factory=list)
    # Thresholds per feature, and for the prediction (the score), overriding the ones above.
    features: dict[str, DriftThresholds] = Field(default_factory=dict)
    prediction: DriftThresholds = Field(default_factory=DriftThresholds)

    def thresholds(self, column: str | None) -> tuple[float, float]:
        """(PSI, KS p-value) thresholds for a feature, or for the prediction when ``column`` is None."""
        own = self.prediction if column is None else self.features.get(column, DriftThresholds())
        psi = self.psi_threshold if own.psi_threshold is None else own.psi_threshold
        ks = self.ks_pvalue_threshold if own.ks_pvalue_threshold is None else own.ks_pvalue_threshold
        return psi, ks


class PerformanceSpec(_Strict):
    """Realized performance, measured once a scored day's labels land, against the model's holdout.

    A day is degraded when the spec's metric is worse than the scoring model's holdout value by more
    than ``max_drop`` (in the metric's units) or ``max_relative_drop`` (a fraction of the holdout value);
    either signals retraining. Days with fewer labelled rows than ``min_labeled_rows`` are reported but
    not judged."""

    max_drop: Annotated[float, Field(gt=0)] | None = None
    max_relative_drop: Annotated[float, Field(gt=0, lt=1)] | None = 0.1
    min_labeled_rows: Annotated[int, Field(ge=1)] = 100
    # The score at or above which a classifier's prediction is the positive class.
    decision_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # Days of earlier reports drawn beside this one in the report's plot.
    history_days: Annotated[int, Field(ge=1, le=366)] = 60


class PromotionSpec(_Strict):
    """What a registered version must pass, besides beating the champion's holdout metric, before the
    ``champion`` alias moves to it (the blessing: :mod:`cormorant.blessing`).

    The registered artifact is always checked in a fresh ONNX Runtime process. Slices are each value of
    each categorical feature and of each column in ``slices``; with ``max_slice_regression`` set (in the
    metric's units), a challenger worse than the champion by more than that on a slice of at least
    ``min_slice_rows`` rows is refused. ``max_ece`` bounds a classifier's expected calibration error.
    ``approval: required`` puts a person's approval between the blessing and the alias move."""

    max_slice_regression: Annotated[float, Field(ge=0)] | None = None
    min_slice_rows: Annotated[int, Field(ge=1)] = 200
    slices: list[str] = Field(default_factory=list)
    max_ece: Annotated[float, Field(gt=0, le=1)] | None = None
    # "required": a person approves (Airflow's human-in-the-loop step) before the alias moves; no
    # answer within approval_timeout_minutes rejects.
    approval: Literal["automatic", "required"] = "automatic"
    approval_timeout_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 30)] = 60 * 24 * 3


class PredictSpec(_Strict):
    """Batch scoring. ``reason_codes: K`` adds, per row, the K features that push its score most and by
    how much (``reason_1`` .. ``reason_K`` with ``reason_i_contribution``, in the model's margin units):
    for XGBoost (its own ``pred_contribs``) and the linear family, null for the MLP (see
    :mod:`cormorant.explain`). ``reason_method: approximate`` trades XGBoost's exact TreeSHAP for its
    path attribution (``approx_contribs``: about 80x faster, also summing to the margin, but not SHAP
    values); the linear family is exact either way. docs/benchmarks.md gives the cost."""

    reason_codes: Annotated[int, Field(ge=0, le=20)] = 0
    reason_method: Literal["exact", "approximate"] = "exact"


class SchedulesSpec(_Strict):
    """Nightly cron expressions, in source.timezone. Downstream stages also run as soon as their input
    asset lands; their cron is the nightly safety net, staggered after ingest."""

    ingest: str = "0 0 * * *"
    validate_: str = Field("0 1 * * *", alias="validate")
    train: str = "0 2 * * *"
    predict: str = "0 3 * * *"
    drift: str = "0 4 * * *"
    # Late labels (target.available_after_days > 0 or target.source): the run of day R lands the labels
    # of day R - available_after_days. Performance also runs as soon as labels or predictions land.
    labels: str = "30 0 * * *"
    performance: str = "0 5 * * *"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("*")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(
                f"{v!r} is not a five-field cron expression (minute hour day month weekday, such as "
                "'0 2 * * *')"
            )
        return v


class ModelSpec(_Strict):
    """A whole use case. Build one with :func:`load_spec` or :func:`parse_spec`."""

    name: str
    description: str = ""
    owner: str = "ml-platform"
    tags: list[str] = Field(default_factory=list)
    schedules: SchedulesSpec = Field(default_factory=SchedulesSpec)
    start_date: str = "2024-01-01"
    source: SourceSpec
    features: FeaturesSpec
    target: TargetSpec
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    training: TrainingSpec
    drift: DriftSpec = Field(default_factory=DriftSpec)
    performance: PerformanceSpec = Field(default_factory=PerformanceSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    predict: PredictSpec = Field(default_factory=PredictSpec)

    @field_validator("start_date", mode="before")
    @classmethod
    def _start_date(cls, v: Any) -> Any:
        """A calendar date (``2024-01-01``; YAML may give it as a date), the DAGs' first interval: at
        midnight in source.timezone."""
        from datetime import date

        if isinstance(v, date):  # a spec built in Python (a datetime is a date too, and is refused below)
            v = v.isoformat()
        if isinstance(v, str):
            try:
                date.fromisoformat(v)
            except ValueError as e:
                raise ValueError(
                    f"{v!r} is not a date; expected YYYY-MM-DD, such as '2024-01-01' ({e})"
                ) from e
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SPEC_NAME.match(v):
            raise ValueError("use lower-case letters, digits and underscores, starting with a letter (<= 40)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        metrics = METRICS[self.target.task]
        if self.training.metric not in metrics:
            raise ValueError(
                f"training.metric {self.training.metric!r} does not fit task {self.target.task}; "
                f"expected one of {', '.join(metrics)}"
            )
        if self.target.column in self.feature_columns:
            raise ValueError(f"target.column {self.target.column!r} is also a feature")
        if self.predict.reason_codes > len(self.feature_columns):
            raise ValueError(
                f"predict.reason_codes {self.predict.reason_codes} asks for more reasons than the spec has "
                f"features ({len(self.feature_columns)})"
            )
        if self.training.holdout_days >= self.training.window_days:
            raise ValueError("training.holdout_days must be smaller than training.window_days")
        if not self.labels_inline and not self.source.key_columns:
            raise ValueError(
                "labels that arrive later (target.available_after_days > 0 or target.source) are joined "
                "to the features by source.key_columns: name them"
            )
        unknown = set(self.validation.columns) - set(self.required_columns)
        if unknown:
            raise ValueError(f"validation.columns names columns the spec does not use: {sorted(unknown)}")
        strangers = sorted(set(self.promotion.slices) - (set(self.required_columns) - {self.target.column}))
        if strangers:
            raise ValueError(f"promotion.slices names columns the spec does not read: {strangers}")
        for where, names in (("drift.exclude", self.drift.exclude), ("drift.features", self.drift.features)):
            strangers = sorted(set(names) - set(self.feature_columns))
            if strangers:
                raise ValueError(f"{where} names columns that are not features: {strangers}")
        return self

    @property
    def feature_columns(self) -> list[str]:
        return [*self.features.numeric, *self.features.categorical]

    @property
    def required_columns(self) -> list[str]:
        """Every column the pipeline reads: keys, partition column, features and the target."""
        return list(dict.fromkeys([*self.raw_columns, self.target.column]))

    @property
    def raw_columns(self) -> list[str]:
        """The columns a feature partition must have: keys, partition column, features, and the target
        too when labels come with the features."""
        cols = [*self.source.key_columns, self.source.partition_column, *self.feature_columns]
        return list(dict.fromkeys([*cols, *([self.target.column] if self.labels_inline else [])]))

    @property
    def label_columns(self) -> list[str]:
        """The columns of a label partition: keys, partition column and the target."""
        return list(
            dict.fromkeys([*self.source.key_columns, self.source.partition_column, self.target.column])
        )

    @property
    def labels_inline(self) -> bool:
        """Labels come in the feature rows, known when the features land (no delay, no label source)."""
        return self.target.available_after_days == 0 and self.target.source is None

    def dag_id(self, stage: str) -> str:
        return f"{self.name}__{stage}"

    @property
    def dag_ids(self) -> list[str]:
        """The ids of this spec's DAGs, one per stage it has."""
        return [self.dag_id(s) for s in STAGES if s != "labels" or not self.labels_inline]

    @property
    def is_classification(self) -> bool:
        return self.target.task == "binary_classification"

    @property
    def metric_higher_is_better(self) -> bool:
        return METRICS[self.target.task][self.training.metric]

    @property
    def registered_model_name(self) -> str:
        return f"cormorant.{self.name}"

    @property
    def experiment_name(self) -> str:
        return experiment_name(self.name)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the spec's content, recorded with every trial and model version."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec model that holds the field at ``loc`` (following nested models and dict values)."""
    import typing

    def as_model(annotation: Any) -> type[BaseModel] | None:
        return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None

    model: type[BaseModel] | None = ModelSpec
    steps = list(loc[:-1])
    while steps and model is not None:
        info = model.model_fields.get(str(steps.pop(0)))
        if info is None:
            return None
        annotation = info.annotation
        nested = as_model(annotation)
        if nested is None and typing.get_origin(annotation) is dict:  # a mapping of names to models
            nested = as_model(typing.get_args(annotation)[1])
            if steps:
                steps.pop(0)
        model = nested
    return model


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _problem(err: dict[str, Any]) -> str:
    from cormorant.errors import closest

    if err["type"] == "extra_forbidden":
        known = _known_fields(err["loc"])
        hint = closest(str(err["loc"][-1]), known)
        return f"unknown field{hint}" + (
            f" (expected one of: {', '.join(known)})" if known and not hint else ""
        )
    if err["type"] == "missing":
        return "required field is missing"
    return err["msg"].removeprefix("Value error, ")


class _SpecLoader(yaml.SafeLoader):
    """YAML's safe loader, keeping dates and times as the text they were written as: the spec's fields
    check them and name the field (PyYAML's own conversion of ``2024-02-30`` raises a bare ValueError
    that names nothing)."""


_SpecLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_scalar)


def parse_spec(text: str, path: Path | str = "<string>") -> ModelSpec:
    """Parse a spec from YAML text. Raises :class:`SpecError` naming ``path`` and the first bad field."""
    try:
        raw = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader
    except yaml.YAMLError as e:
        raise SpecError(path, "<yaml>", f"not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise SpecError(path, "<root>", f"expected a mapping of fields, found {type(raw).__name__}")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as e:
        problems = [(_field_path(err["loc"]), _problem(err)) for err in e.errors()]
        (field, problem), *more = problems
        raise SpecError(path, field, problem, more=more) from e
    expected = Path(path).stem if path != "<string>" else spec.name
    if spec.name != expected:
        raise SpecError(path, "name", f"must match the file name {expected!r}; found {spec.name!r}")
    return spec


def load_spec(path: Path | str) -> ModelSpec:
    """Read and parse one spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(path, "<file>", f"cannot be read: {e}") from e
    return parse_spec(text, path)


def invalid_spec_dag_id(path: Path | str) -> str:
    """The DAG id that stands in for a malformed spec's file (its import error is the file's)."""
    return "cormorant_invalid_spec__" + (re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem)[:200] or "spec")


def discover_specs(specs_dir: Path | str) -> dict[Path, ModelSpec | SpecError]:
    """Parse every ``*.yaml``/``*.yml`` file in a folder; a bad file yields its error, not an exception."""
    found: dict[Path, ModelSpec | SpecError] = {}
    for path in sorted([*Path(specs_dir).glob("*.yaml"), *Path(specs_dir).glob("*.yml")]):
        try:
            found[path] = load_spec(path)
        except SpecError as e:
            found[path] = e
    return found
