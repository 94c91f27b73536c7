"""The model's input contract and preprocessing, shared by training, ONNX export and serving.

Inputs are the raw feature columns: numeric ones as float32 (null -> NaN), categorical ones as
strings (null -> ""). The preprocessing (median imputation and scaling for numbers, one-hot for
categories, unknown categories ignored) is a scikit-learn ColumnTransformer that is exported to
ONNX with the model, so serving needs nothing but ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cormorant.spec import ModelSpec

MISSING_CATEGORY = ""


def _present(frame: pd.DataFrame, spec: ModelSpec) -> None:
    missing = [c for c in spec.feature_columns if c not in frame.columns]
    if missing:
        raise KeyError(f"spec {spec.name!r}: feature column(s) {missing} are missing from the data")


def _numbers(values: pd.Series) -> np.ndarray:
    """A numeric feature column as float32 (null -> NaN)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":  # the lake's, and a model frame's
        return values.to_numpy(dtype=np.float32)
    return pd.to_numeric(values, errors="raise").astype("float32").to_numpy()


def _categories(values: pd.Series) -> np.ndarray:
    """A categorical feature column as an object array of strings (null -> MISSING_CATEGORY)."""
    if isinstance(values.dtype, pd.StringDtype):  # the lake's strings, and a model frame's
        return values.to_numpy(dtype=object, na_value=MISSING_CATEGORY)
    values = values.astype(object)
    return values.where(values.notna(), MISSING_CATEGORY).astype(str).to_numpy(dtype=object)


def model_frame(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The feature columns typed as the model (and its ONNX graph) expects them."""
    _present(frame, spec)
    columns = {c: _numbers(frame[c]) for c in spec.features.numeric}
    columns.update({c: _categories(frame[c]) for c in spec.features.categorical})
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))


def target_vector(frame: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    y = frame[spec.target.column]
    if y.isna().any():
        raise ValueError(f"spec {spec.name!r}: target column {spec.target.column!r} has nulls")
    return y.to_numpy(dtype="int64" if spec.is_classification else "float64")


def onnx_feed(frame: pd.DataFrame, spec: ModelSpec) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs: one [n, 1] tensor per raw feature column, the values :func:`model_frame`
    gives, converted straight from the frame's columns (no frame built between)."""
    _present(frame, spec)
    feed = {c: _numbers(frame[c]).reshape(-1, 1) for c in spec.features.numeric}
    feed.update({c: _categories(frame[c]).astype(str).reshape(-1, 1) for c in spec.features.categorical})
    return feed


def arrow_feed(batch: Any, spec: ModelSpec) -> dict[str, np.ndarray]:
    """:func:`onnx_feed` straight from an Arrow record batch or table (the lake's types: float64
    numbers, string categories), with no pandas frame between: the same tensors, value for value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    feed: dict[str, np.ndarray] = {}
    names = set(batch.schema.names)
    missing = [c for c in spec.feature_columns if c not in names]
    if missing:
        raise KeyError(f"spec {spec.name!r}: feature column(s) {missing} are missing from the data")
    for column in spec.features.numeric:
        values = pc.cast(batch.column(column), pa.float32())
        values = pc.fill_null(values, pa.scalar(np.nan, pa.float32()))
        feed[column] = values.to_numpy(zero_copy_only=False).reshape(-1, 1)
    for column in spec.features.categorical:
        feed[column] = _category_tensor(batch.column(column)).reshape(-1, 1)
    return feed


def _category_tensor(values: Any) -> np.ndarray:
    """A string column as a numpy unicode array (null -> ""), converting each distinct value once:
    dictionary-encode, convert the (few) words, then index them; categories repeat, rows do not."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_dictionary(values.type):
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = pc.cast(values, pa.string())
        values = pc.dictionary_encode(values)
    words = np.append(values.dictionary.to_numpy(zero_copy_only=False).astype(str), MISSING_CATEGORY)
    indices = pc.fill_null(values.indices, len(words) - 1).to_numpy(zero_copy_only=False)
    return words.astype(str)[indices]


def build_preprocessor(spec: ModelSpec) -> Any:
    """An unfitted ColumnTransformer producing the dense float matrix every model family trains on."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers = []
    if spec.features.numeric:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, list(spec.features.numeric)))
    if spec.features.categorical:
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        transformers.append(("categorical", onehot, list(spec.features.categorical)))
    return ColumnTransformer(transformers, sparse_threshold=0.0)


class FittedPreprocessor:
    """A fitted ColumnTransformer and its ONNX graph; ``transform`` runs the ONNX graph.

    Models train on exactly the matrix the exported graph computes at serving time, so a tree
    split that lands on a value cannot flip between scikit-learn's float64 arithmetic and ONNX's
    float32 arithmetic (training/serving skew of one ulp is enough to move a prediction).
    """

    def __init__(self, spec: ModelSpec, frame: pd.DataFrame):
        from cormorant.export import onnx_session, preprocessor_to_onnx
        from cormorant.families import trial_threads

        self.spec = spec
        self.sklearn = build_preprocessor(spec).fit(model_frame(frame, spec))
        self.onnx = preprocessor_to_onnx(self.sklearn, spec)
        self._session = onnx_session(self.onnx, threads=trial_threads())  # a trial's: its CPUs
        self._output = self.onnx.graph.output[0].name

    @property
    def output_name(self) -> str:
        """The ONNX graph's output: the preprocessed matrix (a tensor inside the exported model)."""
        return self._output

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        (matrix,) = self._session.run([self._output], onnx_feed(frame, self.spec))
        return np.asarray(matrix, dtype=np.float32)
