"""Per-row reason codes: the features that push each score most (``predict.reason_codes: K``).

What a trial keeps for it (``explain/`` on its MLflow run, beside the ONNX model):

- **XGBoost**: the booster itself; contributions are XGBoost's own ``pred_contribs`` (exact TreeSHAP),
  in margin units (log-odds for a classifier); or, with ``predict.reason_method: approximate``, its
  ``approx_contribs`` (the path attribution, Saabas's method), which also sums to the margin.
- **Linear**: the coefficients and the training mean of each preprocessed column; a column's
  contribution is ``coefficient x (value - training mean)``, the exact SHAP value of a linear model when
  features are independent, in margin units too.
- **MLP**: nothing; it has no exact per-row attribution, and a sampled one costs more than scoring.
  Its reason columns stay null and the predict task says why (the model card's permutation importance
  is the global view).

A categorical feature's one-hot columns are summed back to the feature, so a reason names a spec
column. In every case ``bias + sum(contributions)`` is the model's margin for that row, which the tests
check against the served score. The preprocessed matrix comes from the served ONNX graph itself (its
intermediate tensor exposed as a second output), so the attribution explains exactly what was scored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FOLDER = "explain"
DOCUMENT = "explainer.json"
BOOSTER = "booster.ubj"
METHODS = {
    "xgboost": "XGBoost pred_contribs (TreeSHAP), margin units",
    "linear": "coefficient x (value - training mean), margin units",
}
APPROXIMATE = "XGBoost pred_contribs with approx_contribs (path attribution), margin units"


def reason_columns(k: int) -> list[str]:
    """The prediction columns ``predict.reason_codes: k`` adds, in order."""
    return [c for i in range(1, k + 1) for c in (f"reason_{i}", f"reason_{i}_contribution")]


def log_explainer(spec: Any, trained: Any, pre: Any, X_train: np.ndarray) -> None:
    """Keep what :class:`Explainer` needs on the active MLflow run (nothing for a family with no exact
    attribution)."""
    import mlflow

    from cormorant.importance import _raw_feature

    if trained.family not in METHODS:
        return
    slots = [str(s) for s in pre.sklearn.get_feature_names_out()]
    document: dict[str, Any] = {
        "family": trained.family,
        "method": METHODS[trained.family],
        "classification": trained.classification,
        "features": list(spec.feature_columns),
        "slot_features": [_raw_feature(spec, s) for s in slots],
        "features_tensor": pre.output_name,
    }
    if trained.family == "linear":
        model = trained.model
        document["coef"] = np.asarray(model.coef_, dtype="float64").reshape(-1).tolist()
        document["intercept"] = float(np.asarray(model.intercept_).reshape(-1)[0])
        document["mean"] = np.asarray(X_train, dtype="float64").mean(axis=0).tolist()
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / BOOSTER
            trained.model.get_booster().save_model(str(path))
            mlflow.log_artifact(str(path), FOLDER)
    mlflow.log_dict(document, f"{FOLDER}/{DOCUMENT}")


@dataclass
class Explainer:
    """One registered model's attribution (see the module docstring)."""

    document: dict[str, Any]
    booster: Any = None

    @classmethod
    def load(cls, run_id: str, *, threads: int = 2) -> Explainer | None:
        """The explainer kept on the model's run, or None (an MLP, or a model trained before reason
        codes existed)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            document = mlflow.artifacts.load_dict(f"runs:/{run_id}/{FOLDER}/{DOCUMENT}")
        except (MlflowException, OSError, json.JSONDecodeError):
            return None
        booster = None
        if document["family"] == "xgboost":
            import xgboost as xgb

            path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{FOLDER}/{BOOSTER}")
            booster = xgb.Booster(model_file=path)
            booster.set_param({"nthread": threads})
        return cls(document, booster)

    @property
    def features_tensor(self) -> str:
        return self.document["features_tensor"]

    @cached_property
    def _to_feature(self) -> np.ndarray:
        """[slots, features]: 1 where a preprocessed column comes from a feature (one-hot slots summed)."""
        features = self.document["features"]
        index = {f: i for i, f in enumerate(features)}
        matrix = np.zeros((len(self.document["slot_features"]), len(features)))
        for slot, feature in enumerate(self.document["slot_features"]):
            matrix[slot, index[feature]] = 1.0
        return matrix

    def contributions(self, X: np.ndarray, *, approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature contributions [n, features] and the bias [n] of preprocessed rows ``X``;
        ``approximate``: XGBoost's path attribution instead of TreeSHAP."""
        X = np.asarray(X, dtype=np.float32)
        if self.booster is not None:
            import xgboost as xgb

            found = self.booster.predict(xgb.DMatrix(X), pred_contribs=True, approx_contribs=approximate)
            slots, bias = found[:, :-1].astype("float64"), found[:, -1].astype("float64")
        else:
            coef, mean = np.asarray(self.document["coef"]), np.asarray(self.document["mean"])
            slots = (X.astype("float64") - mean) * coef
            bias = np.full(len(X), self.document["intercept"] + float(mean @ coef))
        return slots @ self._to_feature, bias


def top_reasons(contributions: np.ndarray, features: list[str], k: int) -> dict[str, np.ndarray]:
    """The ``k`` features with the largest absolute contribution per row, largest first: the columns of
    :func:`reason_columns`."""
    k = min(k, contributions.shape[1])
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    names = np.asarray(features, dtype=object)
    out: dict[str, np.ndarray] = {}
    for i in range(k):
        out[f"reason_{i + 1}"] = names[order[:, i]]
        out[f"reason_{i + 1}_contribution"] = np.take_along_axis(contributions, order[:, i : i + 1], 1)[:, 0]
    return out


def with_features_output(model: Any, tensor: str, width: int) -> Any:
    """The ONNX model with its preprocessed matrix (``tensor``) as a second output."""
    import copy

    from onnx import TensorProto, helper

    model = copy.deepcopy(model)
    model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, [None, width]))
    return model
