"""Which lake partitions a run works on, read from the run's context.

In order: the ``partition_date`` param (UI and REST triggers), the partitions named by the asset
events that triggered the run, and otherwise the date of the run's data interval start (nightly
runs and backfills).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def partitions_from_events(events_by_asset: Mapping[Any, Iterable[Any]] | None) -> list[str]:
    found: set[str] = set()
    for events in (events_by_asset or {}).values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            found.update(extra.get("partitions") or [])
    return sorted(found)


def resolve_partitions(context: Mapping[str, Any]) -> list[str]:
    """The ``YYYY-MM-DD`` partitions this run should process (at least one)."""
    explicit = (context.get("params") or {}).get("partition_date")
    if explicit:
        return [str(explicit)]
    from_events = partitions_from_events(context.get("triggering_asset_events"))
    if from_events:
        return from_events
    start = context.get("data_interval_start") or context.get("logical_date")
    if start is None:
        raise ValueError("cannot tell which partition to process: pass the 'partition_date' param")
    return [
        start.in_timezone("UTC").date().isoformat()
        if hasattr(start, "in_timezone")
        else start.date().isoformat()
    ]
