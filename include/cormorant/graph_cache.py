"""ONNX graphs of torch models, exported once per architecture and filled with each model's weights.

``torch.onnx.export`` (the dynamo-based exporter) traces the model, builds onnxscript's registry of
torchlib functions and optimises the graph: 0.5-1.3 s for a small MLP in a warm process, about 3 s on
a process's first export, whatever the model's size. Two models of the same architecture (the same
layers, the same input width, the same state-dict names, shapes and dtypes) export to the same graph
but for its initializers, which the exporter names after the state dict. So the first export of an
architecture is kept, in memory and as a file in the cache folder (a local folder, or one in the lake
on an object store, which trial pods share), and every later one is that
graph with the new weights put in, through ``ONNXProgram.apply_weights``' own mechanism (the
initializers' values replaced by name): the same bytes as a fresh export, in about a millisecond.

Only graphs whose every initializer is a state-dict entry are kept; a state-dict entry the exporter
folded into the graph instead (the MLP's unused output scaling, say) is part of the key by value. The
key also names torch's, onnxscript's and onnx-ir's versions and the opset, so an upgrade exports anew.
A cache file that cannot be read is exported over. The trainer checks every exported model against
the native one on the holdout (``PARITY_TOLERANCE``) whichever way its graph was made.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IN_MEMORY = 8  # architectures a process keeps parsed
_graphs: OrderedDict[tuple[str, str], Any] = OrderedDict()  # (folder, key) -> onnx_ir.Model


def export_with_cache(
    model: Any, example_input: Any, export: Callable[[], Any], cache_dir: Path | str | None, **key_parts: Any
) -> Any:
    """``model`` (a torch module in eval mode) as an ONNX ``ModelProto``: ``export()`` (which returns
    a ``torch.onnx.ONNXProgram``) on a miss, the kept graph with ``model``'s weights on a hit.

    ``example_input`` is the tensor the export traces with (its shape and dtype are part of the key),
    ``key_parts`` anything else the graph depends on that the module's repr does not show.
    ``cache_dir``: a folder or a URI (``s3://...``, read and written as the lake is); None keeps
    nothing: every call exports."""
    import onnx_ir as ir

    if cache_dir is None:
        return export().model_proto
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    key = _key(model, example_input, state, key_parts)
    graph = _graphs.get((str(cache_dir), key))
    if graph is None:
        graph = _load(cache_dir, key)
    if graph is not None and _folded_state(graph) != _fingerprints(state, graph):
        graph = None  # a folded entry has another value: its graph is another one
    if graph is None:
        graph = export().model
        if not set(graph.graph.initializers) <= set(state):
            log.debug("graph of %s has initializers outside its state dict: not cached", type(model).__name__)
            return ir.serde.serialize_model(graph)
        graph.metadata_props[_FOLDED] = json.dumps(_fingerprints(state, graph), sort_keys=True)
        if _save(cache_dir, key, graph):
            log.info("exported %s's ONNX graph; kept as %s", type(model).__name__, _path(cache_dir, key))
    else:
        log.info("%s's ONNX graph from the cache (%s), with this model's weights", type(model).__name__, key)
    _graphs[(str(cache_dir), key)] = graph
    _graphs.move_to_end((str(cache_dir), key))
    while len(_graphs) > IN_MEMORY:
        _graphs.popitem(last=False)
    for name, value in graph.graph.initializers.items():
        value.const_value = ir.Tensor(state[name].numpy(), name=name)
    return _serialized(graph)


_FOLDED = "cormorant.folded_state"  # kept on the cached graph, never in what is returned


def _key(model: Any, example_input: Any, state: dict[str, Any], key_parts: dict[str, Any]) -> str:
    from importlib.metadata import version

    import torch

    described = {
        # the exporter's packages (onnxscript by its metadata: importing it takes 0.2 s a hit need not pay)
        "versions": [torch.__version__, version("onnxscript"), version("onnx-ir")],
        "module": f"{type(model).__module__}.{type(model).__qualname__}",
        "repr": repr(model),
        "input": [list(example_input.shape), str(example_input.dtype)],
        "state": [[name, list(t.shape), str(t.dtype)] for name, t in state.items()],
        **{name: repr(value) for name, value in sorted(key_parts.items())},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def _fingerprints(state: dict[str, Any], graph: Any) -> dict[str, str]:
    """A digest of each state-dict entry that is not one of ``graph``'s initializers (the exporter
    folded it into the graph, or it is unused): the graph holds those values."""
    return {
        name: hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
        for name, tensor in state.items()
        if name not in graph.graph.initializers
    }


def _folded_state(graph: Any) -> dict[str, str]:
    return json.loads(graph.metadata_props.get(_FOLDED, "{}"))


def _serialized(graph: Any) -> Any:
    import onnx_ir as ir

    folded = graph.metadata_props.pop(_FOLDED, None)
    try:
        return ir.serde.serialize_model(graph)
    finally:
        if folded is not None:
            graph.metadata_props[_FOLDED] = folded


def _path(cache_dir: Path | str, key: str) -> Any:
    from upath import UPath

    return UPath(cache_dir) / f"{key}.onnx"


def _load(cache_dir: Path | str, key: str) -> Any:
    """The kept graph (one read: on an object store a single GET), or None."""
    import onnx
    import onnx_ir as ir

    path = _path(cache_dir, key)
    try:
        return ir.serde.deserialize_model(onnx.load_model_from_string(path.read_bytes()))
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged cache file is exported over, never trusted
        log.warning("ONNX graph cache %s cannot be read (%s); exporting anew", path, exc)
        return None


def _save(cache_dir: Path | str, key: str, graph: Any) -> bool:
    """Write the graph under its key in one step (:func:`cormorant.lake.write_bytes_atomic`: a renamed
    temporary file on a local disk, a single PUT on an object store): processes exporting the same
    architecture side by side each write a whole file, and the last one wins."""
    import onnx_ir as ir

    from cormorant.lake import write_bytes_atomic

    try:
        write_bytes_atomic(_path(cache_dir, key), ir.serde.serialize_model(graph).SerializeToString())
    except Exception as exc:  # a read-only or full disk costs the next export its time, not the trial
        log.warning("ONNX graph cache %s not written (%s)", cache_dir, exc)
        return False
    return True
