"""The model families a sweep draws from: a linear baseline, XGBoost and a PyTorch MLP.

Each family trains on the preprocessed float matrix, scores it (positive-class probability or the
regression prediction) and exports an ONNX graph with one input, ``features`` [n, k], and one
output, ``score`` [n, 1]; :mod:`cormorant.export` joins it to the preprocessing graph.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

OPSET = 18
ML_OPSET = 3


def gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a runtime requirement
        return False


def _nvidia_gpu_present() -> bool:
    """An NVIDIA GPU this process may use, asked of the driver (no CUDA runtime loaded)."""
    from pathlib import Path

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def trial_threads() -> int:
    """CPU threads a trial's fitting may use: ``CORMORANT_TRIAL_THREADS`` (the local backend divides the
    machine between the trials it runs at once; a pod sets its CPU request), else every CPU this
    process may run on."""
    configured = os.environ.get("CORMORANT_TRIAL_THREADS", "").strip()
    if configured:
        return max(1, int(configured))
    return len(os.sched_getaffinity(0))


def device_for(family: str) -> str:
    """``cuda`` or ``cpu`` for a trial of ``family``. Only the MLP imports torch to ask (1.3 s of a
    trial's start-up); XGBoost asks the driver, and the linear baseline runs on the CPU."""
    if family == "mlp":
        return "cuda" if gpu_available() else "cpu"
    if family == "xgboost" and _nvidia_gpu_present():
        import xgboost

        return "cuda" if xgboost.build_info().get("USE_CUDA") else "cpu"
    return "cpu"


def import_for(family: str) -> None:
    """Import now what fitting ``family`` imports on its first use, so that a fresh process pays it
    with its start-up, not inside its first fit, which a trial counts as compute. torch's optimisers
    import ``torch._dynamo`` when first built (``torch._compile._disable_dynamo``: 0.95 s here)."""
    if family == "mlp":
        import torch._dynamo  # noqa: F401


@dataclass
class Trained:
    family: str
    model: Any  # an MLP here is on the CPU whatever the device (its export and explanations read it)
    classification: bool
    device: str = "cpu"  # where it was fitted, and where :func:`predict_score` scores with it


def fit(
    family: str,
    X: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    *,
    classification: bool,
    seed: int,
    device: str = "cpu",
) -> Trained:
    """Train one family on a dense float32 matrix."""
    if family == "linear":
        model = _fit_linear(X, y, params, classification, seed)
    elif family == "xgboost":
        model = _fit_xgboost(X, y, params, classification, seed, device)
    elif family == "mlp":
        model = _fit_mlp(X, y, params, classification, seed, device)
    else:
        raise ValueError(f"unknown model family {family!r}")
    return Trained(family, model, classification, device)


def predict_score(trained: Trained, X: np.ndarray) -> np.ndarray:
    """Scores as a 1-D float array, computed on the device the model was fitted on."""
    model = trained.model
    if trained.family == "mlp":
        return _mlp_scores(model, X, trained.device)
    if trained.family == "xgboost" and trained.device != "cpu":
        # Host rows for a GPU booster go through a DMatrix; built here, XGBoost does not warn that it
        # falls back to one. A binary classifier's prediction is the positive class's probability.
        import xgboost as xgb

        rows = xgb.DMatrix(X, missing=model.missing, nthread=trial_threads())
        return np.asarray(model.get_booster().predict(rows)).reshape(-1)
    if trained.classification:
        return model.predict_proba(X)[:, 1]
    return np.asarray(model.predict(X)).reshape(-1)


def _fit_linear(X: np.ndarray, y: np.ndarray, params: dict[str, Any], classification: bool, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge

    if classification:
        return LogisticRegression(
            C=float(params.get("C", 1.0)), max_iter=int(params.get("max_iter", 1000)), random_state=seed
        ).fit(X, y)
    return Ridge(alpha=float(params.get("alpha", 1.0)), random_state=seed).fit(X, y)


def _fit_xgboost(
    X: np.ndarray, y: np.ndarray, params: dict[str, Any], classification: bool, seed: int, device: str
) -> Any:
    import xgboost as xgb

    cls = xgb.XGBClassifier if classification else xgb.XGBRegressor
    model = cls(**params, tree_method="hist", device=device, random_state=seed, n_jobs=trial_threads())
    if device == "cpu":
        return model.fit(X, y)
    # On a GPU, from a plain DMatrix. scikit-learn's wrapper builds a QuantileDMatrix, and from host
    # arrays that sketches the quantiles on the CPU: 2.95 s of a 6.5 s fit of 8M rows x 17 on an H100
    # machine's 16 CPUs (docs/benchmarks.md). From a DMatrix the GPU sketches them. The booster is
    # trained with the wrapper's own parameters and loaded back into it, a scikit-learn model as before.
    booster = xgb.train(
        model.get_xgb_params(),
        xgb.DMatrix(X, y, missing=model.missing, nthread=model.n_jobs),
        num_boost_round=model.n_estimators,
    )
    model.load_model(booster.save_raw("ubj"))
    model.get_booster().set_param({"device": device})  # the saved model keeps no device: score there too
    return model


def _fit_mlp(
    X: np.ndarray, y: np.ndarray, params: dict[str, Any], classification: bool, seed: int, device: str
) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if device == "cpu":
        torch.set_num_threads(trial_threads())
    hidden, layers = int(params.get("hidden_units", 32)), int(params.get("layers", 2))
    dropout = float(params.get("dropout", 0.0))
    blocks: list[nn.Module] = []
    width = X.shape[1]
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = hidden
    blocks.append(nn.Linear(width, 1))
    body = nn.Sequential(*blocks)
    y_mean = 0.0 if classification else float(np.mean(y))
    y_std = 1.0 if classification else float(np.std(y) or 1.0)
    model = _ScoredMLP(body, classification, y_mean, y_std).to(device)
    on_gpu = device == "cuda"
    opt = torch.optim.Adam(
        model.parameters(),
        lr=float(params.get("learning_rate", 1e-3)),
        weight_decay=float(params.get("weight_decay", 0.0)),
        # one fused kernel for every parameter's update (on the CPU too: a small MLP's step is mostly
        # per-tensor overhead, and fused Adam made its fit 23% faster than the per-parameter loop)
        fused=True,
        **({"capturable": True} if on_gpu else {}),
    )
    loss_fn = nn.BCEWithLogitsLoss() if classification else nn.MSELoss()
    Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
    yt = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32, device=device).reshape(-1, 1)
    batch = int(params.get("batch_size", 256))
    generator = torch.Generator().manual_seed(seed)

    def step(idx: Any) -> None:
        opt.zero_grad(set_to_none=False)  # gradients stay where a CUDA graph wrote them
        # (no autocast cache on the GPU: a captured graph must recast the weights at every replay)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=on_gpu, cache_enabled=False):
            loss = loss_fn(model.body(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()

    run_step = _GraphedStep(step, batch, device) if on_gpu else step
    for _ in range(int(params.get("epochs", 20))):
        model.train()
        # The order is drawn on the CPU (the same for every device), then moved once per epoch: a
        # CPU index into a GPU tensor would copy and synchronise at every step.
        for idx in torch.randperm(len(Xt), generator=generator).to(device).split(batch):
            run_step(idx)
    return model.cpu().eval()


# Rows per forward pass when an MLP scores on a GPU: bounds the device memory scoring takes (the
# activations of 2^20 rows at 256 units are 1 GiB a layer).
GPU_SCORE_ROWS = 1 << 20


def _mlp_scores(model: Any, X: np.ndarray, device: str) -> np.ndarray:
    """The MLP's scores in float32. An MLP fitted on a GPU scores there, from a copy of it (the fitted
    model stays on the CPU). On an H100 machine, scoring 2M rows on its CPUs took 1.7 s, longer than
    fitting 8M rows on the GPU (1.5 s); on the GPU it takes under 0.1 s (docs/benchmarks.md)."""
    import copy

    import torch

    with torch.no_grad():
        if device == "cpu":
            return model.eval()(torch.as_tensor(X, dtype=torch.float32)).numpy().reshape(-1)
        on_device = copy.deepcopy(model).to(device).eval()
        parts = [
            on_device(torch.as_tensor(X[start : start + GPU_SCORE_ROWS], dtype=torch.float32).to(device))
            .reshape(-1)
            .cpu()
            for start in range(0, len(X), GPU_SCORE_ROWS)
        ]
        return torch.cat(parts).numpy() if parts else np.empty(0, dtype=np.float32)


class _GraphedStep:
    """One optimiser step per call, replayed from a CUDA graph after a few eager ones.

    An MLP of this size is bound by kernel launches, not arithmetic: on an H100, an epoch of 8M rows
    in batches of 4096 took 4.7 s stepped eagerly and 0.66 s replayed from a graph. Every batch still
    gets exactly one step: the first full batches run eagerly on a side stream (the warm-up a capture
    needs), the capture itself runs nothing, and each later full batch copies its indices into the
    graph's input and replays it; a short last batch of an epoch runs eagerly.
    """

    WARM_UP = 3

    def __init__(self, step: Any, batch: int, device: str):
        import torch

        self.step, self.batch, self.eager_full_batches = step, batch, 0
        self.graph: Any = None
        self.indices = torch.zeros(batch, dtype=torch.long, device=device)
        self.stream = torch.cuda.Stream()

    def __call__(self, idx: Any) -> None:
        import torch

        if len(idx) != self.batch:
            self.step(idx)
            return
        if self.graph is None:
            if self.eager_full_batches < self.WARM_UP:
                self.eager_full_batches += 1
                self.stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(self.stream):
                    self.step(idx)
                torch.cuda.current_stream().wait_stream(self.stream)
                return
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step(self.indices)
        self.indices.copy_(idx)
        self.graph.replay()


def _scored_mlp_class() -> type:
    import torch
    from torch import nn

    class ScoredMLP(nn.Module):
        """The MLP body plus its output transform (sigmoid, or the target's un-scaling)."""

        def __init__(self, body: nn.Module, classification: bool, y_mean: float, y_std: float):
            super().__init__()
            self.body, self.classification = body, classification
            self.register_buffer("y_mean", torch.tensor(y_mean, dtype=torch.float32))
            self.register_buffer("y_std", torch.tensor(y_std, dtype=torch.float32))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            raw = self.body(features)
            return torch.sigmoid(raw) if self.classification else raw * self.y_std + self.y_mean

    return ScoredMLP


def _ScoredMLP(*args: Any) -> Any:
    return _scored_mlp_class()(*args)


# -- ONNX -----------------------------------------------------------------------------------------------
def to_onnx(trained: Trained, n_features: int, *, graph_cache: Path | str | None = None) -> Any:
    """The family's model as ONNX: input ``features`` [n, k] float32, output ``score`` [n, 1].

    ``graph_cache``: a folder or URI keeping the MLP's exported graph per architecture
    (:mod:`cormorant.graph_cache`); None exports every time."""
    if trained.family == "mlp":
        return _mlp_to_onnx(trained.model, n_features, graph_cache)
    if trained.family == "xgboost":
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        initial = [("features", FloatTensorType([None, n_features]))]
        # onnxmltools converts XGBoost up to opset 15; export.py upgrades the graph to OPSET.
        model = onnxmltools.convert_xgboost(trained.model, initial_types=initial, target_opset=15)
        if trained.classification and _binary_trees_as_margin(model):
            return model
    else:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        initial = [("features", FloatTensorType([None, n_features]))]
        options = {id(trained.model): {"zipmap": False}} if trained.classification else None
        model = convert_sklearn(
            trained.model,
            initial_types=initial,
            options=options,
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        )
    return _score_output(model, classification=trained.classification)


def _binary_trees_as_margin(model: Any) -> bool:
    """Score a binary-logistic tree ensemble as ``Sigmoid(TreeEnsembleRegressor)`` instead of the
    converter's ``TreeEnsembleClassifier``; True when the graph was rewritten (its output is then
    ``score`` [n, 1]).

    The two compute the same probability (the same trees, base value and leaf weights; ONNX Runtime's
    logistic against its Sigmoid, within 2.4e-7 on the benchmark's model), but ONNX Runtime's classifier
    also builds both classes' probabilities and a label per row that the score drops: 1.40 s against
    1.24 s per 1M rows on the benchmark's model (docs/benchmarks.md, inference). Any other shape of
    ensemble (several classes, a transform other than LOGISTIC, weights as tensors, two base values)
    keeps the converter's graph."""
    from onnx import TensorProto, helper

    graph = model.graph
    if len(graph.node) != 1 or graph.node[0].op_type != "TreeEnsembleClassifier":
        return False
    node = graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    binary = len(attrs.get("classlabels_int64s", attrs.get("classlabels_strings", []))) == 2
    leaves = ("class_ids", "class_nodeids", "class_treeids", "class_weights")
    if (
        not binary
        or attrs.get("post_transform") != b"LOGISTIC"
        or any(k not in attrs for k in leaves)  # e.g. weights given as a tensor attribute instead
        or set(attrs["class_ids"]) != {0}
        or len(attrs.get("base_values", [])) > 1
    ):
        return False
    tree = {k: v for k, v in attrs.items() if k.startswith("nodes_")}
    regressor = helper.make_node(
        "TreeEnsembleRegressor",
        list(node.input),
        ["margin"],
        domain="ai.onnx.ml",
        n_targets=1,
        post_transform="NONE",
        base_values=list(attrs.get("base_values", [0.0])),
        target_ids=attrs["class_ids"],
        target_nodeids=attrs["class_nodeids"],
        target_treeids=attrs["class_treeids"],
        target_weights=attrs["class_weights"],
        **tree,
    )
    del graph.node[:]
    graph.node.extend([regressor, helper.make_node("Sigmoid", ["margin"], ["score"])])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1]))
    _import_default_domain(model)
    return True


def _import_default_domain(model: Any) -> None:
    """Declare the default ONNX domain (at OPSET) in a converter's graph that imported only
    ``ai.onnx.ml`` (onnxmltools' XGBoost graphs) before standard operators are added to it."""
    from onnx import helper

    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", OPSET))


def warm_exporter() -> None:
    """Export a one-layer MLP once, so that a process's first real export finds torch's ONNX exporter
    ready (raises ImportError without torch)."""
    import torch

    _mlp_to_onnx(_ScoredMLP(torch.nn.Linear(2, 1), True, 0.0, 1.0).eval(), 2, None)


def _mlp_to_onnx(model: Any, n_features: int, graph_cache: Path | str | None) -> Any:
    import torch

    from cormorant.graph_cache import export_with_cache

    example = torch.zeros(2, n_features, dtype=torch.float32)

    def export() -> Any:
        return torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["features"],
            output_names=["score"],
            dynamic_shapes=({0: torch.export.Dim("rows")},),
            opset_version=OPSET,
            verbose=False,
        )

    # the output transform (sigmoid or un-scaling) is chosen in forward, not shown by the module's repr
    return export_with_cache(
        model, example, export, graph_cache, classification=model.classification, opset=OPSET
    )


def _score_output(model: Any, *, classification: bool) -> Any:
    """Replace a converter's outputs with a single ``score`` [n, 1] tensor."""
    from onnx import TensorProto, helper

    graph = model.graph
    names = [o.name for o in graph.output]
    if classification:
        probs = next(n for n in names if "prob" in n)
        graph.initializer.append(helper.make_tensor("positive_class", TensorProto.INT64, [1], [1]))
        graph.node.append(helper.make_node("Gather", [probs, "positive_class"], ["score"], axis=1))
    else:
        graph.node.append(helper.make_node("Reshape", [names[0], "score_shape"], ["score"]))
        graph.initializer.append(helper.make_tensor("score_shape", TensorProto.INT64, [2], [-1, 1]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1]))
    _import_default_domain(model)
    return model
