"""Which lake partitions a run works on, read from the run's context.

In order: the ``partition_date`` param (UI and REST triggers), the partitions named by the asset
events that triggered the run, then the run's logical date when it is a midnight in the spec's time
zone (a date typed in ``airflow dags test <dag> 2024-03-01``, the UI's or REST's logical date, nightly
runs and backfills, whose logical date is their data interval's start), and otherwise the start of the
run's data interval (a run triggered "now": the last complete day, never a day still being written).
So the date a person types is the partition processed, everywhere.

Labels of day D are final on D + k (``target.available_after_days``): a *scheduled* run of the labels
and performance DAGs for day R processes day R - k (``lag_days``); a date a person types is still the
day processed.
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


def _local(moment: Any, timezone: str) -> Any:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(timezone))


def resolve_partitions(context: Mapping[str, Any], timezone: str = "UTC", lag_days: int = 0) -> list[str]:
    """The ``YYYY-MM-DD`` partitions this run should process (at least one); days are calendar days in
    ``timezone`` (the spec's ``source.timezone``); a scheduled run goes back ``lag_days``."""
    days = _resolve(context, timezone)
    run_type = str(getattr(context.get("dag_run"), "run_type", "") or "")
    explicit = (context.get("params") or {}).get("partition_date")
    if lag_days and not explicit and run_type.lower().endswith("scheduled"):
        from datetime import date, timedelta

        return [(date.fromisoformat(d) - timedelta(days=lag_days)).isoformat() for d in days]
    return days


def _resolve(context: Mapping[str, Any], timezone: str) -> list[str]:
    explicit = (context.get("params") or {}).get("partition_date")
    if explicit:
        return [str(explicit)]
    from_events = partitions_from_events(context.get("triggering_asset_events"))
    if from_events:
        return from_events
    logical = context.get("logical_date")
    if logical is not None:
        local = _local(logical, timezone)
        if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
            return [local.date().isoformat()]
    start = context.get("data_interval_start") or logical
    if start is None:
        raise ValueError("cannot tell which partition to process: pass the 'partition_date' param")
    return [_local(start, timezone).date().isoformat()]
