"""What drives a model: global feature importance on the holdout, per raw feature of the spec.

- **Permutation importance** for every family (scikit-learn's ``permutation_importance``): each raw
  feature column of the holdout is shuffled and the exported model (ONNX, with its preprocessing) scores
  it again; the importance is the drop in the spec's metric. The model is the one that serves, and the
  features are the spec's columns, not one-hot slots.
- **XGBoost** also: total gain from the booster, and SHAP values from its own ``pred_contribs`` (mean
  absolute contribution), each summed over the one-hot slots of a categorical feature.

The trainer computes it for every trial (``importance.json`` on the trial's MLflow run); the
registration step plots it for the registered version, and the model card shows it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_ROWS = 10_000  # permutation importance reads at most this many holdout rows (a seeded sample)
REPEATS = 5


class _ServedModel:
    """The exported model as scikit-learn's ``permutation_importance`` wants an estimator.

    Its ``X`` is not the features but, per feature column, which row of ``feed`` (the holdout's ONNX
    inputs, converted once) to read: ``permutation_importance`` shuffles those positions exactly as it
    would shuffle the values, and each scoring indexes the converted arrays instead of converting a
    permuted frame again (36 conversions of the holdout per trial, a third of a linear trial's time)."""

    def __init__(self, session: Any, feed: dict[str, np.ndarray], columns: list[str]):
        self.session, self.feed, self.columns = session, feed, columns

    def fit(self, *_: Any) -> _ServedModel:
        return self

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        from cormorant.export import onnx_scores

        return onnx_scores(self.session, {c: self.feed[c][rows[:, j]] for j, c in enumerate(self.columns)})


def _raw_feature(spec: Any, slot: str) -> str:
    """The spec's feature a preprocessed column comes from (``categorical__region_north`` -> region)."""
    name = slot.split("__", 1)[-1]
    for feature in sorted(spec.features.categorical, key=len, reverse=True):
        if name == feature or name.startswith(f"{feature}_"):
            return feature
    return name


def _per_feature(spec: Any, slots: list[str], values: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for slot, value in zip(slots, values, strict=True):
        feature = _raw_feature(spec, slot)
        out[feature] = out.get(feature, 0.0) + float(value)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def feature_importance(
    spec: Any, trained: Any, pre: Any, session: Any, holdout: Any, *, seed: int = 0
) -> dict[str, Any]:
    """The importance document of one trained model (see the module docstring)."""
    from sklearn.inspection import permutation_importance

    from cormorant.features import onnx_feed, target_vector
    from cormorant.metrics import compute_metric

    sample = holdout.sample(n=MAX_ROWS, random_state=seed) if len(holdout) > MAX_ROWS else holdout
    features = list(spec.feature_columns)
    y, frame = target_vector(sample, spec), sample[features]
    sign = 1.0 if spec.metric_higher_is_better else -1.0

    def scoring(model: _ServedModel, rows: np.ndarray, y_true: np.ndarray) -> float:
        return sign * compute_metric(spec.training.metric, y_true, model.score_rows(rows))

    rows = np.repeat(np.arange(len(frame))[:, None], len(features), axis=1)  # every column: its own row
    found = permutation_importance(
        _ServedModel(session, onnx_feed(frame, spec), features),
        rows,
        y,
        scoring=scoring,
        n_repeats=REPEATS,
        random_state=seed,
    )
    permutation = {
        c: {"mean": float(found.importances_mean[i]), "std": float(found.importances_std[i])}
        for i, c in enumerate(features)
    }
    document: dict[str, Any] = {
        "metric": spec.training.metric,
        "rows": len(frame),
        "repeats": REPEATS,
        "permutation": dict(sorted(permutation.items(), key=lambda kv: -kv[1]["mean"])),
    }
    if trained.family == "xgboost":
        import xgboost as xgb

        slots = [str(s) for s in pre.sklearn.get_feature_names_out()]
        booster = trained.model.get_booster()
        gain = booster.get_score(importance_type="total_gain")
        document["gain"] = _per_feature(
            spec, slots, np.array([gain.get(f"f{i}", 0.0) for i in range(len(slots))])
        )
        contribs = booster.predict(xgb.DMatrix(pre.transform(frame)), pred_contribs=True)[:, :-1]  # no bias
        document["shap_mean_abs"] = _per_feature(spec, slots, np.abs(contribs).mean(axis=0))
    return document


def importance_png(title: str, document: dict[str, Any]) -> bytes:
    """Permutation importance (mean and spread), one bar per feature."""
    from cormorant.drift import figure_png, pyplot

    plt = pyplot()
    items = list(document["permutation"].items())[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v["mean"] for _, v in items], xerr=[v["std"] for _, v in items],
            color="#1f77b4")  # fmt: skip
    ax.set_xlabel(
        f"drop in {document['metric']} when the feature is shuffled (holdout, {document['rows']} rows)"
    )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_png(fig)
