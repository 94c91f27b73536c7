"""Trials on a GPU: what a model fitted there scores, natively and once exported.

These run only where torch sees a CUDA device (a lent GPU machine, a GPU worker); elsewhere they are
skipped. They use no fixture of the suite's conftest, so they also run with ``pytest --noconftest`` on a
machine that has the trainer's packages but not Airflow's.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from cormorant import families
from cormorant.export import export_model, onnx_scores, onnx_session
from cormorant.features import FittedPreprocessor, onnx_feed, target_vector
from cormorant.spec import load_spec
from cormorant.synthetic import generate_day
from cormorant.trainer import PARITY_TOLERANCE

pytestmark = pytest.mark.skipif(not families.gpu_available(), reason="no CUDA device visible to torch")

SPEC = Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml"


@pytest.fixture(scope="module")
def data():
    spec = load_spec(SPEC)
    train, held_out = generate_day(date(2024, 3, 1))[:4000], generate_day(date(2024, 3, 2), drift=1.0)[:999]
    pre = FittedPreprocessor(spec, train)
    return spec, pre, pre.transform(train), target_vector(train, spec), held_out


def test_an_mlp_fitted_on_a_gpu_scores_there_as_on_the_cpu_and_as_its_export(data, monkeypatch):
    spec, pre, X, y, held_out = data
    trained = families.fit(
        "mlp", X, y, {"epochs": 3, "batch_size": 256}, classification=True, seed=3, device="cuda"
    )
    assert trained.device == "cuda"
    assert {p.device.type for p in trained.model.parameters()} == {"cpu"}  # export reads it there

    X_held = pre.transform(held_out)
    on_gpu = families.predict_score(trained, X_held)
    on_cpu = families.predict_score(dataclasses.replace(trained, device="cpu"), X_held)
    assert on_gpu.dtype == np.float32 and on_gpu.shape == (len(held_out),)
    assert np.max(np.abs(on_gpu - on_cpu)) <= 1e-5
    # scored in passes of a few rows (the last one short), the scores are the same
    monkeypatch.setattr(families, "GPU_SCORE_ROWS", 64)
    np.testing.assert_allclose(families.predict_score(trained, X_held), on_gpu, rtol=0, atol=1e-6)
    assert families.predict_score(trained, X_held[:0]).shape == (0,)

    exported = onnx_scores(
        onnx_session(export_model(pre, trained, spec, X.shape[1])), onnx_feed(held_out, spec)
    )
    assert np.max(np.abs(exported - on_gpu)) <= PARITY_TOLERANCE


def test_xgboost_fitted_on_a_gpu_scores_there_as_its_wrapper_and_its_export_do(data):
    import xgboost

    if not xgboost.build_info().get("USE_CUDA"):
        pytest.skip("this xgboost build has no CUDA")
    spec, pre, X, y, held_out = data
    params = {"max_depth": 4, "n_estimators": 40}
    trained = families.fit("xgboost", X, y, params, classification=True, seed=3, device="cuda")
    assert trained.device == "cuda" and isinstance(trained.model, xgboost.XGBClassifier)
    config = json.loads(trained.model.get_booster().save_config())
    assert config["learner"]["generic_param"]["device"].startswith("cuda")  # "cuda:0"
    assert trained.model.n_estimators == 40 and trained.model.get_booster().num_boosted_rounds() == 40

    X_held = pre.transform(held_out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falling back to prediction using DMatrix" warning
        native = families.predict_score(trained, X_held)
    assert native.shape == (len(held_out),)
    np.testing.assert_allclose(native, trained.model.predict_proba(X_held)[:, 1], rtol=0, atol=1e-6)
    exported = onnx_scores(
        onnx_session(export_model(pre, trained, spec, X.shape[1])), onnx_feed(held_out, spec)
    )
    assert np.max(np.abs(exported - native)) <= PARITY_TOLERANCE
