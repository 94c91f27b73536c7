"""Drift checks: a partition's features and predictions against the champion's training reference.

The reference (built when the model is trained, logged with it) holds, per numeric feature, the
reference quantile bin edges and fractions plus a sample for the Kolmogorov-Smirnov test, and per
categorical feature the category fractions. The edges include the reference's minimum and (just
above) its maximum, so values outside the training range fall in bins of their own: a feature that was
constant in training and moves to another constant shows a PSI, not 0. PSI is computed for every
feature and for the scores; KS for numeric features and scores. A feature drifts when its PSI exceeds
its threshold or its KS p-value falls below its threshold (``drift.features`` and ``drift.prediction``
override the spec-wide ones); features in ``drift.exclude`` are reported but not counted. Retraining
is signalled when enough features drift, or the prediction does. Categories not seen in training are
counted. The HTML report shows each drifted feature's distribution against the reference.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cormorant.spec import ModelSpec

EPSILON = 1e-4
SAMPLE_SIZE = 5_000
SCORE = "__score__"
MAX_CATEGORIES = 20  # the report's bar pairs show the most frequent categories


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


def reference_edges(values: np.ndarray, bins: int) -> list[float]:
    """The quantile edges plus the reference's range: its minimum, and the next float above its maximum
    (so the maximum stays in the last inner bin and anything beyond the range gets a bin of its own)."""
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return []
    low, high = float(present.min()), float(np.nextafter(present.max(), np.inf))
    return sorted(set(quantile_edges(present, bins)) | {low, high})


def _numeric_profile(values: np.ndarray, bins: int, rng: np.random.Generator) -> dict[str, Any]:
    edges = reference_edges(values, bins)
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

    current = binned_fractions(values, ref["edges"])
    result: dict[str, Any] = {
        "psi": psi(ref["fractions"], current),
        # bins: < edges[0], [edges[i], edges[i+1]), >= edges[-1], then missing values
        "distribution": {"edges": ref["edges"], "reference": ref["fractions"], "current": current},
    }
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
    new = sorted(set(current) - set(ref["fractions"]))
    new_fraction = float(sum(current[k] for k in new))
    shown = sorted(keys, key=lambda k: -max(ref["fractions"].get(k, 0.0), current.get(k, 0.0)))[
        :MAX_CATEGORIES
    ]
    return {
        "psi": psi([ref["fractions"].get(k, 0.0) for k in keys], [current.get(k, 0.0) for k in keys]),
        "ks_statistic": None,
        "ks_pvalue": None,
        "new_categories": new,
        "new_category_rows": int(round(new_fraction * len(values))),
        "new_category_fraction": new_fraction,
        "distribution": {
            "categories": shown,
            "reference": [ref["fractions"].get(k, 0.0) for k in shown],
            "current": [current.get(k, 0.0) for k in shown],
        },
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
    for column, stats_ in rows.items():
        psi_threshold, ks_threshold = th.thresholds(None if column == SCORE else column)
        by_psi = stats_["psi"] > psi_threshold
        by_ks = stats_["ks_pvalue"] is not None and stats_["ks_pvalue"] < ks_threshold
        stats_["drifted"] = bool(by_psi or by_ks)
        stats_["reasons"] = [r for r, hit in (("psi", by_psi), ("ks", by_ks)) if hit]
        stats_["thresholds"] = {"psi": psi_threshold, "ks_pvalue": ks_threshold}
        stats_["excluded"] = column in th.exclude
    drifted = sorted(c for c, s in rows.items() if s["drifted"] and c != SCORE and not s["excluded"])
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
            "excluded": list(th.exclude),
        },
        "features": {c: s for c, s in rows.items() if c != SCORE},
        "prediction": rows[SCORE],
        "drifted_features": drifted,
        "verdict": "drift" if retrain else "stable",
        "retrain": bool(retrain),
    }


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_png(report: dict[str, Any]) -> bytes:
    """A bar chart of PSI per feature and for the predictions, each against its own threshold."""
    plt = _pyplot()
    entries = [*report["features"].items(), ("prediction", report["prediction"])]
    names = [n for n, _ in entries]
    values = [s["psi"] for _, s in entries]
    colors = [
        "#aab7b8" if s.get("excluded") else "#c0392b" if s["drifted"] else "#2e86c1" for _, s in entries
    ]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, values, color=colors)
    for i, (_, s) in enumerate(entries):
        limit = (s.get("thresholds") or {}).get("psi", report["thresholds"]["psi"])
        ax.plot([limit, limit], [i - 0.4, i + 0.4], color="black", linestyle="--")
    ax.set_xlabel("PSI (dashed: the threshold; grey: excluded)")
    ax.set_title(f"{report['spec']} · {report['partition']} · {report['verdict']}")
    ax.invert_yaxis()
    return _figure_png(fig)


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all", "missing"]
    inner = [f"[{a:.3g}, {b:.3g})" for a, b in itertools.pairwise(edges)]
    return [f"< {edges[0]:.3g}", *inner, f">= {edges[-1]:.3g}", "missing"]


def render_distributions_png(report: dict[str, Any]) -> bytes | None:
    """Reference against current, as bar pairs, for every drifted feature and a drifted prediction."""
    panels = [(n, s) for n, s in report["features"].items() if s["drifted"] and "distribution" in s]
    if report["prediction"]["drifted"] and "distribution" in report["prediction"]:
        panels.append(("prediction", report["prediction"]))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (name, stats_) in zip(axes[:, 0], panels, strict=True):
        dist = stats_["distribution"]
        labels = dist["categories"] if "categories" in dist else _bin_labels(dist["edges"])
        x = np.arange(len(labels))
        ax.bar(x - 0.2, dist["reference"], width=0.4, label="reference (training)", color="#85929e")
        ax.bar(x + 0.2, dist["current"], width=0.4, label="this partition", color="#c0392b")
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("fraction")
        ax.set_title(f"{name}: PSI {stats_['psi']:.3f} ({', '.join(stats_['reasons'])})", fontsize=9)
        ax.legend(fontsize=7)
    return _figure_png(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def render_html(
    report: dict[str, Any], png_name: str = "psi.png", distributions_name: str | None = None
) -> str:
    """A one-page report a person can read, from the ``drift.html.j2`` template beside this module."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["fmt"] = _fmt
    rows = [*report["features"].items(), ("prediction", report["prediction"])]
    return environment.get_template("drift.html.j2").render(
        report=report,
        rows=rows,
        model=report.get("model") or {},
        png_name=png_name,
        distributions_name=distributions_name,
    )


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
    distributions = render_distributions_png(report)
    if distributions is not None:
        lake.write_bytes(f"{prefix}/distributions.png", distributions)
    page = render_html(report, distributions_name="distributions.png" if distributions else None)
    report["html_uri"] = lake.write_bytes(f"{prefix}/report.html", page.encode())
    report["report_uri"] = lake.uri(f"{prefix}/report.json")
    lake.write_json(f"{prefix}/report.json", report)
    return report
