from __future__ import annotations

import pytest
import yaml

from cormorant.config import PROJECT_ROOT
from cormorant.spec import SpecError, discover_specs, parse_spec

EXAMPLE_SPEC = PROJECT_ROOT / "include" / "specs" / "churn.yaml"


def _example() -> dict:
    return yaml.safe_load(EXAMPLE_SPEC.read_text())


def _parse(raw: dict, path: str = "churn.yaml"):
    return parse_spec(yaml.safe_dump(raw), path)


def test_example_spec_parses_with_its_columns(example_spec):
    assert example_spec.name == "churn"
    assert example_spec.is_classification
    assert example_spec.metric_higher_is_better
    assert example_spec.required_columns[:2] == ["customer_id", "event_ts"]
    assert example_spec.required_columns[-1] == "churned"
    assert set(example_spec.training.search_space) == {"linear", "xgboost", "mlp"}


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda r: r.update(colour="blue"), "colour", "unknown field"),
        (lambda r: r["target"].pop("task"), "target.task", "required field is missing"),
        (lambda r: r["training"].update(metric="rmse"), "<root>", "does not fit task binary_classification"),
        (
            lambda r: r["training"]["search_space"].update(forest={}),
            "training.search_space",
            "unknown model family",
        ),
        (
            lambda r: r["training"]["search_space"]["xgboost"].update(depth=[3]),
            "training.search_space",
            "unknown parameter 'depth'",
        ),
        (
            lambda r: r["training"]["search_space"]["xgboost"].update(max_depth=["deep"]),
            "training.search_space",
            "is not an int",
        ),
        (
            lambda r: r["source"].update(table="users; DROP TABLE users"),
            "source.table",
            "not a plain SQL identifier",
        ),
        (lambda r: r["schedules"].update(train="nightly"), "schedules.train", "five-field cron"),
        (lambda r: r["schedules"].update(train="61 2 * * *"), "schedules.train", "five-field cron"),
        (lambda r: r.update(start_date="2024-13-45"), "start_date", "is not a date; expected YYYY-MM-DD"),
        (lambda r: r.update(start_date="2024-01-01T05:00"), "start_date", "is not a date"),
        (lambda r: r.update(name="other"), "name", "must match the file name"),
        (
            lambda r: r.update(promotion={"slices": ["segment", "churned"]}),
            "<root>",
            "promotion.slices names columns the spec does not read: ['churned', 'segment']",
        ),
        (lambda r: r.update(promotion={"max_ece": 2}), "promotion.max_ece", "less than or equal to 1"),
    ],
)
def test_malformed_spec_names_file_and_field(mutate, field, words):
    raw = _example()
    mutate(raw)
    with pytest.raises(SpecError) as info:
        _parse(raw, "/specs/churn.yaml")
    assert info.value.path == "/specs/churn.yaml"
    assert info.value.field == field
    assert words in str(info.value)
    assert "/specs/churn.yaml" in str(info.value)


def test_discover_returns_errors_beside_good_specs(tmp_path):
    (tmp_path / "churn.yaml").write_text(EXAMPLE_SPEC.read_text())
    (tmp_path / "broken.yaml").write_text("name: broken\nsource: [unclosed\n")
    found = discover_specs(tmp_path)
    assert found[tmp_path / "churn.yaml"].name == "churn"
    assert isinstance(found[tmp_path / "broken.yaml"], SpecError)
    assert found[tmp_path / "broken.yaml"].field == "<yaml>"


def test_every_problem_is_listed_with_a_did_you_mean_for_unknown_fields():
    """A required-field typo used to say 'required field is missing (and 1 more problem(s))', hiding
    the misspelled field that caused it."""
    raw = _example()
    raw["source"]["partiton_column"] = raw["source"].pop("partition_column")
    raw["training"]["windw_days"] = 3
    raw["validation"]["columns"]["tenure_months"]["maxx"] = 5
    raw["trainng"] = {}
    with pytest.raises(SpecError) as info:
        _parse(raw, "/specs/churn.yaml")
    problems = dict(info.value.problems)
    assert problems["source.partition_column"] == "required field is missing"
    assert problems["source.partiton_column"] == "unknown field; did you mean 'partition_column'?"
    assert problems["training.windw_days"] == "unknown field; did you mean 'window_days'?"
    assert problems["validation.columns.tenure_months.maxx"] == "unknown field; did you mean 'max'?"
    assert problems["trainng"] == "unknown field; did you mean 'training'?"
    message = str(info.value)
    assert message.startswith("model spec /specs/churn.yaml: 5 problems:")
    assert "field 'source.partiton_column': unknown field; did you mean 'partition_column'?" in message


def test_a_mistyped_field_says_what_was_expected():
    raw = _example()
    raw["training"]["window_days"] = "a week"
    raw["validation"]["min_rows"] = -1
    with pytest.raises(SpecError) as info:
        _parse(raw, "/specs/churn.yaml")
    problems = dict(info.value.problems)
    assert "valid integer" in problems["training.window_days"]
    assert "greater than or equal to 0" in problems["validation.min_rows"]


@pytest.mark.parametrize(
    ("written", "found"),
    [("2024-02-30", "'start_date': '2024-02-30' is not a date"), ("2024-03-01", None)],
)
def test_an_unquoted_start_date_is_checked_as_the_field_it_is(written, found):
    """YAML reads an unquoted 2024-02-30 as a timestamp, and PyYAML's conversion of it raised a bare
    ValueError naming no file and no field."""
    text = EXAMPLE_SPEC.read_text().replace('start_date: "2024-01-01"', f"start_date: {written}")
    if found is None:
        assert parse_spec(text, "churn.yaml").start_date == written
    else:
        with pytest.raises(SpecError, match=found):
            parse_spec(text, "churn.yaml")
