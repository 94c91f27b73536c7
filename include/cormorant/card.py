"""A model card for every registered version: why is this model here, and what is it?

Built from what the pipeline recorded, never typed by hand: the spec; the data window with each
partition's content hash; the sweep (every trial's CV score and status) and the selection rule's
decision; the holdout metric and the promotion decision; the blessing (infra validation, slices,
calibration); feature importance; the Airflow run that trained it. Kept as Markdown in the lake
(``<spec>/reports/cards/v<N>.md``) and on the version's MLflow run (``model_card/v<N>.md``), with a
one-paragraph summary as the MLflow model version's description. ``cormorant card SPEC`` prints it.
"""

from __future__ import annotations

from typing import Any

from cormorant.config import Settings
from cormorant.lake import Lake
from cormorant.spec import ModelSpec


def card_key(spec_name: str, version: str) -> str:
    return f"{spec_name}/reports/cards/v{version}.md"


def _load(uri: str) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_dict(uri)
    except (MlflowException, OSError):
        return None


def model_card(spec: ModelSpec, settings: Settings, lake: Lake, version: str | None = None) -> dict[str, Any]:
    """The card's facts for ``version`` (default: the champion, else the latest version)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from cormorant.blessing import blessing_prefix
    from cormorant.registry import current_champion
    from cormorant.tracking import configure

    configure(settings)
    client = MlflowClient()
    name = spec.registered_model_name
    champion = current_champion(client, name)
    if version is None:
        if champion is not None:
            version = str(champion.version)
        else:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise LookupError(f"spec {spec.name!r}: no version of {name} is registered yet")
            version = str(max(int(v.version) for v in versions))
    try:
        found = client.get_model_version(name, version)
    except MlflowException as exc:
        raise LookupError(f"spec {spec.name!r}: {name} has no version {version!r}") from exc
    run = client.get_run(found.run_id)
    tags = found.tags or {}
    sweep_key = tags.get("cormorant.sweep_key") or run.data.tags.get("cormorant.sweep_key", "")
    trials = client.search_runs(
        [run.info.experiment_id],
        f"tags.`cormorant.sweep_key` = '{sweep_key}' and tags.`cormorant.trial_id` != ''",
    )
    sweeps = client.search_runs(
        [run.info.experiment_id],
        f"tags.`cormorant.sweep_key` = '{sweep_key}' and tags.`cormorant.role` = 'sweep'",
    )
    metric = spec.training.metric
    inputs = _load(f"runs:/{found.run_id}/inputs.json") or {}
    return {
        "spec": {
            "name": spec.name,
            "owner": spec.owner,
            "description": spec.description,
            # what the version was trained with (its tag), not the spec file as it is now
            "fingerprint": tags.get("cormorant.spec_fingerprint")
            or run.data.tags.get("cormorant.spec_fingerprint")
            or spec.fingerprint,
            "current_fingerprint": spec.fingerprint,
            "target": spec.target.column,
            "task": spec.target.task,
            "metric": metric,
        },
        "model": name,
        "version": version,
        "champion": champion is not None and str(champion.version) == version,
        "champion_version": None if champion is None else str(champion.version),
        "aliases": list(found.aliases or []),
        "family": tags.get("cormorant.family") or run.data.tags.get("cormorant.family"),
        "params": {k: v for k, v in run.data.params.items() if k not in ("family", "folds", "seed")},
        "run_id": found.run_id,
        "source": found.source,
        "promotion": tags.get("cormorant.promotion", ""),
        "approval": tags.get("cormorant.approval")
        or (
            "awaiting a person's answer (promotion.approval: required)"
            if tags.get("cormorant.promotion", "").startswith("awaiting approval")
            else f"{spec.promotion.approval} (promotion.approval)"
        ),
        "holdout_metric": tags.get(f"holdout_{metric}"),
        "cv_mean": run.data.metrics.get(f"cv_{metric}_mean"),
        "cv_std": run.data.metrics.get(f"cv_{metric}_std"),
        "train_partitions": inputs.get("train", []),
        "holdout_partitions": inputs.get("holdout", []),
        "content_hashes": inputs.get("manifest_hashes", {}),
        "sweep_key": sweep_key,
        "airflow_run_id": sweeps[0].data.tags.get("airflow.run_id") if sweeps else None,
        "selection": tags.get("cormorant.selection", ""),
        "trials": sorted(
            (
                {
                    "trial_id": t.data.tags.get("cormorant.trial_id"),
                    "family": t.data.tags.get("cormorant.family"),
                    "params": {
                        k: v for k, v in t.data.params.items() if k not in ("family", "folds", "seed")
                    },
                    "cv_mean": t.data.metrics.get(f"cv_{metric}_mean"),
                    "cv_std": t.data.metrics.get(f"cv_{metric}_std"),
                    "status": t.info.status,
                    "registered": t.info.run_id == found.run_id,
                }
                for t in trials
            ),
            key=lambda t: t["trial_id"] or "",
        ),
        "blessing": lake.read_json(f"{blessing_prefix(spec.name, version)}/blessing.json"),
        "importance": _load(f"runs:/{found.run_id}/importance.json"),
    }


def _fmt(value: Any, digits: int = 4) -> str:
    return (
        f"{value:.{digits}f}"
        if isinstance(value, (int, float))
        else ("–" if value in (None, "") else str(value))
    )


def render_markdown(card: dict[str, Any]) -> str:
    s, metric = card["spec"], card["spec"]["metric"]
    status = (
        "**champion**" if card["champion"] else f"not the champion (champion: v{card['champion_version']})"
    )
    lines = [
        f"# {card['model']} v{card['version']}: {card['family']}",
        "",
        f"{s['description'] or ''} Owner: {s['owner']}. Target `{s['target']}` ({s['task']}), "
        f"metric {metric}.",
        "",
        f"Status: {status}. Promotion: {card['promotion'] or '–'}.",
        "",
        "## Why this model",
        "",
        f"- Holdout {metric}: {_fmt(card['holdout_metric'])}; CV {metric}: {_fmt(card['cv_mean'])} ± "
        f"{_fmt(card['cv_std'])}; parameters `{card['params']}`.",
        f"- Selection: {card['selection'] or '–'}.",
    ]
    blessing = card.get("blessing")
    if blessing:
        checks = blessing["checks"]
        verdict = "passed" if blessing["passed"] else "failed: " + "; ".join(blessing["failures"])
        lines.append(f"- Blessing: {verdict}.")
        infra = checks.get("infra", {})
        if "max_abs_diff" in infra:
            lines.append(
                f"  - Infra validation: the registered artifact in a fresh ONNX Runtime process, max |diff| "
                f"{infra['max_abs_diff']:.1e} over {infra['rows']} rows, "
                f"{_fmt(infra['ms_per_10k_rows'], 1)} ms per 10k rows."
            )
        if "calibration" in checks:
            c = checks["calibration"]
            lines.append(
                f"  - Calibration: Brier {c['brier']:.4f}, expected calibration error {c['ece']:.4f}."
            )
        scored = [r for r in checks.get("slices", {}).get("slices", []) if "challenger" in r]
        if scored:
            worst = sorted(scored, key=lambda r: r["challenger"])[:5]
            lines.append("  - Slices (lowest first): " + ", ".join(
                f"{r['column']}={r['value']} {r['challenger']:.4f}"
                + (f" (champion {r['champion']:.4f})" if "champion" in r else "")
                + f" [{r['rows']} rows]"
                for r in worst
            ) + ".")  # fmt: skip
    importance = card.get("importance")
    if importance:
        xgb = "gain" in importance
        lines += [
            "",
            "## What drives it",
            "",
            f"Permutation importance on the holdout ({importance['rows']} rows): the drop in "
            f"{importance['metric']} when a feature is shuffled.",
            "",
            "| feature | drop | ± |" + (" XGBoost gain | mean abs SHAP |" if xgb else ""),
            "|---|---:|---:|" + ("---:|---:|" if xgb else ""),
        ]
        for feature, v in importance["permutation"].items():
            row = f"| {feature} | {v['mean']:.4f} | {v['std']:.4f} |"
            if xgb:
                gain, shap = importance["gain"].get(feature), importance["shap_mean_abs"].get(feature)
                row += f" {_fmt(gain, 1)} | {_fmt(shap)} |"
            lines.append(row)
    lines += [
        "",
        "## Data",
        "",
        f"Training days: {', '.join(card['train_partitions']) or '–'}; holdout: "
        f"{', '.join(card['holdout_partitions']) or '–'}.",
        "",
        "| day | content hash (features+labels) |",
        "|---|---|",
        *(f"| {day} | `{digest}` |" for day, digest in sorted(card["content_hashes"].items())),
        "",
        f"## The sweep ({card['sweep_key']})",
        "",
        f"| trial | family | params | CV {metric} | status |",
        "|---|---|---|---:|---|",
        *(
            f"| {t['trial_id']}{' (registered)' if t['registered'] else ''} | {t['family']} | "
            f"`{t['params']}` | {_fmt(t['cv_mean'])} ± {_fmt(t['cv_std'])} | {t['status']} |"
            for t in card["trials"]
        ),
        "",
        "## Lineage",
        "",
        f"- Airflow run: {card['airflow_run_id'] or '– (not run by Airflow)'}",
        f"- MLflow run: {card['run_id']}; artifact: {card['source']}",
        f"- Spec fingerprint: {s['fingerprint']}"
        + (
            f" (the spec file has changed since: now {s['current_fingerprint']})"
            if s.get("current_fingerprint") not in (None, s["fingerprint"])
            else ""
        ),
        f"- Approval: {card['approval']}",
    ]
    return "\n".join(lines) + "\n"


def summary_line(card: dict[str, Any]) -> str:
    """The MLflow model version description: the card in one paragraph."""
    blessing = card.get("blessing") or {}
    return (
        f"{card['family']} trained on {len(card['train_partitions'])} day(s) ending "
        f"{(card['train_partitions'] or ['?'])[-1]}; holdout {card['spec']['metric']} "
        f"{_fmt(card['holdout_metric'])}; "
        f"blessing {'passed' if blessing.get('passed') else 'failed' if blessing else 'not run'}; "
        f"{card['promotion'] or 'no promotion decision'}. Full card: model_card/v{card['version']}.md"
    )


def publish_card(spec: ModelSpec, settings: Settings, lake: Lake, client: Any, version: Any) -> str:
    """Build the version's card and keep it (lake, run artifact, version description, importance plot)."""
    import tempfile
    from pathlib import Path

    from cormorant.importance import importance_png

    card = model_card(spec, settings, lake, str(version.version))
    text = render_markdown(card)
    uri = lake.write_bytes(card_key(spec.name, str(version.version)), text.encode())
    client.log_text(version.run_id, text, f"model_card/v{version.version}.md")
    if card.get("importance"):
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "importance.png"
            png.write_bytes(
                importance_png(f"{card['model']} v{card['version']} ({card['family']})", card["importance"])
            )
            client.log_artifact(version.run_id, str(png), f"model_card/v{version.version}")
    client.update_model_version(spec.registered_model_name, version.version, description=summary_line(card))
    return uri
