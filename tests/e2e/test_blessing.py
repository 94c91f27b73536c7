"""The blessing before the champion alias moves, on real trainer runs, a real MLflow registry (the
embedded SQLite store) and a real lake: every check recorded; each kind of failure names itself and
leaves the alias where it was."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from cormorant.blessing import blessing_prefix, calibration, infra_validation
from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import load_spec
from cormorant.sweep import plan_sweep, run_trials_locally
from cormorant.synthetic import land_days

pytestmark = pytest.mark.e2e
DAYS = [(date(2024, 3, 1) + timedelta(days=i)).isoformat() for i in range(4)]
NAME = "churnbless"


def _spec_file(folder: Path, promotion: dict | None = None) -> Path:
    """The example spec under its own name (its own registered model and lake datasets), with
    ``promotion`` rules."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "include/specs/churn.yaml").read_text())
    raw["name"] = NAME
    if promotion:
        raw["promotion"] = promotion
    digest = hashlib.sha256(json.dumps(promotion, sort_keys=True).encode()).hexdigest()[:8]
    path = folder / digest / f"{NAME}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two trials over the four days (a linear model and a crippled one), as the trial tasks leave
    them, side by side on an MLflow store of this module's that does not exist yet (two trainers used
    to race to create its tables); no version registered yet."""
    folder = tmp_path_factory.mktemp("blessing")
    env = pytest.MonkeyPatch()
    env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")
    env.setenv("CORMORANT_MLFLOW_ARTIFACT_URI", (folder / "artifacts").as_uri())
    path = _spec_file(folder)
    spec, settings = load_spec(path), Settings.from_env()
    lake = Lake(settings.lake_uri)
    land_days(spec, lake, DAYS)
    plan = plan_sweep(
        spec, lake, DAYS[-1], window_days=len(DAYS), families=["linear"], max_trials_per_family=2
    )
    # C=1.0 learns; C=1e-6 is regularised to a near-constant score: a challenger worse on every slice
    plan["trials"] = [
        {**plan["trials"][0], "params": {"C": 1.0}},
        {**plan["trials"][1], "params": {"C": 1e-6}},
    ]
    results = run_trials_locally(path, plan["trials"], parallel=2)
    assert [r["status"] for r in results] == ["ok", "ok"], results
    plan["trial_ids"] = [t["trial_id"] for t in plan["trials"]]
    yield {"folder": folder, "plan": plan, "results": {r["trial_id"]: r for r in results}, "lake": lake}
    env.undo()


def _client():
    from mlflow import MlflowClient

    from cormorant.tracking import configure

    configure(Settings.from_env())
    return MlflowClient()


def _champion(client):
    from cormorant.registry import current_champion

    found = current_champion(client, f"cormorant.{NAME}")
    return None if found is None else str(found.version)


def _register(trained, trial_id, promotion=None):
    from cormorant.registry import register_and_promote

    spec = load_spec(_spec_file(trained["folder"], promotion))
    return register_and_promote(
        spec, Settings.from_env(), trained["lake"], trained["plan"], [trained["results"][trial_id]]
    )


def test_a_failed_blessing_registers_the_version_but_moves_no_alias(trained):
    client = _client()
    summary = _register(trained, "linear-0", {"max_ece": 0.0001})  # no classifier is that well calibrated
    assert summary["promoted"] is False and _champion(client) is None
    assert summary["reason"].startswith("blessing failed")
    assert (
        "expected calibration error" in summary["reason"] and "promotion.max_ece 0.0001" in summary["reason"]
    )
    version = client.get_model_version(f"cormorant.{NAME}", summary["version"])
    assert version.tags["cormorant.blessing"].startswith("failed: expected calibration error")
    document = trained["lake"].read_json(f"{blessing_prefix(NAME, summary['version'])}/blessing.json")
    assert document["passed"] is False and document["checks"]["infra"]["passed"] is True


def test_a_blessed_version_becomes_champion_with_every_check_recorded(trained):
    client = _client()
    summary = _register(trained, "linear-0")  # the same trained model: the same version, now blessed
    assert summary["promoted"] is True and _champion(client) == summary["version"]
    document = trained["lake"].read_json(f"{blessing_prefix(NAME, summary['version'])}/blessing.json")
    assert document["passed"] is True and document["failures"] == []
    infra = document["checks"]["infra"]
    assert infra["rows"] == document["holdout_rows"] > 0
    assert infra["max_abs_diff"] <= 1e-5 and infra["ms_per_10k_rows"] > 0
    slices = {(s["column"], s["value"]) for s in document["checks"]["slices"]["slices"]}
    assert {("contract_type", v) for v in ("monthly", "annual", "two_year")} <= slices
    assert {c for c, _ in slices} == {"contract_type", "region", "payment_method"}
    calib = document["checks"]["calibration"]
    assert 0 < calib["brier"] < 0.25 and 0 <= calib["ece"] < 0.2 and calib["curve"]
    assert trained["lake"].path(f"{blessing_prefix(NAME, summary['version'])}/reliability.png").exists()
    # kept with the version: its run's artifact
    import mlflow

    version = client.get_model_version(f"cormorant.{NAME}", summary["version"])
    kept = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/blessing/v{summary['version']}.json")
    assert kept["passed"] is True
    # a linear model's information criteria sit beside its CV scores (k = 17 coefficients + intercept)
    metrics = client.get_run(version.run_id).data.metrics
    n = metrics["train_rows"]
    assert metrics["bic"] - metrics["aic"] == pytest.approx(18 * np.log(n) - 2 * 18)


def test_a_challenger_that_regresses_on_a_slice_is_refused_by_name(trained):
    client = _client()
    champion = _champion(client)
    assert champion is not None
    rule = {"max_slice_regression": 0.05, "min_slice_rows": 50}
    summary = _register(trained, "linear-1", rule)
    assert summary["promoted"] is False and _champion(client) == champion
    document = trained["lake"].read_json(f"{blessing_prefix(NAME, summary['version'])}/blessing.json")
    failures = [f for f in document["failures"] if f.startswith("slice ")]
    assert failures, document["failures"]
    assert "promotion.max_slice_regression 0.05" in failures[0] and "vs champion" in failures[0]
    assert document["checks"]["slices"]["passed"] is False


def test_infra_validation_names_an_artifact_that_does_not_load_or_scores_differently(trained, tmp_path):
    from cormorant.features import onnx_feed
    from cormorant.trainer import load_frames

    spec = load_spec(_spec_file(trained["folder"]))
    holdout = load_frames(spec, trained["lake"], trained["plan"]["holdout_partitions"])
    feed = onnx_feed(holdout, spec)
    model_uri = trained["results"]["linear-0"]["model_uri"]
    differs = infra_validation(model_uri, feed, np.zeros(len(holdout)))  # not what the model scores
    assert differs["passed"] is False and "scores the holdout differently" in differs["failure"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    failed = infra_validation(broken.as_uri(), feed, np.zeros(len(holdout)))
    assert (
        failed["passed"] is False
        and "ONNX Runtime could not load or run the registered model" in failed["failure"]
    )


def test_calibration_of_known_scores():
    y = np.array([0, 0, 1, 1])
    perfect = calibration(y, np.array([0.0, 0.0, 1.0, 1.0]))
    assert perfect["brier"] == 0 and perfect["ece"] == 0
    halves = calibration(y, np.array([0.5, 0.5, 0.5, 0.5]))
    assert halves["brier"] == pytest.approx(0.25) and halves["ece"] == pytest.approx(0.0)
    off = calibration(np.array([0, 0, 0, 0]), np.array([0.9, 0.9, 0.9, 0.9]))
    assert off["ece"] == pytest.approx(0.9) and off["curve"] == [
        {"bin": 9, "rows": 4, "mean_score": pytest.approx(0.9), "observed_rate": 0.0}
    ]
