"""Preprocessing, CV splits, selection and promotion rules, and ONNX parity for every family."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from cormorant import families
from cormorant.export import export_model, onnx_scores, onnx_session
from cormorant.features import MISSING_CATEGORY, FittedPreprocessor, model_frame, onnx_feed, target_vector
from cormorant.metrics import compute_metric, cv_splits, is_improvement, select_best
from cormorant.synthetic import generate_day


@pytest.fixture(scope="module")
def frames():
    return generate_day(date(2024, 3, 1))[:600], generate_day(date(2024, 3, 2), drift=1.0)[:300]


def test_model_frame_types_inputs_and_marks_missing_categories(example_spec):
    frame = pd.DataFrame(
        {
            "tenure_months": [1, None],
            "monthly_charges": [2.5, 3],
            "support_calls": [0, 1],
            "usage_gb": [None, 4],
            "contract_type": ["annual", None],
            "region": [None, "x"],
            "payment_method": ["card", "card"],
            "churned": [0, 1],
        }
    )
    typed = model_frame(frame, example_spec)
    assert typed["tenure_months"].dtype == np.float32
    assert np.isnan(typed["tenure_months"][1])
    assert typed["contract_type"].tolist() == ["annual", MISSING_CATEGORY]
    feed = onnx_feed(frame, example_spec)
    assert feed["usage_gb"].shape == (2, 1) and feed["usage_gb"].dtype == np.float32
    assert feed["region"].tolist() == [[MISSING_CATEGORY], ["x"]]


def test_model_frame_and_feed_type_every_kind_of_column_alike(example_spec):
    """Whatever dtypes a frame holds (the lake's float64 and Arrow strings, pandas' nullable and
    object columns, a model frame itself), the model gets the same float32 numbers and strings."""
    frame = pd.DataFrame(
        {
            "tenure_months": pd.array([1, None, 3], dtype="Int64"),
            "monthly_charges": np.array([2.5, np.nan, 1.0]),
            "support_calls": ["0", "2", "1"],  # numbers as text
            "usage_gb": [None, 4, 5.5],  # object
            "contract_type": pd.array(["annual", None, "monthly"], dtype="str"),
            "region": pd.Series(["x", None, "y"], dtype="category"),
            "payment_method": pd.Series([7, None, "card"], dtype=object),
        }
    )
    numbers = {
        "tenure_months": [1, np.nan, 3],
        "monthly_charges": [2.5, np.nan, 1],
        "support_calls": [0, 2, 1],
        "usage_gb": [np.nan, 4, 5.5],
    }
    strings = {
        "contract_type": ["annual", MISSING_CATEGORY, "monthly"],
        "region": ["x", MISSING_CATEGORY, "y"],
        "payment_method": ["7", MISSING_CATEGORY, "card"],
    }
    # the frame as read, a model frame, and a frame whose index is not 0..n-1 (a slice of a bigger one)
    for source in (frame, model_frame(frame, example_spec), frame.set_axis([10, 20, 30])):
        again, feed = model_frame(source, example_spec), onnx_feed(source, example_spec)
        assert list(again.columns) == example_spec.feature_columns and list(again.index) == [0, 1, 2]
        for column, expected in numbers.items():
            assert again[column].dtype == np.float32 and feed[column].dtype == np.float32
            assert np.array_equal(feed[column], np.array(expected, np.float32).reshape(-1, 1), equal_nan=True)
            assert np.array_equal(again[column].to_numpy(), feed[column][:, 0], equal_nan=True)
        for column, expected in strings.items():
            assert again[column].tolist() == expected
            assert feed[column].dtype.kind == "U" and feed[column][:, 0].tolist() == expected


def test_missing_feature_column_is_named(example_spec, frames):
    with pytest.raises(KeyError, match=r"\['region'\]"):
        model_frame(frames[0].drop(columns=["region"]), example_spec)


def test_preprocessor_imputes_scales_and_ignores_unknown_categories(example_spec, frames):
    train, _ = frames
    pre = FittedPreprocessor(example_spec, train)
    matrix = pre.transform(train)
    assert not np.isnan(matrix).any()
    n_numeric = len(example_spec.features.numeric)
    assert np.allclose(matrix[:, :n_numeric].mean(axis=0), 0, atol=1e-3)
    unseen = train[:3].copy()
    unseen["region"] = "atlantis"
    region_block = pre.transform(unseen)
    assert region_block.shape == matrix[:3].shape


def test_stratified_cv_splits_partition_rows_and_keep_class_balance():
    y = np.array([0] * 80 + [1] * 20)
    splits = cv_splits(y, 5, seed=1, stratified=True)
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested.tolist()) == list(range(100))
    for train, test in splits:
        assert not set(train) & set(test)
        assert y[test].mean() == pytest.approx(0.2)


def test_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    assert compute_metric("roc_auc", y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert compute_metric("accuracy", y, np.array([0.1, 0.6, 0.7, 0.8])) == pytest.approx(0.75)
    assert compute_metric("rmse", np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(np.sqrt(2.5))
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        compute_metric("auc", y, y)


@pytest.mark.parametrize(
    ("candidate", "incumbent", "higher", "margin", "expected"),
    [
        (0.80, None, True, 0.0, True),
        (0.80, 0.79, True, 0.0, True),
        (0.80, 0.80, True, 0.0, False),
        (0.80, 0.79, True, 0.02, False),
        (1.5, 2.0, False, 0.0, True),
        (2.5, 2.0, False, 0.0, False),
    ],
)
def test_promotion_rule(candidate, incumbent, higher, margin, expected):
    assert is_improvement(candidate, incumbent, higher_is_better=higher, min_improvement=margin) is expected


def _trial(trial_id, family, mean, std, folds=4):
    return {
        "trial_id": trial_id,
        "family": family,
        "status": "ok",
        "cv_mean": mean,
        "cv_std": std,
        "cv_folds": [mean] * folds,
    }


def test_one_standard_error_rule_prefers_the_simplest_near_best_model():
    results = [
        _trial("mlp-0", "mlp", 0.810, 0.02),
        _trial("xgboost-0", "xgboost", 0.805, 0.01),
        _trial("linear-0", "linear", 0.780, 0.01),
    ]
    chosen = select_best(results, higher_is_better=True)  # SE of the best = 0.02 / 2 = 0.01
    assert chosen["trial_id"] == "xgboost-0"
    assert chosen["selection"]["best_trial"] == "mlp-0"
    assert chosen["selection"]["candidates"] == ["mlp-0", "xgboost-0"]
    assert (
        select_best([*results[:2], _trial("linear-1", "linear", 0.801, 0.01)], higher_is_better=True)[
            "trial_id"
        ]
        == "linear-1"
    )


def test_one_standard_error_rule_for_errors_where_lower_is_better():
    results = [_trial("mlp-0", "mlp", 1.00, 0.2), _trial("linear-0", "linear", 1.09, 0.1)]
    assert select_best(results, higher_is_better=False)["trial_id"] == "linear-0"
    assert (
        select_best([results[0], _trial("linear-1", "linear", 1.2, 0.1)], higher_is_better=False)["trial_id"]
        == "mlp-0"
    )


def test_select_best_ignores_failed_trials_and_respects_direction():
    results = [
        {"trial_id": "a", "family": "xgboost", "status": "ok", "cv_mean": 0.7, "cv_std": 0.01},
        {"trial_id": "b", "family": "xgboost", "status": "ok", "cv_mean": 0.8, "cv_std": 0.02},
        {"trial_id": "c", "status": "failed"},
        None,
    ]
    assert select_best(results, higher_is_better=True)["trial_id"] == "b"
    assert select_best(results[:2], higher_is_better=False)["trial_id"] == "a"
    with pytest.raises(ValueError, match="no trial succeeded out of 2"):
        select_best(results[2:], higher_is_better=True)


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("linear", {"C": 1.0}),
        ("xgboost", {"max_depth": 3, "n_estimators": 30}),
        ("mlp", {"epochs": 30, "learning_rate": 0.01}),
    ],
)
def test_onnx_export_matches_native_model_on_held_out_rows(example_spec, frames, family, params):
    train, held_out = frames
    pre = FittedPreprocessor(example_spec, train)
    X = pre.transform(train)
    trained = families.fit(family, X, target_vector(train, example_spec), params, classification=True, seed=3)
    model = export_model(pre, trained, example_spec, X.shape[1])
    assert [i.name for i in model.graph.input] == example_spec.feature_columns
    assert [o.name for o in model.graph.output] == ["score"]
    exported = onnx_scores(onnx_session(model), onnx_feed(held_out, example_spec))
    native = families.predict_score(trained, pre.transform(held_out))
    assert exported.shape == (len(held_out),)
    assert np.max(np.abs(exported - native)) <= 1e-4
    assert compute_metric("roc_auc", target_vector(held_out, example_spec), exported) > 0.6


@pytest.mark.parametrize("family", ["linear", "xgboost"])
def test_permutation_importance_is_scikit_learns_on_the_served_model(example_spec, frames, family):
    """The trainer permutes positions into the holdout's converted ONNX inputs instead of permuting
    and converting the frame for every scoring: the document must be the one scikit-learn computes
    on the frame itself, value for value."""
    from sklearn.inspection import permutation_importance

    from cormorant.importance import REPEATS, feature_importance

    train, held_out = frames
    pre = FittedPreprocessor(example_spec, train)
    X = pre.transform(train)
    trained = families.fit(family, X, target_vector(train, example_spec), {}, classification=True, seed=3)
    session = onnx_session(export_model(pre, trained, example_spec, X.shape[1]))

    class FrameModel:  # scores a permuted frame, converting it each time
        def fit(self, *_):
            return self

    def scoring(_, frame, y_true):
        return compute_metric("roc_auc", y_true, onnx_scores(session, onnx_feed(frame, example_spec)))

    features = example_spec.feature_columns
    y = target_vector(held_out, example_spec)
    expected = permutation_importance(
        FrameModel(), held_out[features], y, scoring=scoring, n_repeats=REPEATS, random_state=7
    )
    document = feature_importance(example_spec, trained, pre, session, held_out, seed=7)
    assert document["permutation"] == {
        c: {"mean": float(expected.importances_mean[i]), "std": float(expected.importances_std[i])}
        for i, c in enumerate(features)
    }
    assert max(v["mean"] for v in document["permutation"].values()) > 0.01


def test_a_binary_tree_ensemble_scores_as_the_converters_classifier_did():
    """A binary XGBoost classifier is served as Sigmoid(TreeEnsembleRegressor) (faster in ONNX
    Runtime): its scores must be the converter's TreeEnsembleClassifier's and XGBoost's own, missing
    values included; ensembles of any other shape keep the converter's graph."""
    import onnx
    import onnxmltools
    from onnx import helper
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(5)
    X = rng.normal(size=(2_000, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=len(X)) > 0.3).astype(int)
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values take each split's learned default branch
    params = {"max_depth": 4, "n_estimators": 40, "base_score": 0.3}
    trained = families.fit("xgboost", X, y, params, classification=True, seed=2)

    graph = families.to_onnx(trained, X.shape[1])
    assert [n.op_type for n in graph.graph.node] == ["TreeEnsembleRegressor", "Sigmoid"]
    onnx.checker.check_model(graph, full_check=True)  # a valid model on its own, not only once merged
    assert [o.name for o in graph.graph.output] == ["score"]
    served = onnx_session(graph).run(["score"], {"features": X})[0].reshape(-1)

    initial = [("features", FloatTensorType([None, X.shape[1]]))]
    converted = onnxmltools.convert_xgboost(trained.model, initial_types=initial, target_opset=15)
    assert [n.op_type for n in converted.graph.node] == ["TreeEnsembleClassifier"]
    before = onnx_session(converted).run(["probabilities"], {"features": X})[0][:, 1]
    assert np.max(np.abs(served - before)) <= 1e-6
    assert np.max(np.abs(served - trained.model.predict_proba(X)[:, 1])) <= 1e-6
    assert served.std() > 0.1  # scores that vary, not one constant

    three = families.fit("xgboost", X, y + (X[:, 3] > 1), {"n_estimators": 5}, classification=True, seed=2)
    kept = families.to_onnx(three, X.shape[1])
    onnx.checker.check_model(kept, full_check=True)
    node = kept.graph.node[0]
    assert node.op_type == "TreeEnsembleClassifier"
    labels = next(a for a in node.attribute if a.name == "classlabels_int64s")
    assert len(helper.get_attribute_value(labels)) == 3
    hinge_params = {"n_estimators": 5, "objective": "binary:hinge"}
    hinge = families.fit("xgboost", X, y, hinge_params, classification=True, seed=2)
    assert "TreeEnsembleClassifier" in [n.op_type for n in families.to_onnx(hinge, X.shape[1]).graph.node]


def test_regression_export_matches_native(example_spec, frames):
    spec = example_spec.model_copy(
        update={"target": example_spec.target.model_copy(update={"column": "usage_gb", "task": "regression"})}
    )
    spec = spec.model_copy(
        update={
            "features": spec.features.model_copy(
                update={"numeric": ["tenure_months", "monthly_charges", "support_calls"]}
            )
        }
    )
    train, held_out = (f.dropna(subset=["usage_gb"]) for f in frames)
    pre = FittedPreprocessor(spec, train)
    X = pre.transform(train)
    y = train["usage_gb"].to_numpy("float64")
    for family, params in [
        ("linear", {"alpha": 1.0}),
        ("xgboost", {"n_estimators": 20}),
        ("mlp", {"epochs": 2}),
    ]:
        trained = families.fit(family, X, y, params, classification=False, seed=1)
        exported = onnx_scores(
            onnx_session(export_model(pre, trained, spec, X.shape[1])), onnx_feed(held_out, spec)
        )
        native = families.predict_score(trained, pre.transform(held_out))
        assert np.max(np.abs(exported - native) / np.maximum(1, np.abs(native))) <= 1e-4, family


def test_trial_cache_key_changes_with_data_params_and_trainer_inputs(example_spec):
    from cormorant.sweep import trial_cache_key

    trial = {
        "family": "xgboost",
        "params": {"max_depth": 3},
        "train_partitions": ["2024-03-01"],
        "holdout_partitions": ["2024-03-02"],
        "folds": 3,
        "seed": 7,
        "manifest_hashes": {"2024-03-01": "a"},
        "trial_id": "xgboost-0",
        "parent_run_id": "p1",
    }
    key = trial_cache_key(example_spec, trial)
    assert trial_cache_key(example_spec, {**trial, "parent_run_id": "p2", "trial_id": "x"}) == key
    for change in (
        {"params": {"max_depth": 4}},
        {"manifest_hashes": {"2024-03-01": "b"}},
        {"folds": 4},
        {"holdout_partitions": ["2024-03-03"]},
    ):
        assert trial_cache_key(example_spec, {**trial, **change}) != key


def test_the_arrow_feed_is_the_pandas_feed_value_for_value(example_spec):
    """Inference builds ONNX Runtime's tensors from Arrow batches; they must equal the ones training and
    export use (nulls, NaN, unknown and missing categories included), so scores stay identical."""
    import pyarrow as pa

    from cormorant.features import arrow_feed
    from cormorant.warehouse import conform, lake_schema, spec_types

    frame = generate_day(date(2024, 3, 1))
    frame.loc[0, "monthly_charges"] = float("nan")
    frame.loc[1, "contract_type"] = "lifetime"  # a category unseen in training
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema = lake_schema(table.schema, spec_types(example_spec))
    typed = pa.Table.from_batches([conform(b, schema) for b in table.to_batches()])
    ours, theirs = arrow_feed(typed, example_spec), onnx_feed(typed.to_pandas(), example_spec)
    assert ours.keys() == theirs.keys()
    for column, values in theirs.items():
        assert ours[column].dtype == values.dtype and ours[column].shape == values.shape, column
        if values.dtype.kind == "f":
            assert np.array_equal(ours[column], values, equal_nan=True), column
        else:
            assert (ours[column] == values).all(), column
    assert np.isnan(ours["usage_gb"]).sum() == frame["usage_gb"].isna().sum() > 0
    assert (ours["region"] == MISSING_CATEGORY).sum() == frame["region"].isna().sum() > 0


def test_prefetched_keeps_order_hands_over_errors_and_stops_when_the_consumer_does():
    import threading

    from cormorant.inference import prefetched

    assert list(prefetched(iter(range(100)))) == list(range(100))

    def broken():
        yield 1
        raise OSError("lake read failed")

    with pytest.raises(OSError, match="lake read failed"):
        list(prefetched(broken()))
    endless = prefetched(iter(int, 1))  # never ends by itself
    assert next(endless) == 0
    endless.close()  # the consumer stops (a failed write): the producer thread ends too
    assert not [t for t in threading.enumerate() if t.name.startswith("cormorant-prefetch")]


def test_only_an_mlp_trial_imports_torch_to_choose_its_device():
    """torch's import is 1.3 s of a trial's start-up: linear and XGBoost trials choose without it."""
    import subprocess
    import sys

    code = (
        "import sys; from cormorant.families import device_for; "
        "print(device_for('linear'), device_for('xgboost'), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[0] == "cpu" and out[1] in ("cpu", "cuda") and out[2] == "False"


@pytest.mark.parametrize("imported_first", [True, False])
def test_an_mlps_first_fit_imports_nothing_big_once_its_family_was_imported_for(imported_first):
    """A trial counts its fits as compute, so what a fresh process's first MLP fit would import
    (torch's optimisers import ``torch._dynamo`` when first built, about 1 s) is imported with the
    trial's start-up (``import_for``). Without it, the same fit imports torch._dynamo: what makes
    ``import_for`` needed, and this test able to fail."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys, numpy as np; from cormorant import families\n"
        f"if {imported_first}: families.import_for('mlp')\n"
        "import torch; before = set(sys.modules)\n"
        "X = np.random.default_rng(0).random((64, 3), dtype=np.float32)\n"
        "y = (X[:, 0] > 0.5).astype(np.float32)\n"
        "params = {'hidden_units': 4, 'layers': 1, 'epochs': 1, 'learning_rate': 0.01}\n"
        "families.fit('mlp', X, y, params, classification=True, seed=1, device='cpu')\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    new = json.loads(done.stdout.splitlines()[-1])
    dynamo = [m for m in new if m.startswith("torch._dynamo")]
    if imported_first:
        assert not dynamo and len(new) < 10, new
    else:
        assert dynamo, "torch no longer imports torch._dynamo in a first fit: import_for can go"


def test_a_trial_fits_with_the_threads_it_was_given(monkeypatch):
    """The local backend divides the machine between the trials it runs at once and a pod states its
    CPU request (CORMORANT_TRIAL_THREADS); without it a trial uses the CPUs it may run on."""
    import os

    import torch

    rng = np.random.default_rng(0)
    X, y = rng.random((200, 4), dtype=np.float32), rng.integers(0, 2, 200)
    monkeypatch.setenv("CORMORANT_TRIAL_THREADS", "1")
    trained = families.fit("xgboost", X, y, {"n_estimators": 2}, classification=True, seed=0)
    assert trained.model.get_params()["n_jobs"] == 1
    before = torch.get_num_threads()
    try:
        families.fit("mlp", X, y, {"epochs": 1}, classification=True, seed=0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    monkeypatch.delenv("CORMORANT_TRIAL_THREADS")
    assert families.trial_threads() == len(os.sched_getaffinity(0))
    trained = families.fit("xgboost", X, y, {"n_estimators": 2}, classification=True, seed=0)
    assert trained.model.get_params()["n_jobs"] == len(os.sched_getaffinity(0))


def test_a_trials_onnx_sessions_score_with_the_trials_threads(monkeypatch, example_spec, frames):
    """Trials side by side each had ONNX Runtime sessions of 2 threads on a 2-core machine (the
    preprocessing graph every fold runs, the exported model's scoring): 4 threads on 2 cores, each
    spinning between runs; a trial's sessions now use its share of the CPUs, serving keeps 2."""
    train, _ = frames
    monkeypatch.setenv("CORMORANT_TRIAL_THREADS", "1")
    pre = FittedPreprocessor(example_spec, train)
    assert pre._session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("CORMORANT_TRIAL_THREADS", "3")
    assert FittedPreprocessor(example_spec, train)._session.get_session_options().intra_op_num_threads == 3
    assert onnx_session(pre.onnx).get_session_options().intra_op_num_threads == 2


@pytest.mark.parametrize("process", ["fresh", "warm"])
def test_a_trials_blas_and_openmp_pools_have_the_trials_threads(monkeypatch, example_spec, tmp_path, process):
    """numpy's and SciPy's OpenBLAS, scikit-learn's and torch's OpenMP start a thread per CPU
    whatever the trial was given, and spin between calls: two trials side by side took each other's
    CPUs. While a trial runs, every such pool has the trial's threads; afterwards they are as before.
    A warm trainer finds the pools once, after its warm-up; a fresh process for each trial."""
    import os

    import torch  # noqa: F401  (its OpenMP pool is one of those limited)
    from threadpoolctl import ThreadpoolController, threadpool_info

    from cormorant import trainer
    from cormorant.config import Settings

    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("needs a machine where a trial's share is fewer threads than its CPUs")
    before = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    seen = {}

    def run_trial(*_):
        seen.update({p["filepath"]: p["num_threads"] for p in threadpool_info()})
        return {"trial_id": "t1", "status": "ok"}

    monkeypatch.setattr(trainer, "run_trial", run_trial)
    monkeypatch.setattr(trainer, "WARM_POOLS", ThreadpoolController() if process == "warm" else None)
    if process == "warm":  # the pools found after its warm-up are the ones limited: not looked for again
        import threadpoolctl

        monkeypatch.setattr(threadpoolctl, "threadpool_limits", None)
    monkeypatch.setenv("CORMORANT_TRIAL_THREADS", "1")
    monkeypatch.setenv("CORMORANT_LAKE_URI", tmp_path.as_uri())
    trial = trainer.Trial("t1", "linear", {}, [], [], folds=3, seed=0)
    result, code = trainer._run_and_record(example_spec, trial, Settings.from_env())
    assert (result["status"], code) == ("ok", 0)
    assert {p["internal_api"] for p in threadpool_info()} >= {"openblas", "openmp"}
    assert seen.keys() == before.keys() and set(seen.values()) == {1}, seen
    assert {p["filepath"]: p["num_threads"] for p in threadpool_info()} == before


def test_logging_a_model_checks_its_stated_requirements_without_mapping_every_installed_package(
    monkeypatch, tmp_path
):
    """A fresh trainer process spent 0.5-0.9 s of each trial in MLflow mapping every installed
    package's files before checking the three requirements it states; the logged files are the same."""
    import mlflow
    import onnx.helper
    from mlflow.utils import requirements_utils

    from cormorant.trainer import checked_against_stated_requirements, serving_requirements

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1])],
    )
    model = onnx.helper.make_model(graph)
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # as in a new process
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)
    real = requirements_utils.importlib_metadata.packages_distributions
    mapped = []
    monkeypatch.setattr(
        requirements_utils.importlib_metadata,
        "packages_distributions",
        lambda: mapped.append(1) or real(),
    )
    with checked_against_stated_requirements():
        mlflow.onnx.save_model(model, tmp_path / "stated", pip_requirements=serving_requirements())
    assert not mapped
    assert requirements_utils._MODULES_TO_PACKAGES is None  # the next user builds the whole map
    mlflow.onnx.save_model(model, tmp_path / "mapped", pip_requirements=serving_requirements())
    assert mapped  # without it, MLflow maps every package
    for name in ("requirements.txt", "conda.yaml", "python_env.yaml"):
        assert (tmp_path / "stated" / name).read_text() == (tmp_path / "mapped" / name).read_text()
    built = requirements_utils._MODULES_TO_PACKAGES
    with checked_against_stated_requirements():  # a map already built is left as it is
        assert requirements_utils._MODULES_TO_PACKAGES is built
    assert requirements_utils._MODULES_TO_PACKAGES is built


def test_a_warm_trainer_parses_a_spec_again_when_its_file_changes(tmp_path):
    """A warm trainer gets a request per trial, nearly always for the same spec: it parses the file
    once, and again when the file has changed since (an edit between two runs of `cormorant run`)."""
    import os
    from pathlib import Path

    from cormorant import trainer

    example = Path(__file__).resolve().parents[2] / "include" / "specs" / "churn.yaml"
    path = tmp_path / "churn.yaml"
    path.write_text(example.read_text())
    first = trainer._spec_as_it_is(str(path))
    assert first.training.folds == 3
    assert trainer._spec_as_it_is(str(path)) is first
    stat = path.stat()
    path.write_text(example.read_text().replace("folds: 3", "folds: 4"))  # the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # saved a second later
    edited = trainer._spec_as_it_is(str(path))
    assert edited.training.folds == 4
    path.write_text(example.read_text().replace("folds: 3", "folds: 10"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same time, new size
    assert trainer._spec_as_it_is(str(path)).training.folds == 10
