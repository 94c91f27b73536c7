"""Batch inference with ONNX Runtime over a lake partition, written back to the lake atomically.

Predictions keep the spec's key columns and partition column, and record the model name and
version that made them, so every row can be traced to a registered model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from cormorant import ledger
from cormorant.config import Settings
from cormorant.errors import NothingToDo, ParamError
from cormorant.lake import Lake, Manifest
from cormorant.spec import ModelSpec

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
# The predicted class of a classifier's row (never "label": that reads as the true outcome).
PREDICTED_CLASS = "predicted_class"


class NoChampion(NothingToDo, LookupError):
    """The registry has no version under the requested alias yet (nothing has been trained)."""


class UnknownModelVersion(ParamError, LookupError):
    """An explicit model version that the registry does not have."""


class UnblessedModelVersion(ParamError):
    """An explicit model version that did not pass its blessing (or whose registration never finished)."""


def predictions_dataset(spec: ModelSpec) -> str:
    return f"{spec.name}/{PREDICTIONS}"


def resolve_model(
    spec: ModelSpec,
    settings: Settings,
    alias: str = "champion",
    version: str | None = None,
    *,
    allow_unblessed: bool = False,
) -> dict[str, Any]:
    """The registered version to score with: an explicit ``version``, else the one under ``alias``.

    An explicit version must have passed its blessing (the ``cormorant.blessing`` tag registration sets
    last): a version half-registered by a training killed mid-way, or one that failed, is refused unless
    ``allow_unblessed``. The alias only ever moves to a blessed version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from cormorant.tracking import configure

    configure(settings)
    client = MlflowClient()
    name = spec.registered_model_name
    version = None if version is None else str(version)  # a param may arrive as a number
    try:
        mv = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException as e:
        if version:
            raise UnknownModelVersion(
                f"model_version {version!r}: registered model {name!r} has no such version; "
                f"it has {_existing_versions(client, name)}"
            ) from e
        raise NoChampion(
            f"registered model {name!r} has no alias {alias!r} yet; run the train DAG first"
        ) from e
    blessing = (mv.tags or {}).get("cormorant.blessing")
    if version and blessing != "passed" and not allow_unblessed:
        why = blessing or "none: its registration did not finish (a training stopped mid-way?)"
        raise UnblessedModelVersion(
            f"model_version {version!r}: {name} v{version} did not pass its blessing (cormorant.blessing: "
            f"{why}); pass allow_unblessed_version: true to score with it anyway"
        )
    return {
        "name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "uri": f"models:/{name}/{mv.version}",
    }


def _existing_versions(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        versions = []
    return f"versions {', '.join(map(str, versions))}" if versions else "no versions (nothing trained yet)"


def require_scorable(spec: ModelSpec, lake: Lake, partition: str) -> Manifest:
    """The partition's commit if it can be scored: it passed validation for exactly this commit
    (:func:`cormorant.validation.require_validated`) and has rows; an empty day is nothing to do."""
    from cormorant.validation import require_validated
    from cormorant.warehouse import raw_dataset

    manifest = lake.require(raw_dataset(spec), partition)
    if manifest.row_count == 0:
        raise NothingToDo(
            f"spec {spec.name!r}, partition {partition}: 0 rows, nothing to score (an empty day; the spec "
            f"asks for at least min_rows={spec.validation.min_rows})"
        )
    return require_validated(spec, lake, partition)[0]


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, each produced by a worker thread while the consumer works on the one before (errors
    are raised here, in order)."""
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="cormorant-prefetch") as pool:
        upcoming = pool.submit(next, items, done)
        while (item := upcoming.result()) is not done:
            upcoming = pool.submit(next, items, done)
            yield item


class ReasonCodes:
    """What ``predict.reason_codes`` adds to a prediction batch (:mod:`cormorant.explain`): nothing when
    it is 0; the top features per row when the model has an explainer; null columns, with a warning
    saying why, when it has none (an MLP, or a model trained before reason codes)."""

    def __init__(self, spec: ModelSpec, model: dict[str, Any]):
        from cormorant.explain import APPROXIMATE, Explainer, reason_columns

        self.k = spec.predict.reason_codes
        self.features = list(spec.feature_columns)
        self.names = reason_columns(self.k)
        self.explainer = Explainer.load(model["run_id"]) if self.k else None
        self.outputs = ["score"]
        self.approximate = False
        self.source: dict[str, Any] = {}
        if not self.k:
            return
        if self.explainer is None:
            why = (
                f"model {model['name']} v{model['version']} has no per-row explainer (the MLP family has "
                f"none; a model trained before reason codes neither): the reason columns are null"
            )
            log.warning("spec %r, predict.reason_codes %d: %s", spec.name, self.k, why)
            self.source = {"reason_codes": {"k": self.k, "unavailable": why}}
        else:
            self.outputs.append(self.explainer.features_tensor)
            self.approximate = (
                spec.predict.reason_method == "approximate" and self.explainer.booster is not None
            )
            method = APPROXIMATE if self.approximate else self.explainer.document["method"]
            self.source = {"reason_codes": {"k": self.k, "method": method}}

    def scoring_model(self, onnx_model: Any) -> Any:
        """The ONNX model to score with: with the preprocessed matrix as a second output when it is
        explained."""
        if self.explainer is None:
            return onnx_model
        from cormorant.explain import with_features_output

        width = len(self.explainer.document["slot_features"])
        return with_features_output(onnx_model, self.explainer.features_tensor, width)

    def columns(self, outputs: list[Any], rows: int) -> dict[str, pa.Array]:
        if not self.k:
            return {}
        from cormorant.explain import top_reasons

        if self.explainer is None or not rows:
            return {
                c: pa.nulls(rows, pa.float64() if c.endswith("_contribution") else pa.string())
                for c in self.names
            }
        contributions, _ = self.explainer.contributions(outputs[1], approximate=self.approximate)
        found = top_reasons(contributions, self.features, self.k)
        return {
            c: pa.array(found[c], type=pa.float64() if c.endswith("_contribution") else pa.string())
            for c in self.names
        }


@ledger.timed("batch scoring")
def predict_partition(
    spec: ModelSpec,
    lake: Lake,
    partition: str,
    model: dict[str, Any],
    *,
    batch_size: int = 65_536,
    lineage: dict[str, Any] | None = None,
) -> Manifest:
    """Score every row of ``partition`` with ``model`` (from :func:`resolve_model`) and commit the output.

    Only a commit that passed validation is scored (:func:`require_scorable`); nothing is written
    otherwise."""
    import mlflow.onnx
    import numpy as np

    from cormorant.export import onnx_session
    from cormorant.features import arrow_feed
    from cormorant.warehouse import raw_dataset

    raw = raw_dataset(spec)
    manifest = require_scorable(spec, lake, partition)
    onnx_model = mlflow.onnx.load_model(model["uri"])
    reasons = ReasonCodes(spec, model)
    session = onnx_session(reasons.scoring_model(onnx_model))
    passthrough = [*spec.source.key_columns, spec.source.partition_column]
    columns = list(dict.fromkeys([*passthrough, *spec.feature_columns]))
    raw_types = {f["name"] for f in manifest.schema}
    missing = [c for c in columns if c not in raw_types]
    if missing:
        raise KeyError(
            f"lake partition {raw}/ds={partition} lacks column(s) {missing} that spec "
            f"{spec.name!r} needs for inference"
        )

    def fed() -> Iterator[tuple[pa.RecordBatch, dict[str, Any]]]:
        # Arrow to ONNX Runtime tensors directly: no pandas frame, each category converted once.
        for batch in lake.iter_batches(raw, partition, batch_size=batch_size, columns=columns):
            yield batch, arrow_feed(batch, spec)

    def batches() -> Iterator[pa.RecordBatch]:
        # The next batch is read and converted while ONNX Runtime scores this one (it releases the GIL).
        for batch, feed in prefetched(fed()):
            outputs = session.run(reasons.outputs, feed) if batch.num_rows else [np.empty(0)]
            scores = np.asarray(outputs[0], dtype="float64").reshape(-1)
            arrays = {c: batch.column(c) for c in passthrough}
            arrays["score"] = pa.array(scores, type=pa.float64())
            if spec.is_classification:
                # Named apart from the target's true labels; the class at the spec's own threshold,
                # the one realized performance judges accuracy, precision and recall by.
                positive = scores >= spec.performance.decision_threshold
                arrays[PREDICTED_CLASS] = pa.array(positive.astype("int64"), type=pa.int64())
            arrays["model_name"] = pa.repeat(pa.scalar(model["name"], pa.string()), batch.num_rows)
            arrays["model_version"] = pa.repeat(pa.scalar(model["version"], pa.string()), batch.num_rows)
            arrays.update(reasons.columns(outputs, batch.num_rows))
            yield pa.RecordBatch.from_pydict(arrays)

    out = lake.write_partition(
        predictions_dataset(spec),
        partition,
        batches(),
        partition_column=spec.source.partition_column,
        source={"raw_content_hash": manifest.content_hash, "model": model, **reasons.source},
        lineage=lineage,
    )
    log.info(
        "predictions %s/%s: %d rows scored by %s v%s",
        spec.name,
        partition,
        out.row_count,
        model["name"],
        model["version"],
    )
    return out
