"""The MLP's ONNX graph, exported once per architecture and filled with each model's weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cormorant import families, graph_cache
from cormorant.config import Settings
from cormorant.export import export_model, onnx_scores, onnx_session
from cormorant.features import FittedPreprocessor, onnx_feed
from cormorant.synthetic import generate_day

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data(example_spec):
    from datetime import date

    train = generate_day(date(2024, 3, 1))[:400]
    held_out = generate_day(date(2024, 3, 2))[:200]
    pre = FittedPreprocessor(example_spec, train)
    X = pre.transform(train)
    return train, held_out, pre, X


def _mlp(data, *, seed, classification=True, hidden=8):
    train, _, _, X = data
    target = train["churned"] if classification else train["usage_gb"].fillna(0)
    y = target.to_numpy("int64" if classification else "float64")
    params = {"hidden_units": hidden, "layers": 2, "epochs": 1}
    return families.fit("mlp", X, y, params, classification=classification, seed=seed)


def _forget_graphs(monkeypatch):
    """No graph kept in this process's memory: as a new process, or a new test, finds it."""
    monkeypatch.setattr(graph_cache, "_graphs", type(graph_cache._graphs)())


@pytest.fixture
def exports(monkeypatch):
    """Every call into torch's exporter, counted; and no graph kept in memory from another test."""
    import torch

    _forget_graphs(monkeypatch)
    calls = []
    real = torch.onnx.export

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", counted)
    return calls


def _bytes(trained, width, cache):
    return families.to_onnx(trained, width, graph_cache=cache).SerializeToString()


@pytest.mark.parametrize("classification", [True, False])
def test_an_mlp_from_the_graph_cache_is_the_fresh_export_byte_for_byte(
    data, tmp_path, exports, classification
):
    width = data[3].shape[1]
    first, second = (_mlp(data, seed=s, classification=classification) for s in (1, 2))
    assert _bytes(first, width, tmp_path) == _bytes(first, width, None)
    assert len(exports) == 2  # the cache's miss, then the plain export
    from_cache = _bytes(second, width, tmp_path)
    assert len(exports) == 2  # a hit: the exporter is not called
    assert from_cache == _bytes(second, width, None)
    assert from_cache != _bytes(first, width, tmp_path)  # the weights are the model's own
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_a_new_process_reads_the_graph_from_the_cache_folder_and_scores_as_the_native_model(
    example_spec, data, tmp_path, exports, monkeypatch
):
    train, held_out, pre, X = data
    export_model(pre, _mlp(data, seed=1), example_spec, X.shape[1], graph_cache=tmp_path)
    _forget_graphs(monkeypatch)  # as a new process
    trained = _mlp(data, seed=5)
    model = export_model(pre, trained, example_spec, X.shape[1], graph_cache=tmp_path)
    assert len(exports) == 1
    scores = onnx_scores(onnx_session(model), onnx_feed(held_out, example_spec))
    native = families.predict_score(trained, pre.transform(held_out))
    assert np.max(np.abs(scores - native)) <= 1e-6


def test_another_architecture_or_input_width_is_exported_anew(data, tmp_path, exports):
    width = data[3].shape[1]
    _bytes(_mlp(data, seed=1), width, tmp_path)
    _bytes(_mlp(data, seed=1, hidden=16), width, tmp_path)
    _bytes(_mlp(data, seed=1, classification=False), width, tmp_path)
    assert len(exports) == 3
    assert len(list(tmp_path.glob("*.onnx"))) == 3


def test_a_damaged_cache_file_is_exported_over_with_a_warning(data, tmp_path, exports, monkeypatch, caplog):
    width = data[3].shape[1]
    _bytes(_mlp(data, seed=1), width, tmp_path)
    (kept,) = tmp_path.glob("*.onnx")
    kept.write_bytes(kept.read_bytes()[:100])  # as a disk that lost the file's end
    _forget_graphs(monkeypatch)
    second = _mlp(data, seed=2)
    with caplog.at_level(logging.WARNING, logger="cormorant.graph_cache"):
        assert _bytes(second, width, tmp_path) == _bytes(second, width, None)
    assert "cannot be read" in caplog.text and kept.name in caplog.text
    assert len(exports) == 3  # the first, the one over the damaged file, the plain one
    _forget_graphs(monkeypatch)
    _bytes(second, width, tmp_path)
    assert len(exports) == 3  # read from the whole file written over the damaged one


def test_a_graph_cache_that_cannot_be_written_costs_a_warning_not_the_trial(data, tmp_path, exports, caplog):
    width = data[3].shape[1]
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="cormorant.graph_cache"):
        assert _bytes(_mlp(data, seed=1), width, blocked) == _bytes(_mlp(data, seed=1), width, None)
    assert "not written" in caplog.text


def test_a_state_entry_folded_into_the_graph_is_part_of_the_key_by_value(data, tmp_path, exports):
    """A classifier's output scaling is unused, so the exporter leaves it out of the initializers: a
    model with another value there is another graph, exported anew."""
    width = data[3].shape[1]
    trained = _mlp(data, seed=1)
    _bytes(trained, width, tmp_path)
    trained.model.y_mean.fill_(3.0)
    _bytes(trained, width, tmp_path)
    assert len(exports) == 2


def test_the_graph_cache_is_under_home_unless_configured_in_the_lake_elsewhere_or_off(tmp_path):
    home = {"CORMORANT_HOME": str(tmp_path)}
    assert Settings.from_env(home).graph_cache == str(tmp_path.resolve() / "cache" / "onnx-graphs")
    lake = {**home, "CORMORANT_LAKE_URI": "s3://bucket/lake/", "CORMORANT_GRAPH_CACHE": "lake"}
    assert Settings.from_env(lake).graph_cache == "s3://bucket/lake/_cache/onnx-graphs"
    other = tmp_path / "graphs"
    assert Settings.from_env({"CORMORANT_GRAPH_CACHE": str(other)}).graph_cache == str(other.resolve())
    assert Settings.from_env({"CORMORANT_GRAPH_CACHE": "s3://b/g"}).graph_cache == "s3://b/g"
    assert Settings.from_env({"CORMORANT_GRAPH_CACHE": "off"}).graph_cache is None


def test_trial_pods_share_the_graph_through_the_lake_on_s3(data, s3_endpoint, exports, monkeypatch):
    """A pod's files last one trial: its graph cache is in the lake (``CORMORANT_GRAPH_CACHE=lake``),
    reached with the pod's own storage credentials, and the next pod reads it from there."""
    import boto3
    from support import new_bucket

    bucket = new_bucket(s3_endpoint)
    pod_env = {
        "CORMORANT_LAKE_URI": f"s3://{bucket}/lake",
        "CORMORANT_GRAPH_CACHE": "lake",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }
    for name, value in pod_env.items():
        monkeypatch.setenv(name, value)
    cache = Settings.from_env().graph_cache
    width = data[3].shape[1]
    _bytes(_mlp(data, seed=1), width, cache)
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint)
        .list_objects_v2(Bucket=bucket)
        .get("Contents", [])
    ]
    assert len(keys) == 1 and keys[0].startswith("lake/_cache/onnx-graphs/") and keys[0].endswith(".onnx")
    _forget_graphs(monkeypatch)  # the next pod
    second = _mlp(data, seed=2)
    assert _bytes(second, width, cache) == _bytes(second, width, None)
    assert len(exports) == 2  # the first pod's, and the plain export above
