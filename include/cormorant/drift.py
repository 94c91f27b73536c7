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
NULL = "<null>"  # how a missing category is counted


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
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]).tolist()
    # 12 significant digits: interpolation's float noise (1.9999999999999998 beside 2.0) is no bin
    return sorted({float(f"{q:.12g}") for q in quantiles})


def binned_fractions(values: np.ndarray, edges: list[float]) -> list[float]:
    """Fractions per bin (``len(edges) + 1`` bins) plus a last bin for missing values."""
    values = np.asarray(values, dtype="float64")
    missing = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1)
    counts = np.append(counts, missing.sum()).astype("float64")
    return (counts / max(counts.sum(), 1)).tolist()


def category_fractions(values: pd.Series) -> dict[str, float]:
    counts = values.astype(object).where(values.notna(), NULL).astype(str).value_counts(normalize=True)
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


# scipy's ks_2samp is exact up to this many values per sample, asymptotic beyond (method="auto")
KS_EXACT_MAX = 10_000


class NumericDrift:
    """One numeric column's drift against its reference profile, fed batch by batch in bounded memory.

    Bin counts accumulate per batch. For the KS test the values themselves are kept only while they
    are few enough for scipy's exact test (which is then run on them, as before); beyond that, counts of
    values at or below and below each reference sample point are enough for the exact KS statistic,
    and its p-value is scipy's asymptotic one: the same numbers as ``scipy.stats.ks_2samp`` on the
    whole column.
    """

    def __init__(self, ref: dict[str, Any]):
        self.ref = ref
        self.edges = np.asarray(ref["edges"], dtype="float64")
        self.counts = np.zeros(len(self.edges) + 2)  # the bins, then missing values
        self.sample = np.sort(np.asarray(ref["sample"], dtype="float64"))
        self.points = np.unique(self.sample)
        self.at_or_below = np.zeros(len(self.points), dtype="int64")
        self.below = np.zeros(len(self.points), dtype="int64")
        self.kept: list[np.ndarray] | None = []
        self.present = 0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype="float64")
        missing = np.isnan(values)
        present = values[~missing]
        bins = np.searchsorted(self.edges, present, side="right")
        self.counts[:-1] += np.bincount(bins, minlength=len(self.edges) + 1)
        self.counts[-1] += missing.sum()
        self.present += len(present)
        if self.kept is not None:
            self.kept.append(present)
            if self.present <= KS_EXACT_MAX:
                return
            present, self.kept = np.concatenate(self.kept), None
        self._count(present)

    def _count(self, present: np.ndarray) -> None:
        # sorting the batch and placing the (few) points in it is ten times faster than placing each
        # value among the points
        ordered = np.sort(present)
        self.at_or_below += np.searchsorted(ordered, self.points, side="right")
        self.below += np.searchsorted(ordered, self.points, side="left")

    def _ks(self) -> tuple[float | None, float | None]:
        from scipy import stats

        if not self.present or not len(self.sample):
            return None, None
        if self.kept is not None:  # few values: scipy's own test on them
            ks = stats.ks_2samp(self.sample, np.concatenate(self.kept))
            return float(ks.statistic), float(ks.pvalue)
        n1, n2 = len(self.sample), self.present
        reference = np.searchsorted(self.sample, self.points, side="right") / n1
        before = np.concatenate([[0.0], reference[:-1]])  # the reference CDF just below each point
        d = max(
            float(np.max(np.abs(reference - self.at_or_below / n2))),
            float(np.max(np.abs(before - self.below / n2))),
        )
        m, n = sorted([float(n1), float(n2)], reverse=True)
        pvalue = float(np.clip(stats.distributions.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))
        return d, pvalue

    def result(self) -> dict[str, Any]:
        current = (self.counts / max(self.counts.sum(), 1)).tolist()
        statistic, pvalue = self._ks()
        return {
            "psi": psi(self.ref["fractions"], current),
            # bins: < edges[0], [edges[i], edges[i+1]), >= edges[-1], then missing values
            "distribution": {
                "edges": self.ref["edges"],
                "reference": self.ref["fractions"],
                "current": current,
            },
            "ks_statistic": statistic,
            "ks_pvalue": pvalue,
        }


class CategoricalDrift:
    """One categorical column's drift: category counts accumulated batch by batch."""

    def __init__(self, ref: dict[str, Any]):
        self.ref = ref
        self.counts: dict[str, int] = {}

    def add(self, values: Any) -> None:
        """``values``: a pandas Series or an Arrow array of the batch."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            if not pa.types.is_string(values.type):
                values = pc.cast(values, pa.string())
            for row in pc.value_counts(pc.fill_null(values, NULL)).to_pylist():
                self.counts[row["values"]] = self.counts.get(row["values"], 0) + row["counts"]
            return
        for key, count in (
            values.astype(object).where(values.notna(), NULL).astype(str).value_counts().items()
        ):
            self.counts[str(key)] = self.counts.get(str(key), 0) + int(count)

    def result(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        current = {k: v / total for k, v in self.counts.items()} if total else {}
        ref = self.ref["fractions"]
        keys = sorted(set(ref) | set(current))
        new = sorted(set(current) - set(ref))
        new_fraction = float(sum(current[k] for k in new))
        shown = sorted(keys, key=lambda k: -max(ref.get(k, 0.0), current.get(k, 0.0)))[:MAX_CATEGORIES]
        return {
            "psi": psi([ref.get(k, 0.0) for k in keys], [current.get(k, 0.0) for k in keys]),
            "ks_statistic": None,
            "ks_pvalue": None,
            "new_categories": new,
            "new_category_rows": int(sum(self.counts[k] for k in new)),
            "new_category_fraction": new_fraction,
            "distribution": {
                "categories": shown,
                "reference": [ref.get(k, 0.0) for k in shown],
                "current": [current.get(k, 0.0) for k in shown],
            },
        }


def drift_states(reference: dict[str, Any]) -> dict[str, NumericDrift | CategoricalDrift]:
    """A fresh accumulator per feature of the reference, and one for the score (key ``SCORE``)."""
    states: dict[str, NumericDrift | CategoricalDrift] = {
        column: NumericDrift(ref) if ref["kind"] == "numeric" else CategoricalDrift(ref)
        for column, ref in reference["features"].items()
    }
    states[SCORE] = NumericDrift(reference["score"])
    return states


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
    states = drift_states(reference)
    for column, state in states.items():
        if column == SCORE:
            state.add(np.asarray(scores, dtype="float64"))
        elif isinstance(state, NumericDrift):
            state.add(pd.to_numeric(frame[column]).to_numpy("float64"))
        else:
            state.add(frame[column])
    return verdict(reference, states, len(frame), spec, partition=partition, model=model)


def verdict(
    reference: dict[str, Any],
    states: dict[str, NumericDrift | CategoricalDrift],
    rows_seen: int,
    spec: ModelSpec,
    *,
    partition: str,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The drift report from the accumulated states: per-column statistics, thresholds and verdict."""
    th = spec.drift
    rows = {column: state.result() for column, state in states.items()}
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
        "rows": rows_seen,
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


def figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_png(report: dict[str, Any]) -> bytes:
    """A bar chart of PSI per feature and for the predictions, each against its own threshold."""
    plt = pyplot()
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
    return figure_png(fig)


def _bin_labels(edges: list[float]) -> list[str]:
    """A label per bin (``< e0``, ``[e0, e1)``, ..., ``>= en``, missing). Integer edges (a count's
    quantiles) label the integers each bin holds (``2``, ``3-5``, ``<= 1``); other edges get as many
    significant digits as it takes for neighbours to read apart (never ``[2, 2)``)."""
    if not edges:
        return ["all", "missing"]
    if all(float(e).is_integer() for e in edges):
        ints = [int(e) for e in edges]

        def span(low: int, high: int) -> str:  # the integers low..high
            return str(low) if low == high else f"{low}-{high}"

        inner = [span(a, b - 1) for a, b in itertools.pairwise(ints)]
        return [f"<= {ints[0] - 1}", *inner, f">= {ints[-1]}", "missing"]
    digits = next((d for d in range(3, 13) if len({f"{e:.{d}g}" for e in edges}) == len(set(edges))), 12)
    text = [f"{e:.{digits}g}" for e in edges]
    inner = [f"[{a}, {b})" for a, b in itertools.pairwise(text)]
    return [f"< {text[0]}", *inner, f">= {text[-1]}", "missing"]


def render_distributions_png(report: dict[str, Any]) -> bytes | None:
    """Reference against current, as bar pairs, for every drifted feature and a drifted prediction."""
    panels = [(n, s) for n, s in report["features"].items() if s["drifted"] and "distribution" in s]
    if report["prediction"]["drifted"] and "distribution" in report["prediction"]:
        panels.append(("prediction", report["prediction"]))
    if not panels:
        return None
    plt = pyplot()
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
    return figure_png(fig)


def fmt_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def render_template(name: str, **context: Any) -> str:
    """A report page from a Jinja2 template in ``templates/`` beside this module (autoescaped, strict,
    with the ``fmt`` filter for numbers)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["fmt"] = fmt_value
    return environment.get_template(name).render(**context)


def render_html(
    report: dict[str, Any], png_name: str = "psi.png", distributions_name: str | None = None
) -> str:
    """A one-page report a person can read, from the ``drift.html.j2`` template."""
    rows = [*report["features"].items(), ("prediction", report["prediction"])]
    return render_template(
        "drift.html.j2",
        report=report,
        rows=rows,
        model=report.get("model") or {},
        png_name=png_name,
        distributions_name=distributions_name,
    )


def stream_compare(
    reference: dict[str, Any],
    lake: Any,
    spec: ModelSpec,
    partition: str,
    *,
    model: dict[str, Any] | None = None,
    batch_size: int = 262_144,
) -> dict[str, Any]:
    """:func:`compare` over the committed partition and its predictions, read in record batches: memory
    is bounded by the batch size, not the partition (the same report as reading them whole)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cormorant.inference import predictions_dataset
    from cormorant.warehouse import raw_dataset

    def floats(values: Any) -> np.ndarray:  # null -> NaN, as the reference counted them
        return pc.fill_null(pc.cast(values, pa.float64()), np.nan).to_numpy(zero_copy_only=False)

    states = drift_states(reference)
    rows = 0
    columns = [c for c in reference["features"] if c in spec.feature_columns]
    for batch in lake.iter_batches(raw_dataset(spec), partition, batch_size=batch_size, columns=columns):
        rows += batch.num_rows
        for column in columns:
            state, values = states[column], batch.column(column)
            state.add(floats(values) if isinstance(state, NumericDrift) else values)
    for batch in lake.iter_batches(
        predictions_dataset(spec), partition, batch_size=batch_size, columns=["score"]
    ):
        states[SCORE].add(floats(batch.column("score")))
    return verdict(reference, states, rows, spec, partition=partition, model=model)


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
    report = stream_compare(
        reference,
        lake,
        spec,
        partition,
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
