"""Metrics, cross-validation splits and the selection and promotion rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cormorant.spec import METRICS


def compute_metric(name: str, y_true: np.ndarray, score: np.ndarray) -> float:
    """``score`` is the positive-class probability (classification) or the prediction (regression).

    A metric that is not defined on these rows (ROC AUC with one class, R² of one row) raises
    ValueError saying why, where scikit-learn's current releases return NaN with a warning."""
    import warnings

    score = np.asarray(score, dtype="float64").reshape(-1)
    y_true = np.asarray(y_true)
    if name == "roc_auc" and len(np.unique(y_true)) < 2:
        raise ValueError(f"roc_auc is not defined: only one class in y_true ({len(y_true)} rows)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # sklearn's UndefinedMetricWarning and kin
        value = _metric(name, y_true, score)
    if not np.isfinite(value):
        raise ValueError(f"{name} is not defined on these {len(y_true)} rows (it came out {value})")
    return value


def _metric(name: str, y_true: np.ndarray, score: np.ndarray) -> float:
    from sklearn import metrics as m

    if name == "roc_auc":
        return float(m.roc_auc_score(y_true, score))
    if name == "log_loss":
        return float(m.log_loss(y_true, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1]))
    if name == "accuracy":
        return float(m.accuracy_score(y_true, score >= 0.5))
    if name == "f1":
        return float(m.f1_score(y_true, score >= 0.5, zero_division=0))
    if name == "rmse":
        return float(np.sqrt(m.mean_squared_error(y_true, score)))
    if name == "mae":
        return float(m.mean_absolute_error(y_true, score))
    if name == "r2":
        return float(m.r2_score(y_true, score))
    known = sorted({k for task in METRICS.values() for k in task})
    raise ValueError(f"unknown metric {name!r}; expected one of {known}")


def cv_splits(
    y: np.ndarray, folds: int, seed: int, *, stratified: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-fold index pairs, stratified on the label for classification; shuffled with ``seed``."""
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if stratified else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def is_improvement(
    candidate: float, incumbent: float | None, *, higher_is_better: bool, min_improvement: float = 0.0
) -> bool:
    """The promotion rule: no incumbent, or strictly better than it by more than ``min_improvement``."""
    if incumbent is None or np.isnan(incumbent):
        return True
    delta = candidate - incumbent if higher_is_better else incumbent - candidate
    return delta > min_improvement


# Simpler first: the one-standard-error rule prefers the earlier family among near-equals.
FAMILY_COMPLEXITY = {"linear": 0, "xgboost": 1, "mlp": 2}


def select_best(results: Sequence[dict[str, Any]], *, higher_is_better: bool) -> dict[str, Any]:
    """Pick a trial with the one-standard-error rule.

    Find the trial with the best mean CV metric; its standard error is ``std / sqrt(folds)``. Every
    successful trial whose mean is within one standard error of that best is a candidate, and the
    simplest candidate wins (linear < xgboost < mlp; then the better mean, then the trial id). The
    returned trial carries ``selection`` explaining the choice.
    """
    import math

    ok = [r for r in results if r and r.get("status") == "ok"]
    if not ok:
        raise ValueError(f"no trial succeeded out of {len(results)}; see the trial task logs")
    sign = -1.0 if higher_is_better else 1.0
    best = min(ok, key=lambda r: (sign * r["cv_mean"], r["cv_std"], r["trial_id"]))
    folds = max(len(best.get("cv_folds") or []), 1)
    standard_error = (best.get("cv_std") or 0.0) / math.sqrt(folds)
    if math.isnan(standard_error):
        standard_error = 0.0
    near = [r for r in ok if sign * (r["cv_mean"] - best["cv_mean"]) <= standard_error + 1e-12]
    chosen = min(
        near, key=lambda r: (FAMILY_COMPLEXITY.get(r["family"], 99), sign * r["cv_mean"], r["trial_id"])
    )
    return {
        **chosen,
        "selection": {
            "rule": "one standard error",
            "best_trial": best["trial_id"],
            "best_mean": best["cv_mean"],
            "standard_error": standard_error,
            "candidates": sorted(r["trial_id"] for r in near),
        },
    }
