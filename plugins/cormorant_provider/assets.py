"""The Assets that chain a spec's DAGs: declared once, shared by producers and consumers."""

from __future__ import annotations

from airflow.sdk import Asset

STAGES = ("raw", "validated", "labels", "model", "predictions", "retrain")


def spec_asset(spec_name: str, stage: str) -> Asset:
    """``cormorant://<spec>/<stage>``: raw partitions landed, validated, model registered, ..."""
    if stage not in STAGES:
        raise ValueError(f"unknown asset stage {stage!r}; expected one of {STAGES}")
    return Asset(
        name=f"cormorant.{spec_name}.{stage}", uri=f"cormorant://{spec_name}/{stage}", group="cormorant"
    )
