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
        (lambda r: r.update(name="other"), "name", "must match the file name"),
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
