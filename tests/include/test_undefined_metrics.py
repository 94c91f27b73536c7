"""A metric that is not defined on some rows is said to be, never written as NaN: scikit-learn's current
release returns NaN (with a warning) for ROC AUC on one class, and the blessing's JSON held bare `NaN`
tokens, which strict JSON parsers refuse, and no "undefined" marker."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cormorant.metrics import compute_metric


def test_a_metric_undefined_on_the_rows_raises_saying_why():
    with pytest.raises(ValueError, match="roc_auc is not defined: only one class"):
        compute_metric("roc_auc", np.array([1, 1, 1]), np.array([0.2, 0.3, 0.9]))
    with pytest.raises(ValueError, match="r2 is not defined on these 1 rows"):
        compute_metric("r2", np.array([3.0]), np.array([2.5]))
    assert compute_metric("roc_auc", np.array([0, 1, 1]), np.array([0.2, 0.3, 0.9])) == 1.0


def test_a_one_class_slice_is_marked_undefined_in_the_blessing(recwarn):
    from cormorant.blessing import slice_table

    spec = SimpleNamespace(
        features=SimpleNamespace(categorical=["region"]),
        promotion=SimpleNamespace(slices=[]),
        training=SimpleNamespace(metric="roc_auc"),
    )
    frame = pd.DataFrame({"region": ["north"] * 3 + ["south"] * 3})
    y = np.array([0, 1, 1, 1, 1, 1])  # south has one class only
    table = slice_table(spec, frame, y, np.array([0.1, 0.8, 0.7, 0.6, 0.5, 0.4]), None)
    south = next(row for row in table if row["value"] == "south")
    assert "challenger" not in south and "only one class" in south["undefined"]
    assert json.loads(json.dumps(table, allow_nan=False))  # strict JSON as it stands
    assert not [w for w in recwarn if "ROC AUC" in str(w.message)]


def test_the_lake_writes_strict_json(lake):
    key = "churn/reports/x/report.json"
    lake.write_json(key, {"psi": float("nan"), "ks": [1.0, float("inf")], "n": np.float64("nan"), "ok": 0.5})
    text = lake.path(key).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"psi": None, "ks": [1.0, None], "n": None, "ok": 0.5}
    assert not math.isnan(json.loads(text)["ok"])
