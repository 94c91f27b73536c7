"""The blessing before the champion alias moves, on real trainer runs, a real MLflow registry (the
embedded SQLite store) and a real lake: every check recorded; each kind of failure names itself and
leaves the alias where it was."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from cormorant.blessing import blessing_prefix, calibration, infra_validation
from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import load_spec
from cormorant.sweep import TrainerPool, plan_sweep, run_trials_locally
from cormorant.synthetic import land_days, rows_for_day

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
def folder(tmp_path_factory):
    """This module's folder, and an MLflow store in it that does not exist yet."""
    folder = tmp_path_factory.mktemp("blessing")
    env = pytest.MonkeyPatch()
    env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")
    env.setenv("CORMORANT_MLFLOW_ARTIFACT_URI", (folder / "artifacts").as_uri())
    yield folder
    env.undo()


@pytest.fixture(scope="module")
def trainers(folder):
    """Two warm trainer processes (what ``cormorant run`` starts), on this module's store."""
    with TrainerPool(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def trained(folder, trainers):
    """A sweep's trials over the four days (among them a crippled linear model), as the trial tasks leave
    them, side by side on the warm trainers and the store that did not exist yet (two trainers used
    to race to create its tables); no version registered yet."""
    path = _spec_file(folder)
    spec, settings = load_spec(path), Settings.from_env()
    lake = Lake(settings.lake_uri)
    land_days(spec, lake, DAYS)
    plan = plan_sweep(spec, lake, DAYS[-1], window_days=len(DAYS), max_trials_per_family=2)
    # linear C=1.0 learns; C=1e-6 is regularised to a near-constant score: a challenger worse on every
    # slice; one XGBoost and one MLP trial besides
    linear = [t for t in plan["trials"] if t["family"] == "linear"]
    linear[0]["params"], linear[1]["params"] = {"C": 1.0}, {"C": 1e-6}
    results = run_trials_locally(path, plan["trials"], parallel=2, pool=trainers)
    ok = sorted(r["trial_id"] for r in results if r["status"] == "ok")
    assert ok == ["linear-0", "linear-1", "mlp-0", "xgboost-0"], results
    plan["trial_ids"] = [t["trial_id"] for t in plan["trials"]]
    return {
        "folder": folder,
        "path": path,
        "plan": plan,
        "results": {r["trial_id"]: r for r in results},
        "lake": lake,
    }


def test_warm_trainers_serve_sweep_after_sweep_and_one_that_died_is_replaced(trainers, trained):
    """The pool's processes ran the sweep's trials and are still up for the next sweep (no start-up
    again); a worker that died has its share run by a one-off trainer process, and nothing is lost."""
    pids = [w.pid for w in trainers.workers]
    assert all(w.poll() is None for w in trainers.workers)
    linear = next(t for t in trained["plan"]["trials"] if t["family"] == "linear")
    trial = {**linear, "sweep_key": "warm-pool-check", "cache_key": "warm-pool-check"}  # not the sweep's
    again = [{**trial, "trial_id": f"again-{i}"} for i in range(2)]
    assert {r["status"] for r in run_trials_locally(trained["path"], again, parallel=2, pool=trainers)} == {
        "ok"
    }
    assert [w.pid for w in trainers.workers] == pids and all(w.poll() is None for w in trainers.workers)
    trainers.workers[0].kill()
    trainers.workers[0].wait()
    after = [{**trial, "trial_id": f"after-{i}"} for i in range(2)]
    results = run_trials_locally(trained["path"], after, parallel=2, pool=trainers)
    assert sorted((r["trial_id"], r["status"]) for r in results) == [("after-0", "ok"), ("after-1", "ok")]
    assert trainers.workers[1].poll() is None


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


def _prepared(trained) -> dict:
    """What ``cormorant run`` learns from preparing the store before it starts (in a process of its
    own, as it runs it): whether the spec has a champion to score the first days with."""
    done = subprocess.run(
        [sys.executable, "-m", "cormorant.tracking", str(trained["path"])], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_failed_blessing_registers_the_version_but_moves_no_alias(trained):
    client = _client()
    summary = _register(trained, "linear-0", {"max_ece": 0.0001})  # no classifier is that well calibrated
    assert summary["promoted"] is False and _champion(client) is None
    assert _prepared(trained) == {"champion": False}
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
    assert _prepared(trained) == {"champion": True}
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


def test_every_family_records_what_drives_it(trained, example_spec):
    import mlflow

    features = set(example_spec.feature_columns)
    for trial_id, result in trained["results"].items():
        importance = mlflow.artifacts.load_dict(f"runs:/{result['run_id']}/importance.json")
        assert set(importance["permutation"]) == features, trial_id
        assert importance["rows"] == rows_for_day(date.fromisoformat(DAYS[-1]))  # the whole holdout day
        if trial_id == "linear-0":  # a model that learnt: shuffling its strongest feature costs AUC
            assert max(v["mean"] for v in importance["permutation"].values()) > 0.01
        if result["family"] == "xgboost":
            assert set(importance["gain"]) == set(importance["shap_mean_abs"]) <= features
            assert sum(importance["shap_mean_abs"].values()) > 0


def test_the_card_says_why_a_version_is_champion_and_the_cli_prints_it(trained, capsys):
    from cormorant.card import card_key
    from cormorant_provider import cli

    client = _client()
    version = _champion(client)
    text = trained["lake"].path(card_key(NAME, version)).read_text()
    assert text.startswith(f"# cormorant.{NAME} v{version}: linear")
    assert "Status: **champion**. Promotion: promoted: no champion yet" in text
    assert "- Blessing: passed." in text and "Infra validation: the registered artifact" in text
    assert "one standard error rule" in text
    for day in trained["plan"]["train_partitions"]:
        assert f"| {day} | `" in text
    for trial_id in ("linear-0 (registered)", "linear-1", "mlp-0", "xgboost-0"):
        assert f"| {trial_id} |" in text
    assert "## What drives it" in text and "| contract_type |" in text
    described = client.get_model_version(f"cormorant.{NAME}", version).description
    assert described.startswith("linear trained on") and f"model_card/v{version}.md" in described
    path = _spec_file(trained["folder"])
    assert cli.main(["card", str(path)]) == 0  # the champion's card, built afresh
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == text.splitlines()[0] and "## The sweep" in printed
    assert cli.main(["card", str(path), "--version", "99"]) == 2
    assert f"cormorant.{NAME} has no version '99'" in capsys.readouterr().err


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


def test_two_trainings_finishing_at_once_do_not_both_become_champion(trained, tmp_path):
    """Two processes register and promote two challengers that both beat the champion, at once.
    Without the lake lock both compared with that champion and both took the alias (the last write
    won, whichever was better); now the second decides against the first's outcome."""
    from support import register_at_once

    client = _client()
    name = f"cormorant.{NAME}"
    weak = _register(trained, "mlp-0")  # registered, worse than the champion (linear-0)
    assert not weak["promoted"] and weak["holdout_metric"] < weak["champion_holdout_metric"]
    client.set_registered_model_alias(name, "champion", weak["version"])  # now the champion to beat
    results = [trained["results"][t] for t in ("xgboost-0", "linear-0")]
    summaries = register_at_once(_spec_file(trained["folder"]), trained["plan"], results, tmp_path)
    assert all(s["holdout_metric"] > weak["holdout_metric"] for s in summaries), summaries  # both beat it
    promoted = [s for s in summaries if s["promoted"]]
    assert promoted, summaries
    if len(promoted) == 2:  # then the second compared with the first, not with the weak champion
        compared = sorted(s["champion_holdout_metric"] for s in promoted)
        assert compared[0] != compared[1], summaries
    best = max(summaries, key=lambda s: s["holdout_metric"])
    assert _champion(client) == best["version"], summaries


@pytest.mark.parametrize(
    ("trial_id", "method"),
    [("xgboost-0", "exact"), ("xgboost-0", "approximate"), ("linear-0", "exact"), ("mlp-0", "exact")],
)
def test_reason_codes_name_the_features_that_add_up_to_each_score(trained, trial_id, method):
    """``predict.reason_codes: 3``: each prediction names the three features that push its score most;
    for XGBoost and the linear family every feature's contribution plus the bias is the served score's
    margin, row by row; an MLP's reason columns are null and the predictions say why."""
    import mlflow.onnx

    from cormorant.explain import Explainer, reason_columns, with_features_output
    from cormorant.export import onnx_session
    from cormorant.features import arrow_feed
    from cormorant.inference import predict_partition, predictions_dataset
    from cormorant.spec import PredictSpec
    from cormorant.warehouse import raw_dataset

    spec = load_spec(_spec_file(trained["folder"])).model_copy(
        update={"predict": PredictSpec(reason_codes=3, reason_method=method)}
    )
    result, lake, day = trained["results"][trial_id], trained["lake"], DAYS[-1]
    model = {
        "name": f"cormorant.{NAME}",
        "version": "0",
        "run_id": result["run_id"],
        "uri": result["model_uri"],
    }
    manifest = predict_partition(spec, lake, day, model)
    predictions = lake.read(predictions_dataset(spec), day).to_pandas()
    assert predictions.columns[-6:].tolist() == reason_columns(3)
    assert len(predictions) == manifest.row_count == rows_for_day(date.fromisoformat(day))
    reasons = predictions[reason_columns(3)]
    if result["family"] == "mlp":
        assert reasons.isna().all().all()
        assert "no per-row explainer" in manifest.source["reason_codes"]["unavailable"]
        return
    expected = {"xgboost": "XGBoost pred_contribs (TreeSHAP)", "linear": "coefficient x (value"}
    if method == "approximate":
        expected["xgboost"] = "XGBoost pred_contribs with approx_contribs"
    assert manifest.source["reason_codes"]["method"].startswith(expected[result["family"]])
    assert reasons.notna().all().all()
    features = set(spec.feature_columns)
    named = predictions[["reason_1", "reason_2", "reason_3"]].to_numpy()
    assert set(named.ravel()) <= features and all(len(set(row)) == 3 for row in named)
    sizes = predictions[[f"reason_{i}_contribution" for i in (1, 2, 3)]].abs().to_numpy()
    assert (sizes[:, 0] >= sizes[:, 1]).all() and (sizes[:, 1] >= sizes[:, 2]).all()
    # exact: every feature's contribution + the bias is the margin of the score that was served
    explainer = Explainer.load(result["run_id"])
    onnx_model = mlflow.onnx.load_model(result["model_uri"])
    width = len(explainer.document["slot_features"])
    session = onnx_session(with_features_output(onnx_model, explainer.features_tensor, width))
    table = lake.read(raw_dataset(spec), day)
    scores, X = session.run(["score", explainer.features_tensor], arrow_feed(table, spec))
    contributions, bias = explainer.contributions(X, approximate=method == "approximate")
    margin = contributions.sum(axis=1) + bias
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), predictions["score"], atol=1e-5)
    np.testing.assert_allclose(scores.reshape(-1), predictions["score"], atol=1e-6)
    top = np.abs(contributions).max(axis=1)
    np.testing.assert_allclose(sizes[:, 0], top, rtol=1e-9)


@pytest.mark.parametrize("trial_id", ["xgboost-0", "mlp-0"])
def test_every_family_gets_a_card_with_what_drives_it(trained, trial_id):
    from cormorant.card import card_key

    family = trained["results"][trial_id]["family"]
    summary = _register(trained, trial_id)
    text = trained["lake"].path(card_key(NAME, summary["version"])).read_text()
    assert text.startswith(f"# cormorant.{NAME} v{summary['version']}: {family}")
    assert "## What drives it" in text and "| contract_type |" in text
    assert ("mean abs SHAP" in text) is (family == "xgboost")
    assert f"| {trial_id} (registered) |" in text


def test_an_approver_reads_the_blessing_and_the_drift_of_the_training_data(trained):
    """What the approval step shows (cormorant.approval.approval_request): the blessing's checks, the
    weakest slices against the champion, and the drift DAG's verdicts on the days the version learnt
    from."""
    from cormorant.approval import approval_request
    from cormorant.drift import drift_report_prefix

    lake, day = trained["lake"], trained["plan"]["train_partitions"][0]
    lake.write_json(
        f"{drift_report_prefix(load_spec(_spec_file(trained['folder'])), day)}/report.json",
        {"verdict": "drifted", "drifted_features": ["tenure_months"]},
    )
    summary = _register(trained, "linear-1")  # the crippled model against the champion: blessed, refused
    drift = summary["training_drift"]
    assert drift["drifted_days"] == [day] and drift["days"][day]["drifted_features"] == ["tenure_months"]
    assert {r["verdict"] for d, r in drift["days"].items() if d != day} == {"not checked"}
    weakest = summary["blessing"]["weakest_slices"]
    assert len(weakest) == 3 and all(r["challenger"] < r["champion"] for r in weakest)
    _, body = approval_request(summary)
    assert f"drifted: {day}" in body and f"1 of {len(drift['days'])} day(s) checked" in body
    assert "Infra validation: the registered artifact scores as trained" in body
    assert "Calibration: Brier" in body and f"- Slice {weakest[0]['column']}={weakest[0]['value']}" in body
    assert summary["blessing"]["uri"] in body


def test_the_card_shows_the_spec_fingerprint_the_version_was_trained_with(trained):
    """`cormorant card` showed the spec file's fingerprint as it is now as the version's lineage, while the
    version's own tag (and its stored card) named the one it was trained with."""
    from cormorant.card import model_card, render_markdown

    client = _client()
    version = _champion(client)
    trained_with = client.get_model_version(f"cormorant.{NAME}", version).tags["cormorant.spec_fingerprint"]
    spec = load_spec(_spec_file(trained["folder"]))
    edited = type(spec).model_validate(
        {**spec.model_dump(by_alias=True), "description": f"{spec.description} (edited after training)"}
    )
    assert edited.fingerprint != trained_with
    card = model_card(edited, Settings.from_env(), trained["lake"], version)
    assert card["spec"]["fingerprint"] == trained_with
    text = render_markdown(card)
    assert (
        f"- Spec fingerprint: {trained_with} (the spec file has changed since: now {edited.fingerprint})"
        in text
    )
    unchanged = {**card, "spec": {**card["spec"], "current_fingerprint": trained_with}}
    assert "has changed since" not in render_markdown(unchanged)
