"""ONNX export of a whole model: the preprocessing graph joined to a family's graph.

The result takes the raw feature columns (see :func:`cormorant.features.onnx_feed`) and returns
``score`` [n, 1], so batch inference needs ONNX Runtime and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cormorant.families import ML_OPSET, OPSET, Trained, to_onnx
from cormorant.spec import ModelSpec

if TYPE_CHECKING:
    from pathlib import Path

    from cormorant.features import FittedPreprocessor


def preprocessor_to_onnx(preprocessor: Any, spec: ModelSpec) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    inputs = [(c, FloatTensorType([None, 1])) for c in spec.features.numeric]
    inputs += [(c, StringTensorType([None, 1])) for c in spec.features.categorical]
    return convert_sklearn(
        preprocessor, initial_types=inputs, target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET}
    )


def export_model(
    preprocessor: FittedPreprocessor,
    trained: Trained,
    spec: ModelSpec,
    n_features: int,
    *,
    graph_cache: Path | str | None = None,
) -> Any:
    """One ONNX model: raw columns in, ``score`` out, with metadata naming the spec and family
    (``graph_cache``: see :func:`cormorant.families.to_onnx`)."""
    import copy

    import onnx.compose

    pre = _aligned(copy.deepcopy(preprocessor.onnx))
    est = _aligned(
        onnx.compose.add_prefix(to_onnx(trained, n_features, graph_cache=graph_cache), prefix="model_")
    )
    pre.ir_version = est.ir_version = max(pre.ir_version, est.ir_version)
    merged = onnx.compose.merge_models(
        pre, est, io_map=[(pre.graph.output[0].name, "model_features")], outputs=["model_score"]
    )
    from onnx import helper

    merged.graph.node.append(helper.make_node("Identity", ["model_score"], ["score"]))
    merged.graph.output[0].name = "score"
    onnx.helper.set_model_props(
        merged,
        {
            "cormorant.spec": spec.name,
            "cormorant.family": trained.family,
            "cormorant.spec_fingerprint": spec.fingerprint,
        },
    )
    onnx.checker.check_model(merged)
    return merged


def _aligned(model: Any) -> Any:
    """Bring a converter's output to the shared opsets so that two graphs can be merged.

    Converters declare the lowest opset that their operators need; ``onnx.version_converter``
    upgrades the default domain properly, and duplicate imports are folded to one per domain.
    """
    import onnx.version_converter
    from onnx import helper

    default = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=OPSET)
    if default < OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    versions.setdefault("ai.onnx.ml", ML_OPSET)
    versions["ai.onnx.ml"] = max(versions["ai.onnx.ml"], ML_OPSET)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    return model


def onnx_session(model: Any, threads: int = 2) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads: 2 for serving; a trial
    passes its share of the CPUs (``families.trial_threads``), so that trials side by side do not
    oversubscribe the machine (each extra thread would also spin between runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnx_scores(session: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
    (score,) = session.run(["score"], feed)
    return np.asarray(score, dtype="float64").reshape(-1)
