from __future__ import annotations

import math
from datetime import date

import numpy as np
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
