"""What a spec's pipeline has produced, read back from the lake and MLflow (for people and tests)."""

from __future__ import annotations

from typing import Any

from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import ModelSpec


def day_reports(spec: ModelSpec, lake: Lake, day: str) -> dict[str, Any]:
    """What the lake holds for one day: the raw and predictions manifests (or None) and the validation,
    drift, labels and performance reports (or None)."""
    from cormorant.drift import drift_report_prefix
    from cormorant.inference import predictions_dataset
    from cormorant.labels import label_report_key
    from cormorant.performance import performance_report_prefix
    from cormorant.validation import validation_report_key
    from cormorant.warehouse import raw_dataset

    return {
        "raw": lake.manifest(raw_dataset(spec), day),
        "validation": lake.read_json(validation_report_key(spec, day)),
        "predictions": lake.manifest(predictions_dataset(spec), day),
        "drift": lake.read_json(f"{drift_report_prefix(spec, day)}/report.json"),
        "labels": lake.read_json(label_report_key(spec, day)),
        "performance": lake.read_json(f"{performance_report_prefix(spec, day)}/report.json"),
    }


def pipeline_summary(
    spec: ModelSpec, lake: Lake, settings: Settings, *, first: str | None = None, last: str | None = None
) -> dict[str, Any]:
    """Partitions landed (those from ``first`` to ``last``, inclusive, when given), validation
    verdicts, trials, registered versions, predictions and drift."""
    from mlflow import MlflowClient

    from cormorant.drift import drift_report_prefix
    from cormorant.registry import CHAMPION, current_champion
    from cormorant.tracking import configure
    from cormorant.warehouse import raw_dataset

    configure(settings)
    client = MlflowClient()
    partitions = []
    for p in lake.partitions(raw_dataset(spec)):
        if (first and p < first) or (last and p > last):
            continue
        found = day_reports(spec, lake, p)
        validation, predictions, drift = found["validation"] or {}, found["predictions"], found["drift"] or {}
        labels, performance = found["labels"] or {}, found["performance"] or {}
        partitions.append(
            {
                "partition": p,
                "rows": lake.require(raw_dataset(spec), p).row_count,
                "validation": None if not validation else ("passed" if validation["success"] else "failed"),
                "failed_expectations": [
                    f"{f['expectation']}({f['column']})" for f in validation.get("failures", [])
                ],
                "predictions": predictions.row_count if predictions else None,
                "predicted_by": (predictions.source.get("model") or {}).get("version")
                if predictions
                else None,
                "drift": drift.get("verdict"),
                "drifted_features": drift.get("drifted_features"),
                "prediction_drifted": bool((drift.get("prediction") or {}).get("drifted")),
                "drift_signalled": bool(drift.get("retrain")),
                "performance_signalled": bool(performance.get("retrain")),
                "drift_report": lake.uri(f"{drift_report_prefix(spec, p)}/report.html") if drift else None,
                "labels": None if not labels else ("passed" if labels["success"] else "failed"),
                "labeled_rows": labels.get("row_count"),
                "performance": performance.get("verdict"),
                "realized_metric": (performance.get("metrics") or {}).get(spec.training.metric),
                "performance_report": performance.get("html_uri"),
            }
        )
    experiment = client.get_experiment_by_name(spec.experiment_name)
    trials = []
    if experiment is not None:
        runs = client.search_runs(
            [experiment.experiment_id],
            "tags.`cormorant.trial_id` != ''",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )
        metric = spec.training.metric
        trials = [
            {
                "trial": r.data.tags.get("cormorant.trial_id"),
                "family": r.data.tags.get("cormorant.family"),
                "run_id": r.info.run_id,
                "status": r.info.status,
                "cv_mean": r.data.metrics.get(f"cv_{metric}_mean"),
                "cv_std": r.data.metrics.get(f"cv_{metric}_std"),
                "sweep_key": r.data.tags.get("cormorant.sweep_key"),
            }
            for r in runs
        ]
    versions = []
    if client.search_registered_models(f"name = '{spec.registered_model_name}'"):
        for v in client.search_model_versions(f"name = '{spec.registered_model_name}'"):
            versions.append(
                {
                    "version": v.version,
                    "run_id": v.run_id,
                    "aliases": list(v.aliases),
                    "family": v.tags.get("cormorant.family"),
                    "holdout_metric": v.tags.get(f"holdout_{spec.training.metric}"),
                    "promotion": v.tags.get("cormorant.promotion"),
                }
            )
    champion = current_champion(client, spec.registered_model_name)
    return {
        "spec": spec.name,
        "metric": spec.training.metric,
        "partitions": partitions,
        "trials": trials,
        "versions": sorted(versions, key=lambda v: int(v["version"])),
        "champion": {"alias": CHAMPION, "version": champion.version} if champion else None,
    }


def _day_notes(p: dict[str, Any]) -> str:
    """What drifted (the features, and whether the prediction's own distribution did: alone, it is
    easy to miss), what signalled retraining, and the failed expectations."""
    drifted = list(p.get("drifted_features") or [])
    if p.get("prediction_drifted"):
        drifted.append("the prediction" if drifted else "only the prediction's distribution")
    signals = [
        what
        for what, hit in (
            ("drift", p.get("drift_signalled")),
            ("performance", p.get("performance_signalled")),
        )
        if hit
    ]
    notes = [f"drifted: {', '.join(drifted)}"] if drifted else []
    if p.get("performance") == "degraded":
        notes.append("performance degraded")
    if signals:
        notes.append(f"retraining signalled ({' and '.join(signals)})")
    if p.get("failed_expectations"):
        notes.append(f"failed: {', '.join(p['failed_expectations'])}")
    return "".join(f" {n};" for n in notes).rstrip(";")


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    lines = [f"Cormorant pipeline summary: spec {summary['spec']!r}", ""]
    metric = summary["metric"]
    lines.append(
        f"{'partition':<12}{'rows':>7}  {'validation':<11}{'labels':<8}{'predictions':>12}  {'model':>5}  "
        f"{'drift':<8}{'realized ' + metric:<24}"
    )
    for p in summary["partitions"]:
        realized = (
            f"{p['realized_metric']:.4f} {p['performance']}"
            if p.get("realized_metric") is not None
            else p.get("performance") or "-"
        )
        lines.append(
            f"{p['partition']:<12}{p['rows']:>7}  {p['validation'] or '-':<11}{p.get('labels') or '-':<8}"
            f"{p['predictions'] if p['predictions'] is not None else '-':>12}  "
            f"{('v' + p['predicted_by']) if p['predicted_by'] else '-':>5}  {p['drift'] or '-':<8}"
            f"{realized:<24}" + _day_notes(p)
        )
    lines += ["", f"Trials run: {len(summary['trials'])} (MLflow runs, {metric} over CV folds)"]
    sweeps: dict[str, list[dict[str, Any]]] = {}
    for t in summary["trials"]:
        sweeps.setdefault(t["sweep_key"], []).append(t)
    for key, trials in sweeps.items():
        done = [t for t in trials if t["cv_mean"] is not None]
        best = max(done, key=lambda t: t["cv_mean"]) if done else None
        lines.append(
            f"  sweep {key}: {len(trials)} trials; best {best['trial']} ({best['family']}) "
            f"{metric} {best['cv_mean']:.4f} ± {best['cv_std']:.4f}"
            if best
            else f"  sweep {key}: no result"
        )
    lines += ["", "Registered versions:"]
    for v in summary["versions"]:
        aliases = f" @{','.join(v['aliases'])}" if v["aliases"] else ""
        lines.append(
            f"  v{v['version']} {v['family']} holdout {metric} {v['holdout_metric']}{aliases}"
            f" ({v['promotion']})"
        )
    champion = summary["champion"]
    lines.append(f"Champion: v{champion['version']}" if champion else "Champion: none")
    reports = [p["drift_report"] for p in summary["partitions"] if p["drift_report"]]
    if reports:
        lines += ["", "Drift reports:", *(f"  {r}" for r in reports)]
    reports = [p["performance_report"] for p in summary["partitions"] if p.get("performance_report")]
    if reports:
        lines += ["", "Performance reports:", *(f"  {r}" for r in reports)]
    return "\n".join(lines)
