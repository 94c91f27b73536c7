from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from cormorant.drift import (
    binned_fractions,
    build_reference,
    compare,
    psi,
    quantile_edges,
    render_html,
    render_png,
)
from cormorant.synthetic import generate_day


def test_psi_matches_a_hand_computed_value():
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)  # (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_psi_of_an_empty_bin_is_finite():
    assert math.isfinite(psi([0.5, 0.5], [1.0, 0.0]))


def test_bins_use_reference_quantiles_and_count_missing_values_apart():
    assert binned_fractions(np.array([1.0, 2.0, 3.0, np.nan]), [2.5]) == [0.5, 0.25, 0.25]
    assert quantile_edges(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), 2) == [2.5]


def test_ks_statistic_matches_a_hand_computed_value(example_spec):
    reference = {
        "rows": 4,
        "features": {},
        "score": {"kind": "numeric", "edges": [2.5], "fractions": [0.5, 0.5, 0.0], "sample": [1, 2, 3, 4]},
    }
    report = compare(
        reference,
        generate_day(date(2024, 3, 1))[:4],
        np.array([3.0, 4.0, 5.0, 6.0]),
        example_spec,
        partition="2024-03-01",
    )
    assert report["prediction"]["ks_statistic"] == pytest.approx(0.5)  # max |F_ref - F_cur| at x=2 and x=4


@pytest.fixture(scope="module")
def reference(example_spec):
    train = generate_day(date(2024, 3, 1))
    return build_reference(train, np.random.default_rng(0).random(len(train)), example_spec)


def test_same_distribution_is_stable(example_spec, reference):
    today = generate_day(date(2024, 3, 2))
    report = compare(
        reference, today, np.random.default_rng(1).random(len(today)), example_spec, partition="2024-03-02"
    )
    assert report["verdict"] == "stable"
    assert report["retrain"] is False
    assert all(s["psi"] < 0.1 for s in report["features"].values())


def test_shifted_distribution_drifts_and_names_the_features(example_spec, reference):
    today = generate_day(date(2024, 3, 2), drift=1.0)
    report = compare(
        reference, today, np.random.default_rng(1).random(len(today)), example_spec, partition="2024-03-02"
    )
    assert report["verdict"] == "drift"
    assert report["retrain"] is True
    assert {"monthly_charges", "support_calls", "contract_type"} <= set(report["drifted_features"])
    assert "region" not in report["drifted_features"]
    html = render_html(report)
    assert "monthly_charges" in html and "retraining signalled" in html
    assert render_png(report)[:8] == b"\x89PNG\r\n\x1a\n"


def _with_drift(spec, **drift):
    return spec.model_copy(update={"drift": spec.drift.model_copy(update=drift)})


def test_a_feature_constant_in_training_that_moves_to_another_constant_shows_a_shift(example_spec):
    """PSI over the reference's quantile bins used to be 0 here (every value in one bin either way)."""
    train = generate_day(date(2024, 3, 1)).assign(support_calls=5.0)
    reference = build_reference(train, np.full(len(train), 0.5), example_spec)
    today = generate_day(date(2024, 3, 2)).assign(support_calls=7.0)
    report = compare(reference, today, np.full(len(today), 0.5), example_spec, partition="2024-03-02")
    assert report["features"]["support_calls"]["psi"] > 1.0
    assert "support_calls" in report["drifted_features"]
    same = compare(reference, train, np.full(len(train), 0.5), example_spec, partition="2024-03-01")
    assert same["features"]["support_calls"]["psi"] == 0.0


def test_excluded_features_are_reported_but_not_counted(example_spec, reference):
    spec = _with_drift(example_spec, exclude=["monthly_charges", "support_calls", "contract_type"])
    today = generate_day(date(2024, 3, 2), drift=1.0)
    report = compare(reference, today, np.random.default_rng(1).random(len(today)), spec, partition="d")
    assert report["features"]["monthly_charges"]["drifted"] is True
    assert report["features"]["monthly_charges"]["excluded"] is True
    assert not {"monthly_charges", "support_calls", "contract_type"} & set(report["drifted_features"])
    assert "excluded" in render_html(report)


def test_thresholds_per_feature_and_for_the_prediction_override_the_spec_wide_ones(example_spec, reference):
    from cormorant.spec import DriftThresholds

    today = generate_day(date(2024, 3, 2), drift=1.0)
    scores = np.random.default_rng(1).random(len(today)) ** 4  # the scores moved too
    loose = DriftThresholds(psi_threshold=100.0, ks_pvalue_threshold=1e-300)
    spec = _with_drift(example_spec, features={"monthly_charges": loose}, prediction=loose)
    strict = compare(reference, today, scores, example_spec, partition="d")
    relaxed = compare(reference, today, scores, spec, partition="d")
    assert strict["features"]["monthly_charges"]["drifted"] and strict["prediction"]["drifted"]
    assert not relaxed["features"]["monthly_charges"]["drifted"]
    assert not relaxed["prediction"]["drifted"]
    assert relaxed["features"]["monthly_charges"]["thresholds"] == {"psi": 100.0, "ks_pvalue": 1e-300}
    assert relaxed["features"]["support_calls"]["thresholds"]["psi"] == example_spec.drift.psi_threshold


def test_new_categories_are_counted_and_shown_escaped(example_spec, reference):
    today = generate_day(date(2024, 3, 2))
    today.loc[:49, "region"] = "<script>mars</script>"
    report = compare(
        reference, today, np.random.default_rng(1).random(len(today)), example_spec, partition="d"
    )
    region = report["features"]["region"]
    assert region["new_categories"] == ["<script>mars</script>"]
    assert region["new_category_rows"] == 50
    assert region["new_category_fraction"] == pytest.approx(50 / len(today))
    html = render_html(report)
    assert "50 rows: &lt;script&gt;mars&lt;/script&gt;" in html and "<script>" not in html


def test_the_report_shows_each_drifted_distribution_against_the_reference(example_spec, reference):
    from cormorant.drift import render_distributions_png

    today = generate_day(date(2024, 3, 2), drift=1.0)
    report = compare(
        reference, today, np.random.default_rng(1).random(len(today)), example_spec, partition="d"
    )
    charges = report["features"]["monthly_charges"]["distribution"]
    assert len(charges["reference"]) == len(charges["current"]) == len(charges["edges"]) + 2
    assert sum(charges["current"]) == pytest.approx(1.0)
    assert report["features"]["contract_type"]["distribution"]["categories"][0] == "monthly"
    assert render_distributions_png(report)[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="distributions.png"' in render_html(report, distributions_name="distributions.png")
    stable = compare(
        reference,
        generate_day(date(2024, 3, 3)),
        np.random.default_rng(2).random(1200)[: len(generate_day(date(2024, 3, 3)))],
        example_spec,
        partition="d",
    )
    assert render_distributions_png(stable) is None


def test_drift_settings_must_name_features(example_spec):
    import yaml

    from cormorant.config import PROJECT_ROOT
    from cormorant.spec import SpecError, parse_spec

    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["drift"]["exclude"] = ["day_of_week"]
    raw["drift"]["features"] = {"monthly_charges": {"psi_treshold": 0.5}}
    with pytest.raises(SpecError) as info:
        parse_spec(yaml.safe_dump(raw), "churn.yaml")
    problems = dict(info.value.problems)
    assert (
        problems["drift.features.monthly_charges.psi_treshold"]
        == "unknown field; did you mean 'psi_threshold'?"
    )
    raw["drift"]["features"] = {}
    with pytest.raises(
        SpecError, match=r"drift.exclude names columns that are not features: \['day_of_week'\]"
    ):
        parse_spec(yaml.safe_dump(raw), "churn.yaml")


def test_streamed_numeric_drift_equals_scipy_on_the_whole_column():
    """Beyond scipy's exact-test size, the KS statistic comes from counts at the reference points; it
    must equal ks_2samp's on the whole column, ties and missing values included, batch by batch."""
    from scipy import stats

    from cormorant.drift import KS_EXACT_MAX, NumericDrift, binned_fractions, build_reference

    rng = np.random.default_rng(5)
    reference_values = rng.normal(0, 1, 20_000).round(2)  # rounded: many ties
    ref = build_reference(pd.DataFrame({"x": reference_values}), np.zeros(1), _one_numeric_spec(), seed=1)[
        "features"
    ]["x"]
    for size in (KS_EXACT_MAX // 2, 3 * KS_EXACT_MAX + 17):
        current = rng.normal(0.05, 1.1, size).round(2)
        current[::97] = np.nan
        state = NumericDrift(ref)
        for chunk in np.array_split(current, 7):
            state.add(chunk)
        got = state.result()
        expected = stats.ks_2samp(ref["sample"], current[~np.isnan(current)])
        assert got["ks_statistic"] == float(expected.statistic)
        assert got["ks_pvalue"] == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-300)
        assert got["distribution"]["current"] == binned_fractions(current, ref["edges"])


def _one_numeric_spec():
    import yaml

    from cormorant.config import PROJECT_ROOT
    from cormorant.spec import parse_spec

    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "churn.yaml").read_text())
    raw["features"] = {"numeric": ["x"], "categorical": []}
    raw["validation"]["columns"] = {}
    raw["drift"]["features"] = {}
    return parse_spec(yaml.safe_dump(raw), "churn.yaml")


def test_the_streamed_report_of_a_partition_is_the_whole_frame_report(example_spec, reference, lake):
    import pyarrow as pa

    from cormorant.drift import compare, stream_compare
    from cormorant.inference import predictions_dataset
    from cormorant.warehouse import conform, lake_schema, raw_dataset, spec_types

    frame = pd.concat([generate_day(date(2024, 3, d), drift=1.0) for d in range(1, 15)], ignore_index=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema = lake_schema(table.schema, spec_types(example_spec))
    lake.write_partition(
        raw_dataset(example_spec), "2024-03-01", [conform(b, schema) for b in table.to_batches()]
    )
    scores = np.random.default_rng(0).random(len(frame))
    lake.write_partition(
        predictions_dataset(example_spec), "2024-03-01", [pa.record_batch({"score": scores})]
    )
    whole = compare(reference, frame, scores, example_spec, partition="2024-03-01")
    streamed = stream_compare(reference, lake, example_spec, "2024-03-01", batch_size=3_000)
    assert len(frame) > 10_000 and streamed == whole


def test_bins_of_a_count_are_labelled_by_the_integers_they_hold():
    """A count's bins read "[2, 2)" and ">= 2" (quantile interpolation left 1.9999999999999998 beside
    2.0, and three significant digits could not tell them apart)."""
    from cormorant.drift import _bin_labels, binned_fractions, quantile_edges

    calls = np.random.default_rng(3).poisson(1.2, 5000).astype(float)
    edges = quantile_edges(calls, 10)
    assert all(e.is_integer() for e in edges) and edges == sorted(set(edges))
    labels = _bin_labels(edges)
    assert len(labels) == len(binned_fractions(calls, edges))
    assert labels[0] == f"<= {int(edges[0]) - 1}" and labels[-2] == f">= {int(edges[-1])}"
    assert _bin_labels([0.0, 1.0, 2.0, 5.0]) == ["<= -1", "0", "1", "2-4", ">= 5", "missing"]
    # what each integer label says it holds is what the bin counts
    fractions = binned_fractions(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 7.0]), [0.0, 1.0, 2.0, 5.0])
    assert fractions == pytest.approx([0, 1 / 6, 1 / 6, 3 / 6, 1 / 6, 0])


def test_close_edges_get_the_digits_that_tell_them_apart():
    from cormorant.drift import _bin_labels

    labels = _bin_labels([1.0001, 1.0004, 2.5])
    assert labels[1] == "[1.0001, 1.0004)" and len(set(labels)) == len(labels)
    assert _bin_labels([0.125, 2.5]) == ["< 0.125", "[0.125, 2.5)", ">= 2.5", "missing"]
