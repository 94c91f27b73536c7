from __future__ import annotations

from types import SimpleNamespace

import pendulum
import pytest

from cormorant_provider.partitions import partitions_from_events, resolve_partitions


def _event(*partitions):
    return SimpleNamespace(extra={"partitions": list(partitions)})


def test_param_wins_over_events_and_interval():
    context = {
        "params": {"partition_date": "2024-03-05"},
        "triggering_asset_events": {"a": [_event("2024-03-01")]},
        "data_interval_start": pendulum.datetime(2024, 3, 9, tz="UTC"),
    }
    assert resolve_partitions(context) == ["2024-03-05"]


def test_asset_events_name_every_landed_partition_once():
    events = {
        "raw": [_event("2024-03-02"), _event("2024-03-01", "2024-03-02")],
        "other": [SimpleNamespace(extra={})],
    }
    assert partitions_from_events(events) == ["2024-03-01", "2024-03-02"]
    assert resolve_partitions({"params": {}, "triggering_asset_events": events}) == [
        "2024-03-01",
        "2024-03-02",
    ]


def test_nightly_run_uses_its_data_interval_start_in_utc():
    start = pendulum.datetime(2024, 3, 1, 23, 30, tz="America/New_York")  # 04:30 UTC on the 2nd
    assert resolve_partitions({"params": {"partition_date": None}, "data_interval_start": start}) == [
        "2024-03-02"
    ]


def test_no_way_to_tell_asks_for_the_param():
    with pytest.raises(ValueError, match="partition_date"):
        resolve_partitions({"params": {}})


def test_nightly_and_backfill_runs_cover_each_day_exactly_once():
    """Backfills (CLI or REST) create runs with the timetable's scheduled data intervals, as the nightly
    schedule does; each such interval resolves to its own day's partition."""
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.timetables.interval import CronDataIntervalTimetable

    timetable = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
    restriction = TimeRestriction(
        earliest=pendulum.datetime(2024, 3, 1, tz="UTC"),
        latest=pendulum.datetime(2024, 3, 5, tz="UTC"),
        catchup=True,
    )
    last: DataInterval | None = None
    partitions = []
    while info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction):
        partitions += resolve_partitions({"params": {}, "data_interval_start": info.data_interval.start})
        last = info.data_interval
    assert partitions == ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"]
