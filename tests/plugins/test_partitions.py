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


def test_a_typed_date_is_the_partition_and_a_run_triggered_now_takes_the_last_complete_day():
    """`airflow dags test churn__ingest 2024-03-01` used to process 2024-02-29: the start of the data
    interval that ends at the typed date."""
    typed = {
        "params": {},
        "logical_date": pendulum.datetime(2024, 3, 1, tz="UTC"),
        "data_interval_start": pendulum.datetime(2024, 2, 29, tz="UTC"),
    }
    assert resolve_partitions(typed) == ["2024-03-01"]
    now = {**typed, "logical_date": pendulum.datetime(2024, 3, 1, 13, 37, tz="UTC")}
    assert resolve_partitions(now) == ["2024-02-29"]


def test_days_are_local_days_in_the_specs_time_zone():
    nightly = {  # the New York timetable's interval for March 10th, a 23-hour day
        "params": {},
        "logical_date": pendulum.datetime(2024, 3, 10, tz="America/New_York"),
        "data_interval_start": pendulum.datetime(2024, 3, 10, tz="America/New_York"),
    }
    assert resolve_partitions(nightly, "America/New_York") == ["2024-03-10"]
    assert resolve_partitions(nightly, "UTC") == ["2024-03-10"]  # 05:00 UTC: not a UTC midnight...
    typed_utc = {"params": {}, "logical_date": pendulum.datetime(2024, 3, 10, tz="UTC")}
    # ... and a UTC midnight is 19:00 the day before in New York, not a local midnight
    assert resolve_partitions({**typed_utc, "data_interval_start": None}, "America/New_York") == [
        "2024-03-09"
    ]


def test_a_time_zone_spec_schedules_local_days():
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    from cormorant_provider.dag_factory import _cron

    timetable = coerce_to_core_timetable(_cron("0 0 * * *", "America/New_York"))
    restriction = TimeRestriction(
        earliest=pendulum.datetime(2024, 3, 9, tz="America/New_York"),
        latest=pendulum.datetime(2024, 3, 11, tz="America/New_York"),
        catchup=True,
    )
    last: DataInterval | None = None
    days, hours = [], []
    while info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction):
        context = {
            "params": {},
            "logical_date": info.logical_date,
            "data_interval_start": info.data_interval.start,
        }
        days += resolve_partitions(context, "America/New_York")
        hours.append((info.data_interval.end - info.data_interval.start).total_seconds() / 3600)
        last = info.data_interval
    assert days == ["2024-03-09", "2024-03-10", "2024-03-11"]
    assert hours == [24, 23, 24]  # the DST change is a 23-hour local day


def test_a_scheduled_labels_run_lands_the_day_whose_labels_became_final():
    start = pendulum.datetime(2024, 3, 10, tz="UTC")
    scheduled = {"params": {}, "logical_date": start, "dag_run": SimpleNamespace(run_type="scheduled")}
    assert resolve_partitions(scheduled, "UTC", lag_days=3) == ["2024-03-07"]
    typed = {**scheduled, "dag_run": SimpleNamespace(run_type="manual")}  # the typed date is the day
    assert resolve_partitions(typed, "UTC", lag_days=3) == ["2024-03-10"]
    param = {**scheduled, "params": {"partition_date": "2024-03-01"}}
    assert resolve_partitions(param, "UTC", lag_days=3) == ["2024-03-01"]
