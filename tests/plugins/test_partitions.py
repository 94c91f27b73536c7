from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

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
    assert resolve_partitions(nightly, "UTC") == ["2024-03-10"]  # 05:00 UTC: not a UTC midnight


# A zone west and a zone east of UTC, each on a normal day and on both of its DST changes, and a zone
# whose spring change skips midnight itself (its day starts at 01:00).
ZONE_DAYS = [
    ("America/New_York", "2024-03-05"),
    ("America/New_York", "2024-03-10"),  # 23 hours
    ("America/New_York", "2024-11-03"),  # 25 hours
    ("Europe/Berlin", "2024-03-05"),
    ("Europe/Berlin", "2024-03-31"),
    ("Europe/Berlin", "2024-10-27"),
    ("Asia/Kolkata", "2024-03-05"),  # +05:30
    ("America/Santiago", "2024-09-08"),  # 00:00 does not exist: the day starts at 01:00
]


def _day_start(day: str, zone: str):
    """The first instant of ``day`` in ``zone`` (through UTC: where midnight does not exist, 00:00 at the
    offset before the change is the instant clocks jump to 01:00)."""
    local = datetime.combine(date.fromisoformat(day), time(0), ZoneInfo(zone))
    return pendulum.instance(local.astimezone(UTC)).in_timezone(zone)


def _manual(logical, interval_start):
    return {
        "params": {},
        "logical_date": logical,
        "data_interval_start": interval_start,
        "dag_run": SimpleNamespace(run_type="manual"),
    }


@pytest.mark.parametrize(("zone", "day"), ZONE_DAYS)
def test_a_typed_date_is_that_local_day_in_every_time_zone(zone, day):
    """`airflow dags test flights__ingest 2013-03-05` on a New York spec committed 2013-03-03: the typed
    date arrives as a UTC midnight, which is no New York midnight, and the run fell back to the last
    complete local day of its data interval. REST and the UI's form post the same UTC midnight."""
    from airflow.timetables.interval import CronDataIntervalTimetable

    typed = pendulum.parse(day, tz="UTC")
    # the data interval Airflow gives a manual run at that moment (the last complete local day before it)
    interval = CronDataIntervalTimetable("0 0 * * *", timezone=zone).infer_manual_data_interval(
        run_after=typed
    )
    assert interval.start.in_timezone(zone).date().isoformat() != day  # what it used to process
    assert resolve_partitions(_manual(typed, interval.start), zone) == [day]
    # the same date posted with the zone's offset (its local day's first instant), and through every
    # stage's resolver, the labels' included
    local_start = _day_start(day, zone)
    assert resolve_partitions(_manual(local_start, interval.start), zone) == [day]
    assert resolve_partitions(_manual(typed, interval.start), zone, lag_days=2) == [day]


@pytest.mark.parametrize(("zone", "day"), ZONE_DAYS)
def test_nightly_and_backfill_runs_in_a_time_zone_process_their_own_local_day(zone, day):
    """A scheduled or backfill run whose logical date is a UTC midnight is not read as a typed date: a
    nightly cron of 19:00 in New York (00:00 UTC in winter) processes the day its interval starts."""
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.interval import CronDataIntervalTimetable

    for cron in ("0 0 * * *", "0 19 * * *", "30 1 * * *"):
        timetable = CronDataIntervalTimetable(cron, timezone=zone)
        start = _day_start(day, zone)
        restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
        info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
        for run_type in ("scheduled", "backfill"):
            context = {
                "params": {},
                "logical_date": info.logical_date,
                "data_interval_start": info.data_interval.start,
                "dag_run": SimpleNamespace(run_type=run_type),
            }
            assert resolve_partitions(context, zone) == [day], (cron, run_type)


def test_a_run_triggered_now_in_a_time_zone_takes_the_last_complete_local_day_and_says_so(caplog):
    now = pendulum.datetime(2024, 3, 10, 13, 37, tz="UTC")  # 09:37 in New York
    interval_start = pendulum.datetime(2024, 3, 9, tz="America/New_York")
    with caplog.at_level("INFO", logger="cormorant_provider.partitions"):
        assert resolve_partitions(_manual(now, interval_start), "America/New_York") == ["2024-03-09"]
    assert "no day's start in America/New_York" in caplog.text and "2024-03-09" in caplog.text


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


@pytest.mark.parametrize(
    ("zone", "first", "last"),
    [("America/New_York", "2024-03-09", "2024-03-11"), ("Europe/Berlin", "2024-10-26", "2024-10-28")],
)
def test_a_backfill_between_local_midnights_covers_the_local_days_typed(zone, first, last):
    """Airflow creates a backfill's runs at the timetable's ticks between its bounds, taken as instants:
    UTC midnights drop New York's last day and Berlin's first; the local midnights that
    scripts/cormorant_trigger.py --backfill sends cover exactly the days typed."""
    import sys

    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.interval import CronDataIntervalTimetable

    from cormorant.config import PROJECT_ROOT

    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    from cormorant_trigger import local_midnights

    def days(start, end):
        timetable = CronDataIntervalTimetable("0 0 * * *", timezone=zone)
        restriction = TimeRestriction(earliest=start, latest=end, catchup=True)
        found, last_interval = [], None
        while info := timetable.next_dagrun_info(
            last_automated_data_interval=last_interval, restriction=restriction
        ):
            context = {
                "params": {},
                "logical_date": info.logical_date,
                "dag_run": SimpleNamespace(run_type="backfill"),
            }
            found += resolve_partitions({**context, "data_interval_start": info.data_interval.start}, zone)
            last_interval = info.data_interval
        return found

    typed = [first, (date.fromisoformat(first) + timedelta(days=1)).isoformat(), last]
    start, end = local_midnights(zone, first, last)
    assert days(pendulum.instance(start), pendulum.instance(end)) == typed
    at_utc = days(pendulum.parse(first, tz="UTC"), pendulum.parse(last, tz="UTC"))
    assert at_utc != typed and len(at_utc) == 2
