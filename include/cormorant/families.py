"""The model families a sweep draws from: a linear baseline, XGBoost and a PyTorch MLP.

Each family trains on the preprocessed float matrix, scores it (positive-class probability or the
regression prediction) and exports an ONNX graph with one input, ``features`` [n, k], and one
output, ``score`` [n, 1]; :mod:`cormorant.export` joins it to the preprocessing graph.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

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


def device_for(family: str) -> str:
    """``cuda`` or ``cpu`` for a trial of ``family``. Only the MLP imports torch to ask (1.3 s of a
    trial's start-up); XGBoost asks the driver, and the linear baseline runs on the CPU."""
    if family == "mlp":
        return "cuda" if gpu_available() else "cpu"
    if family == "xgboost" and _nvidia_gpu_present():
        import xgboost

        return "cuda" if xgboost.build_info().get("USE_CUDA") else "cpu"
    return "cpu"


@dataclass
class Trained:
    family: str
    model: Any
    classification: bool


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
    return Trained(family, model, classification)


def predict_score(trained: Trained, X: np.ndarray) -> np.ndarray:
    """Scores as a 1-D float array."""
    model = trained.model
    if trained.family == "mlp":
        import torch

        with torch.no_grad():
            model.eval()
            return model(torch.as_tensor(X, dtype=torch.float32)).numpy().reshape(-1)
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
    model = cls(**params, tree_method="hist", device=device, random_state=seed, n_jobs=2)
    return model.fit(X, y)


def _fit_mlp(
    X: np.ndarray, y: np.ndarray, params: dict[str, Any], classification: bool, seed: int, device: str
) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
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
    opt = torch.optim.Adam(
        model.parameters(),
        lr=float(params.get("learning_rate", 1e-3)),
        weight_decay=float(params.get("weight_decay", 0.0)),
    )
    loss_fn = nn.BCEWithLogitsLoss() if classification else nn.MSELoss()
    Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
    yt = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32, device=device).reshape(-1, 1)
    batch = int(params.get("batch_size", 256))
    generator = torch.Generator().manual_seed(seed)
    use_amp = device == "cuda"
    for _ in range(int(params.get("epochs", 20))):
        model.train()
        for idx in torch.randperm(len(Xt), generator=generator).split(batch):
            opt.zero_grad()
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model.body(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.cpu().eval()


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
def to_onnx(trained: Trained, n_features: int) -> Any:
    """The family's model as ONNX: input ``features`` [n, k] float32, output ``score`` [n, 1]."""
    if trained.family == "mlp":
        return _mlp_to_onnx(trained.model, n_features)
    if trained.family == "xgboost":
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        initial = [("features", FloatTensorType([None, n_features]))]
        # onnxmltools converts XGBoost up to opset 15; export.py upgrades the graph to OPSET.
        model = onnxmltools.convert_xgboost(trained.model, initial_types=initial, target_opset=15)
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


def _mlp_to_onnx(model: Any, n_features: int) -> Any:
    import torch

    program = torch.onnx.export(
        model,
        (torch.zeros(2, n_features, dtype=torch.float32),),
        dynamo=True,
        input_names=["features"],
        output_names=["score"],
        dynamic_shapes=({0: torch.export.Dim("rows")},),
        opset_version=OPSET,
        verbose=False,
    )
    return program.model_proto


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
    return model
