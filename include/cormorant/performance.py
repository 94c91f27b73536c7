"""Realized performance: how well the model that scored a day did, once the day's labels land.

For a scored day whose labels have landed and passed their suite, the predictions (which record the
model name, version and MLflow run that made them) are joined to the labels by key, and the spec's
metric and its usual companions are computed: ROC AUC, log loss, Brier score, accuracy, precision,
recall and F1 at the decision threshold for classifiers; RMSE, MAE and R² for regression.

The metric is compared with the scoring model's own holdout value (logged by its trial). A drop beyond
``performance.max_drop`` (absolute) or ``performance.max_relative_drop`` (relative) marks the day
``degraded`` and signals retraining, through the same asset as drift; the verdict names the signal.

Every check keeps, in the lake, one row in the ``<spec>/performance`` dataset (the history that plots and
summaries read) and a report (JSON, HTML, and a plot of the metric over time against the holdout), and
in MLflow, the day's metrics on a monitoring run of that model version (step: the day's ordinal) and a
tag on the version itself.
"""

from __future__ import annotations

import logging
import math
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from cormorant.errors import CormorantError, NothingToDo, PartitionNotValidated
from cormorant.lake import Lake
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)

PERFORMANCE = "performance"
SIGNAL = "performance"
MONITORING_TAG = "cormorant.monitoring"


class NotScored(NothingToDo, LookupError):
    """The day has no predictions: there is nothing to measure."""


def performance_dataset(spec: ModelSpec) -> str:
    return f"{spec.name}/{PERFORMANCE}"


def performance_report_prefix(spec: ModelSpec, partition: str) -> str:
    return f"{spec.name}/reports/performance/ds={partition}"


def realized_metrics(
    spec: ModelSpec, y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5
) -> dict[str, float | None]:
    """The spec's metric and its companions; a metric that is undefined on this day (ROC AUC with
    one class) is None."""
    from sklearn import metrics as m

    from cormorant.metrics import compute_metric

    y_true = np.asarray(y_true)
    score = np.asarray(score, dtype="float64")
    if spec.is_classification:
        predicted = score >= threshold
        both = len(np.unique(y_true)) == 2
        values: dict[str, float | None] = {
            "roc_auc": compute_metric("roc_auc", y_true, score) if both else None,
            "log_loss": compute_metric("log_loss", y_true, score),
            "brier": float(m.brier_score_loss(y_true, np.clip(score, 0, 1), pos_label=1)),
            "accuracy": float(m.accuracy_score(y_true, predicted)),
            "precision": float(m.precision_score(y_true, predicted, zero_division=0)),
            "recall": float(m.recall_score(y_true, predicted, zero_division=0)),
            "f1": float(m.f1_score(y_true, predicted, zero_division=0)),
            "positive_rate": float(np.mean(y_true)),
            "predicted_positive_rate": float(np.mean(predicted)),
        }
    else:
        values = {name: _defined(compute_metric, name, y_true, score) for name in ("rmse", "mae", "r2")}
    return values


def _defined(metric: Any, name: str, y_true: np.ndarray, score: np.ndarray) -> float | None:
    """The metric, or None where it is not defined on the day's rows (R² of one row, say)."""
    try:
        return metric(name, y_true, score)
    except ValueError:
        return None


def judge(
    spec: ModelSpec, realized: float | None, holdout: float | None, labeled_rows: int
) -> dict[str, Any]:
    """The verdict of one day: ``degraded`` (retrain), ``ok``, or ``not judged`` (and why)."""
    rules = spec.performance
    metric = spec.training.metric
    out: dict[str, Any] = {"drop": None, "relative_drop": None, "reasons": []}
    if labeled_rows < rules.min_labeled_rows:
        why = (
            f"{labeled_rows} labelled rows; the spec judges days with at least "
            f"min_labeled_rows={rules.min_labeled_rows}"
        )
        return {**out, "verdict": "not judged", "retrain": False, "why": why}
    if realized is None or holdout is None or math.isnan(holdout):
        what = f"{metric} is undefined on this day" if realized is None else "the model has no holdout value"
        return {**out, "verdict": "not judged", "retrain": False, "why": what}
    drop = holdout - realized if spec.metric_higher_is_better else realized - holdout
    relative = drop / abs(holdout) if holdout else (math.inf if drop > 0 else 0.0)
    reasons = []
    if rules.max_drop is not None and drop > rules.max_drop:
        reasons.append(
            f"{metric} {realized:.4f} is {drop:.4f} worse than the holdout {holdout:.4f} "
            f"(max_drop={rules.max_drop})"
        )
    if rules.max_relative_drop is not None and relative > rules.max_relative_drop:
        reasons.append(
            f"{metric} {realized:.4f} is {relative:.1%} worse than the holdout {holdout:.4f} "
            f"(max_relative_drop={rules.max_relative_drop:.0%})"
        )
    degraded = bool(reasons)
    return {
        "drop": float(drop),
        "relative_drop": float(relative),
        "reasons": reasons,
        "verdict": "degraded" if degraded else "ok",
        "retrain": degraded,
        "why": "; ".join(reasons)
        if reasons
        else f"{metric} within the spec's bounds of the holdout {holdout:.4f}",
    }


def degradation_bound(spec: ModelSpec, holdout: float) -> float | None:
    """The value of the metric beyond which a day is degraded, for a model with this holdout value."""
    rules = spec.performance
    sign = -1.0 if spec.metric_higher_is_better else 1.0
    bounds = [
        holdout + sign * drop
        for drop in (
            rules.max_drop,
            None if rules.max_relative_drop is None else rules.max_relative_drop * abs(holdout),
        )
        if drop is not None
    ]
    if not bounds:
        return None
    return max(bounds) if spec.metric_higher_is_better else min(bounds)


_MATCHED = "__cormorant_label_row"


def scored_labels(spec: ModelSpec, lake: Lake, partition: str) -> tuple[pa.Table, dict[str, Any]]:
    """The day's predictions with their labels (rows without a known label left out) and what was
    joined: ``{predictions_rows, labeled_rows, never_labeled_rows, model, predictions_hash,
    labels_hash}`` (never labelled: the label source lists the row with a null target).

    Raises :class:`NotScored` or :class:`cormorant.labels.LabelsNotLanded` (nothing to do yet), or
    :class:`PartitionNotValidated` when the labels failed their suite."""
    import pyarrow.compute as pc

    from cormorant.inference import predictions_dataset
    from cormorant.labels import join_labels, labels_dataset, require_labels

    predictions = lake.manifest(predictions_dataset(spec), partition)
    if predictions is None:
        raise NotScored(f"spec {spec.name!r}, partition {partition}: no predictions (the day was not scored)")
    labels = require_labels(spec, lake, partition)
    keys = spec.source.key_columns
    scored = lake.read(predictions_dataset(spec), partition, columns=[*keys, "score", "model_version"])
    never = 0
    if keys:
        joined = join_labels(spec, lake, partition, scored, matched=_MATCHED)
        # A label row whose target is null: the source says this row will never have an outcome (a
        # cancelled flight), which is not the same as a row the source does not list.
        has_row = pc.is_valid(joined.column(_MATCHED))
        never = int(pc.sum(pc.and_(has_row, pc.is_null(joined.column(spec.target.column)))).as_py() or 0)
        joined = joined.drop_columns([_MATCHED])
    else:  # labels taken from the features, in the feature partition's order (so are the predictions)
        if predictions.source.get("raw_content_hash") != labels.source.get("raw_content_hash"):
            raise PartitionNotValidated(
                f"spec {spec.name!r}, partition {partition}: the predictions and the labels come from "
                f"different commits of the features; score the day again",
                retryable=True,
            )
        target = lake.read(labels_dataset(spec), partition, columns=[spec.target.column])
        joined = scored.append_column(spec.target.column, target.column(spec.target.column))
    known = joined.filter(pc.is_valid(joined.column(spec.target.column)))
    model = predictions.source.get("model") or {}
    return known, {
        "predictions_rows": predictions.row_count,
        "labeled_rows": known.num_rows,
        "never_labeled_rows": never,
        "model": {k: model.get(k) for k in ("name", "version", "run_id")},
        "predictions_hash": predictions.content_hash,
        "labels_hash": labels.content_hash,
    }


def holdout_value(spec: ModelSpec, run_id: str | None) -> float | None:
    """The scoring model's own holdout value of the spec's metric, from its MLflow run."""
    from mlflow import MlflowClient

    if not run_id:
        return None
    value = MlflowClient().get_run(run_id).data.metrics.get(f"holdout_{spec.training.metric}")
    return None if value is None else float(value)


def _history(spec: ModelSpec, lake: Lake, partition: str) -> list[dict[str, Any]]:
    """This day's and the earlier days' rows of the performance dataset, within ``history_days``."""
    day = date.fromisoformat(partition)
    days = [
        p
        for p in lake.partitions(performance_dataset(spec))
        if 0 <= (day - date.fromisoformat(p)).days < spec.performance.history_days
    ]
    return lake.read_many(performance_dataset(spec), days).to_pylist() if days else []


def _monitoring_run(client: Any, spec: ModelSpec, experiment_id: str, model: dict[str, Any]) -> str:
    """The MLflow run that holds a model version's realized performance (one per version)."""
    found = client.search_runs(
        [experiment_id],
        f"tags.`{MONITORING_TAG}` = 'performance' and tags.`cormorant.model_version` = '{model['version']}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"performance of v{model['version']}",
        tags={
            MONITORING_TAG: "performance",
            "cormorant.spec": spec.name,
            "cormorant.model_name": str(model["name"]),
            "cormorant.model_version": str(model["version"]),
            "cormorant.model_run_id": str(model["run_id"]),
        },
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def log_to_mlflow(spec: ModelSpec, settings: Any, report: dict[str, Any]) -> str:
    """The day's metrics on the version's monitoring run (re-running a day logs nothing twice) and a
    tag on the model version; returns the monitoring run's id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from cormorant.tracking import ensure_experiment

    client = MlflowClient()
    model = report["model"]
    run_id = _monitoring_run(client, spec, ensure_experiment(spec, settings), model)
    day = date.fromisoformat(report["partition"])
    step = day.toordinal()
    stamp = int((day - date(1970, 1, 1)).days * 86_400_000)
    values = {f"realized_{k}": v for k, v in report["metrics"].items() if v is not None}
    values["labeled_rows"] = report["labeled_rows"]
    logged = []
    for key, value in values.items():
        history = {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        if (step, float(value)) not in history:
            logged.append(Metric(key, float(value), stamp, step))
    if logged:
        client.log_batch(run_id, metrics=logged)
    metric = spec.training.metric
    realized = report["metrics"].get(metric)
    client.set_model_version_tag(
        model["name"],
        model["version"],
        "cormorant.performance.latest",
        f"{report['partition']}: {metric} "
        + ("n/a" if realized is None else f"{realized:.4f}")
        + f" ({report['verdict']})",
    )
    return run_id


def render_png(spec: ModelSpec, report: dict[str, Any], history: list[dict[str, Any]]) -> bytes:
    """The realized metric per day (a colour per model version) against each version's holdout."""
    from cormorant.drift import figure_png, pyplot

    plt = pyplot()
    metric = spec.training.metric
    fig, ax = plt.subplots(figsize=(8, 3.4))
    versions = sorted({str(h["model_version"]) for h in history}, key=lambda v: int(v) if v.isdigit() else 0)
    for i, version in enumerate(versions):
        rows = sorted(
            (h for h in history if str(h["model_version"]) == version), key=lambda h: h["partition"]
        )
        days = [date.fromisoformat(h["partition"]) for h in rows]
        color = f"C{i % 10}"
        ax.plot(days, [h["realized"] for h in rows], marker="o", color=color, label=f"v{version} realized")
        holdout = next((h["holdout"] for h in rows if h["holdout"] is not None), None)
        if holdout is not None:
            ax.axhline(holdout, color=color, linestyle="--", linewidth=1, label=f"v{version} holdout")
            bound = degradation_bound(spec, holdout)
            if bound is not None:
                ax.axhline(bound, color=color, linestyle=":", linewidth=1, label=f"v{version} bound")
        bad = [(d, h["realized"]) for d, h in zip(days, rows, strict=True) if h["verdict"] == "degraded"]
        if bad:
            ax.scatter(*zip(*bad, strict=True), s=90, facecolors="none", edgecolors="#c0392b", linewidths=2)
    from datetime import timedelta

    import matplotlib.dates as mdates

    days = [date.fromisoformat(h["partition"]) for h in history] or [date.fromisoformat(report["partition"])]
    ax.set_xlim(min(days) - timedelta(days=1), max(days) + timedelta(days=1))
    ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, (max(days) - min(days)).days // 10)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.set_ylabel(metric)
    ax.set_title(f"{spec.name} · realized {metric} by day (circled: degraded) · {report['partition']}")
    ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    return figure_png(fig)


def render_html(report: dict[str, Any], png_name: str = "performance.png") -> str:
    from cormorant.drift import render_template

    return render_template("performance.html.j2", report=report, png_name=png_name)


def check_performance(spec: ModelSpec, lake: Lake, partition: str, settings: Any) -> dict[str, Any]:
    """Measure the day's realized performance and keep it (see the module docstring); returns the
    report with ``report_uri`` and ``html_uri``."""
    from cormorant.tracking import configure

    known, joined = scored_labels(spec, lake, partition)
    configure(settings)
    metric = spec.training.metric
    model = joined["model"]
    if not model.get("run_id"):
        raise CormorantError(
            f"spec {spec.name!r}, partition {partition}: the predictions do not record the model that "
            f"made them"
        )
    y = known.column(spec.target.column).to_numpy(zero_copy_only=False)
    score = known.column("score").to_numpy(zero_copy_only=False)
    metrics = (
        realized_metrics(spec, y, score, spec.performance.decision_threshold)
        if len(y)
        else dict.fromkeys(METRIC_NAMES[spec.target.task])
    )
    holdout = holdout_value(spec, model["run_id"])
    verdict = judge(spec, metrics.get(metric), holdout, joined["labeled_rows"])
    report = {
        "spec": spec.name,
        "partition": partition,
        "metric": metric,
        "model": model,
        "holdout": holdout,
        "metrics": metrics,
        "labeled_rows": joined["labeled_rows"],
        "predictions_rows": joined["predictions_rows"],
        # The day's labels are final when they land: a row without one will not get one. Rows the
        # label source lists without an outcome are counted apart from rows it does not list.
        "never_labeled_rows": joined["never_labeled_rows"],
        "unlabeled_rows": joined["predictions_rows"] - joined["labeled_rows"] - joined["never_labeled_rows"],
        "thresholds": spec.performance.model_dump(),
        "inputs": {"predictions": joined["predictions_hash"], "labels": joined["labels_hash"]},
        "signal": SIGNAL,
        **verdict,
    }
    row = {
        "partition": partition,
        "model_name": model["name"],
        "model_version": str(model["version"]),
        "run_id": model["run_id"],
        "metric": metric,
        "realized": metrics.get(metric),
        "holdout": holdout,
        "labeled_rows": joined["labeled_rows"],
        "verdict": verdict["verdict"],
    }
    lake.write_partition(performance_dataset(spec), partition, pa.Table.from_pylist([row]).to_batches())
    report["mlflow_run_id"] = log_to_mlflow(spec, settings, report)
    prefix = performance_report_prefix(spec, partition)
    lake.write_bytes(f"{prefix}/performance.png", render_png(spec, report, _history(spec, lake, partition)))
    report["html_uri"] = lake.write_bytes(f"{prefix}/report.html", render_html(report).encode())
    report["report_uri"] = lake.uri(f"{prefix}/report.json")
    lake.write_json(f"{prefix}/report.json", report)
    log.info(
        "performance %s/%s: v%s %s %s on %d labelled rows (holdout %s): %s",
        spec.name,
        partition,
        model["version"],
        metric,
        metrics.get(metric),
        joined["labeled_rows"],
        holdout,
        verdict["verdict"],
    )
    return report


METRIC_NAMES = {
    "binary_classification": (
        "roc_auc",
        "log_loss",
        "brier",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "positive_rate",
        "predicted_positive_rate",
    ),
    "regression": ("rmse", "mae", "r2"),
}
