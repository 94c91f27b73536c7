"""Drift checks: a partition's features and predictions against the champion's training reference.

The reference (built when the model is trained, logged with it) holds, per numeric feature, the
reference quantile bin edges and fractions plus a sample for the Kolmogorov-Smirnov test, and per
categorical feature the category fractions. PSI is computed for every feature and for the scores;
KS for numeric features and scores. A feature drifts when its PSI exceeds the threshold or its KS
p-value falls below the threshold; retraining is signalled when enough features drift.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any

import numpy as np
import pandas as pd

from cormorant.spec import ModelSpec

EPSILON = 1e-4
SAMPLE_SIZE = 5_000
SCORE = "__score__"


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPSILON) -> float:
    """Population stability index of two fraction vectors over the same bins."""
    e = np.clip(np.asarray(expected, dtype="float64"), eps, None)
    a = np.clip(np.asarray(actual, dtype="float64"), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner bin edges at the reference quantiles (duplicates removed)."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return []
    return sorted(set(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]).tolist()))


def binned_fractions(values: np.ndarray, edges: list[float]) -> list[float]:
    """Fractions per bin (``len(edges) + 1`` bins) plus a last bin for missing values."""
    values = np.asarray(values, dtype="float64")
    missing = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1)
    counts = np.append(counts, missing.sum()).astype("float64")
    return (counts / max(counts.sum(), 1)).tolist()


def category_fractions(values: pd.Series) -> dict[str, float]:
    counts = values.astype(object).where(values.notna(), "<null>").astype(str).value_counts(normalize=True)
    return {str(k): float(v) for k, v in counts.items()}


def _numeric_profile(values: np.ndarray, bins: int, rng: np.random.Generator) -> dict[str, Any]:
    edges = quantile_edges(values, bins)
    present = values[~np.isnan(values)]
    sample = (
        rng.choice(present, size=min(SAMPLE_SIZE, len(present)), replace=False) if len(present) else present
    )
    return {
        "kind": "numeric",
        "edges": edges,
        "fractions": binned_fractions(values, edges),
        "sample": sorted(float(v) for v in sample),
    }


def build_reference(
    frame: pd.DataFrame, scores: np.ndarray, spec: ModelSpec, seed: int = 0
) -> dict[str, Any]:
    """The training reference a drift check compares against (JSON-serialisable)."""
    rng = np.random.default_rng(seed)
    features: dict[str, Any] = {}
    for column in spec.features.numeric:
        features[column] = _numeric_profile(
            pd.to_numeric(frame[column]).to_numpy("float64"), spec.drift.bins, rng
        )
    for column in spec.features.categorical:
        features[column] = {"kind": "categorical", "fractions": category_fractions(frame[column])}
    return {
        "rows": len(frame),
        "features": features,
        "score": _numeric_profile(np.asarray(scores, dtype="float64"), spec.drift.bins, rng),
    }


def _compare_numeric(ref: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    from scipy import stats

    result = {"psi": psi(ref["fractions"], binned_fractions(values, ref["edges"]))}
    present = values[~np.isnan(values)]
    if len(present) and ref["sample"]:
        ks = stats.ks_2samp(ref["sample"], present)
        result.update(ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue))
    else:
        result.update(ks_statistic=None, ks_pvalue=None)
    return result


def _compare_categorical(ref: dict[str, Any], values: pd.Series) -> dict[str, Any]:
    current = category_fractions(values)
    keys = sorted(set(ref["fractions"]) | set(current))
    return {
        "psi": psi([ref["fractions"].get(k, 0.0) for k in keys], [current.get(k, 0.0) for k in keys]),
        "ks_statistic": None,
        "ks_pvalue": None,
        "new_categories": sorted(set(current) - set(ref["fractions"])),
    }


def compare(
    reference: dict[str, Any],
    frame: pd.DataFrame,
    scores: np.ndarray,
    spec: ModelSpec,
    *,
    partition: str,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The drift report of one partition: per-feature and score statistics and the verdict."""
    th = spec.drift
    rows: dict[str, dict[str, Any]] = {}
    for column, ref in reference["features"].items():
        if ref["kind"] == "numeric":
            rows[column] = _compare_numeric(ref, pd.to_numeric(frame[column]).to_numpy("float64"))
        else:
            rows[column] = _compare_categorical(ref, frame[column])
    rows[SCORE] = _compare_numeric(reference["score"], np.asarray(scores, dtype="float64"))
    for stats_ in rows.values():
        by_psi = stats_["psi"] > th.psi_threshold
        by_ks = stats_["ks_pvalue"] is not None and stats_["ks_pvalue"] < th.ks_pvalue_threshold
        stats_["drifted"] = bool(by_psi or by_ks)
        stats_["reasons"] = [r for r, hit in (("psi", by_psi), ("ks", by_ks)) if hit]
    drifted = sorted(c for c, s in rows.items() if s["drifted"] and c != SCORE)
    retrain = len(drifted) >= th.min_drifted_features or rows[SCORE]["drifted"]
    return {
        "spec": spec.name,
        "partition": partition,
        "rows": len(frame),
        "reference_rows": reference["rows"],
        "model": model or {},
        "thresholds": {
            "psi": th.psi_threshold,
            "ks_pvalue": th.ks_pvalue_threshold,
            "min_drifted_features": th.min_drifted_features,
        },
        "features": {c: s for c, s in rows.items() if c != SCORE},
        "prediction": rows[SCORE],
        "drifted_features": drifted,
        "verdict": "drift" if retrain else "stable",
        "retrain": bool(retrain),
    }


def render_png(report: dict[str, Any]) -> bytes:
    """A bar chart of PSI per feature and for the predictions, with the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*report["features"], "prediction"]
    values = [report["features"][n]["psi"] for n in report["features"]] + [report["prediction"]["psi"]]
    colors = ["#c0392b" if v > report["thresholds"]["psi"] else "#2e86c1" for v in values]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, values, color=colors)
    ax.axvline(report["thresholds"]["psi"], color="black", linestyle="--", label="PSI threshold")
    ax.set_xlabel("PSI")
    ax.set_title(f"{report['spec']} · {report['partition']} · {report['verdict']}")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def render_html(report: dict[str, Any], png_name: str = "psi.png") -> str:
    """A one-page report a person can read."""
    rows = [*report["features"].items(), ("prediction", report["prediction"])]
    body = "\n".join(
        f"<tr class={'drift' if s['drifted'] else 'ok'}><td>{html.escape(name)}</td><td>{_fmt(s['psi'])}</td>"
        f"<td>{_fmt(s['ks_statistic'])}</td><td>{_fmt(s['ks_pvalue'])}</td>"
        f"<td>{'drift (' + ', '.join(s['reasons']) + ')' if s['drifted'] else 'stable'}</td></tr>"
        for name, s in rows
    )
    model = report.get("model") or {}
    signal = " — retraining signalled" if report["retrain"] else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Drift · {html.escape(report["spec"])} · {report["partition"]}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
tr.drift td{{background:#fdecea}} .verdict{{font-size:1.3em}}</style></head><body>
<h1>Drift report: {html.escape(report["spec"])}, partition {report["partition"]}</h1>
<p class="verdict">Verdict: <b>{report["verdict"]}</b>{signal}</p>
<p>{report["rows"]} rows compared with a training reference of {report["reference_rows"]} rows
(model {html.escape(str(model.get("name", "")))} version {html.escape(str(model.get("version", "")))}).
Thresholds: PSI &gt; {report["thresholds"]["psi"]}, KS p-value &lt; {report["thresholds"]["ks_pvalue"]}.</p>
<table><tr><th>column</th><th>PSI</th><th>KS statistic</th><th>KS p-value</th><th>status</th></tr>
{body}</table>
<p><img src="{png_name}" alt="PSI per feature"></p>
</body></html>
"""


def drift_report_prefix(spec: ModelSpec, partition: str) -> str:
    return f"{spec.name}/reports/drift/ds={partition}"


def check_partition(spec: ModelSpec, lake: Any, partition: str, settings: Any) -> dict[str, Any]:
    """Compare a partition and its predictions with the reference of the model that made them.

    Only a validated, non-empty commit with predictions made from that very commit is checked.

    Writes ``report.json``, ``report.html`` and ``psi.png`` under the partition's report prefix and
    returns the report (with ``report_uri`` and ``html_uri`` added).
    """
    import mlflow

    from cormorant.errors import PartitionNotValidated
    from cormorant.inference import predictions_dataset, require_scorable
    from cormorant.tracking import configure
    from cormorant.warehouse import raw_dataset

    raw = require_scorable(spec, lake, partition)
    predictions = lake.require(predictions_dataset(spec), partition)
    if predictions.source.get("raw_content_hash") != raw.content_hash:
        raise PartitionNotValidated(
            f"spec {spec.name!r}, partition {partition}: the predictions were made from an earlier commit "
            f"of the partition; the predict DAG has not scored the current one yet",
            retryable=True,
        )
    model = predictions.source.get("model") or {}
    if not model.get("run_id"):
        raise ValueError(f"predictions {spec.name}/ds={partition} do not record the model that made them")
    configure(settings)
    reference = mlflow.artifacts.load_dict(f"runs:/{model['run_id']}/reference.json")
    frame = lake.read(raw_dataset(spec), partition, columns=spec.feature_columns).to_pandas()
    scores = lake.read(predictions_dataset(spec), partition, columns=["score"]).column("score").to_numpy()
    report = compare(
        reference,
        frame,
        scores,
        spec,
        partition=partition,
        model={k: model.get(k) for k in ("name", "version", "run_id")},
    )
    prefix = drift_report_prefix(spec, partition)
    lake.write_bytes(f"{prefix}/psi.png", render_png(report))
    report["html_uri"] = lake.write_bytes(f"{prefix}/report.html", render_html(report).encode())
    report["report_uri"] = lake.uri(f"{prefix}/report.json")
    lake.write_json(f"{prefix}/report.json", report)
    return report
