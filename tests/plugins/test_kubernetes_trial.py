"""The trial pod as the cncf.kubernetes provider would submit it (no cluster runs here)."""

from __future__ import annotations

import json

import pytest

from cormorant.config import KubernetesSettings
from cormorant_provider.operators.kubernetes_trial import KubernetesTrialOperator

TRIAL = {
    "trial_id": "xgboost-0",
    "family": "xgboost",
    "params": {"max_depth": 3},
    "train_partitions": ["2024-03-01"],
    "holdout_partitions": ["2024-03-02"],
    "folds": 3,
    "seed": 7,
    "sweep_key": "abc123",
    "parent_run_id": "run-1",
    "manifest_hashes": {},
    "resources": {"cpu": "4", "memory": "16Gi", "gpus": 2, "gpu_type": "NVIDIA-H100-80GB-HBM3"},
}
ENV = {
    "CORMORANT_TRAINER_IMAGE": "registry.example.com/cormorant/trainer:1.2.3",
    "CORMORANT_K8S_NAMESPACE": "ml",
    "CORMORANT_K8S_NODE_SELECTOR": json.dumps({"pool": "gpu"}),
    "CORMORANT_K8S_TOLERATIONS": json.dumps(
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    ),
}


def _pod(trial):
    op = KubernetesTrialOperator(
        task_id="trial", spec_name="churn", trial=trial, settings=KubernetesSettings.from_env(ENV)
    )
    op.shape_for_trial()
    return op, op.build_pod_request_obj(dry_run=True)


def _main(pod):
    return next(c for c in pod.spec.containers if c.name == "base")


def test_gpu_trial_asks_for_its_gpus_on_the_right_nodes():
    op, pod = _pod(TRIAL)
    main = _main(pod)
    assert main.resources.limits == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert main.resources.requests["nvidia.com/gpu"] == "2"
    assert pod.spec.node_selector == {"pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert [(t.key, t.effect) for t in pod.spec.tolerations] == [("nvidia.com/gpu", "NoSchedule")]
    assert pod.metadata.namespace == "ml"
    assert op.pool == "cormorant_gpu"


@pytest.mark.parametrize(("cpu", "threads"), [("4", "4"), ("2.5", "2"), ("500m", "1"), ("16000m", "16")])
def test_trial_fits_with_the_cpus_its_pod_asked_for(cpu, threads):
    """A container sees its node's every CPU: XGBoost and torch would start that many threads under a
    CPU limit of a few and be throttled. The pod says how many it has."""
    _, pod = _pod({**TRIAL, "resources": {**TRIAL["resources"], "cpu": cpu}})
    env = {e.name: e.value for e in _main(pod).env or []}
    assert env["CORMORANT_TRIAL_THREADS"] == threads


def test_a_trial_pod_keeps_its_onnx_graph_cache_in_the_lake_unless_the_deployment_names_one():
    """Its files last one trial, and its user cannot write the image's folders: the lake is what every
    trial pod reaches."""
    _, pod = _pod(TRIAL)
    assert {e.name: e.value for e in _main(pod).env}["CORMORANT_GRAPH_CACHE"] == "lake"
    from kubernetes.client import models as k8s

    op = KubernetesTrialOperator(
        task_id="trial",
        spec_name="churn",
        trial=TRIAL,
        settings=KubernetesSettings.from_env(ENV),
        env_vars=[k8s.V1EnvVar(name="CORMORANT_GRAPH_CACHE", value="/graphs")],
    )
    op.shape_for_trial()
    op.shape_for_trial()  # a retry shapes the same pod again
    env = [(e.name, e.value) for e in _main(op.build_pod_request_obj(dry_run=True)).env]
    assert [value for name, value in env if name == "CORMORANT_GRAPH_CACHE"] == ["/graphs"]


def test_cpu_trial_takes_no_gpu_and_no_gpu_toleration():
    _, pod = _pod(
        {**TRIAL, "family": "linear", "trial_id": "linear-0", "resources": {"cpu": "2", "memory": "4Gi"}}
    )
    main = _main(pod)
    assert "nvidia.com/gpu" not in main.resources.limits
    assert not [t for t in (pod.spec.tolerations or []) if "gpu" in t.key]
    assert pod.spec.node_selector == {"pool": "gpu"}


def test_pod_runs_the_trainer_cli_from_the_configured_image():
    _, pod = _pod(TRIAL)
    main = _main(pod)
    assert main.image == "registry.example.com/cormorant/trainer:1.2.3"
    assert main.command == ["python", "-m", "cormorant.trainer"]
    assert main.args[:2] == ["--spec", "/opt/airflow/include/specs/churn.yaml"]
    assert json.loads(main.args[3]) == TRIAL
    assert main.args[4:] == ["--output", "/airflow/xcom/return.json"]


def test_credentials_come_from_secrets_by_reference_only():
    _, pod = _pod(TRIAL)
    main = _main(pod)
    assert sorted(e.secret_ref.name for e in main.env_from) == ["cormorant-lake", "cormorant-mlflow"]
    rendered = json.dumps(pod.to_dict(), default=str)
    for word in ("AWS_SECRET_ACCESS_KEY", "password", "MLFLOW_TRACKING_TOKEN"):
        assert word not in rendered


def test_pod_runs_as_non_root_without_privileges():
    _, pod = _pod(TRIAL)
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.run_as_user == 50000
    main = _main(pod)
    assert main.security_context.allow_privilege_escalation is False
    assert main.security_context.capabilities.drop == ["ALL"]
    assert pod.spec.service_account_name == "cormorant-trainer"


def test_result_returns_through_the_xcom_sidecar_and_labels_find_the_pod():
    op, pod = _pod(TRIAL)
    assert any(c.name == "airflow-xcom-sidecar" for c in pod.spec.containers)
    labels = pod.metadata.labels
    assert labels["cormorant/trial"] == "xgboost-0"
    assert labels["cormorant/sweep"] == "abc123"
    assert labels["cormorant/family"] == "xgboost"
    assert op.on_finish_action.value == "delete_pod"
    assert op.startup_timeout_seconds == 600
    assert op.schedule_timeout_seconds == 1800


def test_malformed_deployment_setting_names_the_variable():
    with pytest.raises(ValueError, match="CORMORANT_K8S_TOLERATIONS must be JSON"):
        KubernetesSettings.from_env({"CORMORANT_K8S_TOLERATIONS": "[{oops"})


def test_pod_has_a_read_only_root_and_writes_only_to_its_scratch_volume():
    _, pod = _pod(TRIAL)
    main = _main(pod)
    assert main.security_context.read_only_root_filesystem is True
    mounts = {m.mount_path: m.name for m in main.volume_mounts}
    assert mounts["/tmp"] == "scratch" and mounts["/airflow/xcom"] == "xcom"
    scratch = next(v for v in pod.spec.volumes if v.name == "scratch")
    assert scratch.empty_dir.size_limit == "10Gi"
    assert "/opt/airflow/include/specs" not in mounts  # the image's own specs


def test_specs_can_come_from_a_config_map_mounted_where_the_image_keeps_them():
    op = KubernetesTrialOperator(
        task_id="trial",
        spec_name="churn",
        trial=TRIAL,
        settings=KubernetesSettings.from_env({**ENV, "CORMORANT_K8S_SPECS_CONFIGMAP": "cormorant-specs"}),
    )
    op.shape_for_trial()
    pod = op.build_pod_request_obj(dry_run=True)
    (mount,) = [m for m in _main(pod).volume_mounts if m.name == "specs"]
    assert (mount.mount_path, mount.read_only) == ("/opt/airflow/include/specs", True)
    assert next(v for v in pod.spec.volumes if v.name == "specs").config_map.name == "cormorant-specs"
    assert "--spec" in _main(pod).args and "/opt/airflow/include/specs/churn.yaml" in _main(pod).args


def test_the_rendered_pod_becomes_the_same_container_under_docker():
    """scripts/pod_to_docker.py: what `make deploy-test` runs the trainer image with."""
    import sys

    from cormorant.config import PROJECT_ROOT

    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    from pod_to_docker import docker_run

    cpu_trial = {**TRIAL, "resources": {"cpu": "2", "memory": "4Gi"}}
    _, pod = _pod(cpu_trial)
    secrets = {
        "cormorant-mlflow": {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_PASSWORD": "pw"},
        "cormorant-lake": {"AWS_SECRET_ACCESS_KEY": "key"},
    }
    args, env = docker_run(pod, secrets=secrets, folders={"xcom": "/tmp/x"}, network="net", name="trial")
    line = " ".join(args)
    assert "pw" not in args and "key" not in args  # values only in the docker process's environment
    assert env["MLFLOW_TRACKING_PASSWORD"] == "pw" and env["AWS_SECRET_ACCESS_KEY"] == "key"
    assert env["CORMORANT_TRIAL_THREADS"] == "2" and env["CORMORANT_GRAPH_CACHE"] == "lake"
    assert "--user 50000:0" in line and "--security-opt no-new-privileges" in line
    assert "--cap-drop=ALL" in args and "--read-only" in args
    assert f"--tmpfs /tmp:rw,exec,size={10 * 2**30}" in line and "-v /tmp/x:/airflow/xcom" in line
    assert "--cpus 2" in line and f"--memory {4 * 2**30}" in line and "--gpus" not in line
    assert "--network net" in line and "-e MLFLOW_TRACKING_PASSWORD" in line
    image = args.index("registry.example.com/cormorant/trainer:1.2.3")
    assert args[image - 2 : image] == ["--entrypoint", "python"]
    assert args[image + 1 : image + 5] == [
        "-m",
        "cormorant.trainer",
        "--spec",
        "/opt/airflow/include/specs/churn.yaml",
    ]
    assert json.loads(args[args.index("--trial") + 1])["trial_id"] == "xgboost-0"
    assert args[-2:] == ["--output", "/airflow/xcom/return.json"]
    with pytest.raises(ValueError, match="cormorant-lake"):
        docker_run(pod, secrets={"cormorant-mlflow": {}}, folders={"xcom": "/tmp/x"})
