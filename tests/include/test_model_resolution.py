"""Which registered version a predict run scores with: an explicit version must have passed its blessing,
or the conf must say to use it anyway (a version half-registered by a training killed mid-way could be
served before). On a SQLite MLflow store."""

from __future__ import annotations

import pytest

from cormorant.config import Settings


@pytest.fixture
def registry(tmp_path, example_spec):
    from mlflow import MlflowClient

    from cormorant.tracking import configure

    settings = Settings.from_env(
        {"CORMORANT_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    )
    configure(settings)
    client = MlflowClient()
    name = example_spec.registered_model_name
    client.create_registered_model(name)
    versions = [client.create_model_version(name, source=str(tmp_path / f"m{i}")) for i in range(3)]
    client.set_model_version_tag(name, versions[0].version, "cormorant.blessing", "passed")
    client.set_model_version_tag(
        name, versions[1].version, "cormorant.blessing", "failed: slice region=north"
    )
    client.set_registered_model_alias(name, "champion", versions[0].version)
    return settings, client, name


def test_an_explicit_blessed_version_and_the_champion_are_scored_with(registry, example_spec):
    from cormorant.inference import resolve_model

    settings, _, name = registry
    assert resolve_model(example_spec, settings, version="1")["uri"] == f"models:/{name}/1"
    assert resolve_model(example_spec, settings)["version"] == "1"


@pytest.mark.parametrize(
    ("version", "why"),
    [("2", "cormorant.blessing: failed: slice region=north"), ("3", "its registration did not finish")],
)
def test_an_unblessed_version_is_refused_unless_the_conf_allows_it(registry, example_spec, version, why):
    from cormorant.inference import UnblessedModelVersion, resolve_model

    settings, _, name = registry
    with pytest.raises(UnblessedModelVersion) as refused:
        resolve_model(example_spec, settings, version=version)
    message = str(refused.value)
    assert f"model_version '{version}': {name} v{version} did not pass its blessing" in message
    assert why in message and "allow_unblessed_version: true" in message and not refused.value.retryable
    allowed = resolve_model(example_spec, settings, version=version, allow_unblessed=True)
    assert allowed["version"] == version
