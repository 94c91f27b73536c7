"""`cormorant init`'s draft: keys beyond `id`/`*_id`, and labels in a table of their own."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cormorant.spec import parse_spec
from cormorant.spec_init import LabelDraft, draft_spec

FLIGHTS = pa.schema(
    [
        ("flight_key", pa.int64()),
        ("sched_dep", pa.timestamp("us", tz="UTC")),
        ("carrier", pa.string()),
        ("distance", pa.float64()),
        ("dep_hour", pa.int64()),
    ]
)
OUTCOMES = pa.schema(
    [("flight_key", pa.int64()), ("sched_dep", pa.timestamp("us")), ("arr_delay", pa.float64())]
)


def _draft(**kwargs):
    base = {"table": "flights", "schema": FLIGHTS, "target": "arr_delay", "conn_id": "warehouse"}
    return draft_spec("flights", **{**base, **kwargs})


def test_a_key_column_is_not_a_feature():
    """A *_key column became a categorical or numeric feature."""
    schema = FLIGHTS.append(pa.field("arr_delay", pa.float64())).append(pa.field("tail_key", pa.string()))
    spec = parse_spec(_draft(schema=schema))
    assert spec.source.key_columns == ["flight_key", "tail_key"]
    assert "tail_key" not in spec.features.categorical and "flight_key" not in spec.features.numeric
    assert spec.labels_inline


def test_labels_in_their_own_table_are_read_there_with_their_lag():
    spec = parse_spec(_draft(labels=LabelDraft("flight_outcomes", OUTCOMES, after_days=2)))
    assert (spec.target.column, spec.target.task, spec.training.metric) == ("arr_delay", "regression", "rmse")
    assert spec.target.source.table == "flight_outcomes" and spec.target.source.partition_column is None
    assert spec.target.available_after_days == 2 and spec.source.key_columns == ["flight_key"]
    assert spec.features.numeric == ["distance", "dep_hour"] and spec.features.categorical == ["carrier"]


def test_a_label_table_with_its_own_timestamp_names_it():
    outcomes = pa.schema([("flight_key", pa.int64()), ("departed", pa.timestamp("us")), ("late", pa.int64())])
    spec = parse_spec(_draft(target="late", labels=LabelDraft("flight_outcomes", outcomes)))
    assert spec.target.source.partition_column == "departed" and spec.target.task == "binary_classification"


@pytest.mark.parametrize(
    ("labels", "target", "message"),
    [
        (
            pa.schema([("id", pa.int64()), ("arr_delay", pa.float64())]),
            "arr_delay",
            r"lacks the key column\(s\) \['flight_key'\]",
        ),
        (OUTCOMES, "late", "--target 'late' is not a column of flight_outcomes"),
        (
            pa.schema([("flight_key", pa.int64()), ("arr_delay", pa.float64())]),
            "arr_delay",
            "no 'sched_dep' column",
        ),
    ],
)
def test_a_label_table_that_cannot_be_joined_is_named(labels, target, message):
    with pytest.raises(ValueError, match=message):
        _draft(target=target, labels=LabelDraft("flight_outcomes", labels))


def test_labels_in_their_own_table_need_a_key():
    no_key = pa.schema([("sched_dep", pa.timestamp("us")), ("distance", pa.float64())])
    with pytest.raises(
        ValueError, match="no column of the feature table is named id, key, \\*_id or \\*_key"
    ):
        _draft(schema=no_key, labels=LabelDraft("flight_outcomes", OUTCOMES))
