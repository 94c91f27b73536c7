"""Metrics, cross-validation splits and the selection and promotion rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cormorant.spec import METRICS


def compute_metric(name: str, y_true: np.ndarray, score: np.ndarray) -> float:
    """``score`` is the positive-class probability (classification) or the prediction (regression)."""
    from sklearn import metrics as m

    score = np.asarray(score, dtype="float64").reshape(-1)
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


def select_best(results: Sequence[dict[str, Any]], *, higher_is_better: bool) -> dict[str, Any]:
    """The successful trial with the best mean CV metric (ties: the smaller std, then the trial id)."""
    ok = [r for r in results if r and r.get("status") == "ok"]
    if not ok:
        raise ValueError(f"no trial succeeded out of {len(results)}; see the trial task logs")
    sign = -1.0 if higher_is_better else 1.0
    return min(ok, key=lambda r: (sign * r["cv_mean"], r["cv_std"], r["trial_id"]))
