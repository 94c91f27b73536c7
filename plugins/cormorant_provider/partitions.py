"""Which lake partitions a run works on, read from the run's context.

In order: the ``partition_date`` param (UI and REST triggers), the partitions named by the asset
events that triggered the run, then the run's logical date:

- a logical date at the start of a local day in the spec's time zone is that day (nightly runs and
  backfills, whose logical date is their data interval's start, and a REST or UI date given with the
  zone's offset);
- on a run a person started (``airflow dags test <dag> 2024-03-01``, a REST trigger, the UI's form), a
  logical date at a UTC midnight is the date typed: that date's local day in the spec's zone, wherever the
  zone lies (a New York spec's ``2024-03-10T00:00:00Z`` is New York's March 10th, not the day whose evening
  it falls in);
- otherwise the start of the run's data interval (a run triggered "now": the last complete local day,
  never a day still being written), and the task log says which day it took and why.

So the date a person types is the partition processed, in every time zone, on normal days and on the
days clocks change (a local day starts at the first instant of its date, which is 01:00 where a DST
change skips midnight).

Labels of day D are final on D + k (``target.available_after_days``): a *scheduled* run of the labels
and performance DAGs for day R processes day R - k (``lag_days``); a date a person types is still the
day processed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)


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


def _starts_a_day(moment: Any, timezone: str) -> bool:
    """Whether ``moment`` is the first instant of its local date in ``timezone`` (midnight, or the first
    hour that exists where a DST change skips midnight)."""
    from datetime import timedelta

    return _local(moment - timedelta(microseconds=1), timezone).date() < _local(moment, timezone).date()


def _started_by_a_person(context: Mapping[str, Any]) -> bool:
    run_type = str(getattr(context.get("dag_run"), "run_type", "") or "manual").lower()
    return run_type.endswith("manual")


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
        if _starts_a_day(logical, timezone):
            return [_local(logical, timezone).date().isoformat()]
        if _started_by_a_person(context) and _starts_a_day(logical, "UTC"):
            return [_local(logical, "UTC").date().isoformat()]  # the date typed, as that local day
    start = context.get("data_interval_start") or logical
    if start is None:
        raise ValueError("cannot tell which partition to process: pass the 'partition_date' param")
    day = _local(start, timezone).date().isoformat()
    if logical is not None:
        log.info(
            "logical date %s is no day's start in %s (nor a date typed at a UTC midnight): processing %s, "
            "the start of the run's data interval in %s; pass the partition_date param to choose the day",
            logical.isoformat(),
            timezone,
            day,
            timezone,
        )
    return [day]
