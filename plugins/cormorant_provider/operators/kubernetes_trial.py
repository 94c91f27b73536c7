"""Sweep trials as pods on GPU workers, through the cncf.kubernetes provider's KubernetesPodOperator."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from cormorant.config import KubernetesSettings

XCOM_RESULT = "/airflow/xcom/return.json"
SPECS_IN_IMAGE = "/opt/airflow/include/specs"
# The trainer's root file system is read-only: what it writes (MLflow's staging, torch's caches) goes to
# an emptyDir here (the trainer image's HOME and TMPDIR), the rest to the lake and MLflow.
SCRATCH = "/tmp"


def cpu_threads(quantity: str) -> int:
    """Whole CPUs in a Kubernetes CPU quantity (``"8"``, ``"2.5"``, ``"500m"``), at least one."""
    value = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    return max(1, int(value))


def _label(value: str) -> str:
    """A Kubernetes label value: at most 63 characters of [A-Za-z0-9-_.]."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)
    return cleaned[:63].strip("-_.") or "none"


def _volumes(cfg: KubernetesSettings) -> list[Any]:
    from kubernetes.client import models as k8s

    volumes = [
        k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=cfg.scratch_size))
    ]
    if cfg.specs_config_map:
        volumes.append(
            k8s.V1Volume(name="specs", config_map=k8s.V1ConfigMapVolumeSource(name=cfg.specs_config_map))
        )
    return volumes


def _volume_mounts(cfg: KubernetesSettings) -> list[Any]:
    from kubernetes.client import models as k8s

    mounts = [k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH)]
    if cfg.specs_config_map:
        mounts.append(k8s.V1VolumeMount(name="specs", mount_path=SPECS_IN_IMAGE, read_only=True))
    return mounts


class KubernetesTrialOperator(KubernetesPodOperator):
    """Run one sweep trial as a pod: the trainer CLI in the trainer image, its result via the XCom sidecar.

    The pod's GPU count and GPU type come from the trial's ``resources`` (the spec's
    ``training.resources`` per family); image, namespace, service account, node selector,
    tolerations, affinity, secrets and timeouts from :class:`cormorant.config.KubernetesSettings`.
    MLflow and lake credentials are injected from Kubernetes Secrets by reference, so no credential
    appears in the pod spec or the task log. The container runs as a non-root user with no privilege
    escalation, no capabilities and a read-only root file system; it writes to a scratch emptyDir at
    :data:`SCRATCH`. The specs come with the image, or from a ConfigMap (``CORMORANT_K8S_SPECS_CONFIGMAP``)
    mounted where the image keeps them, so a new spec needs no new image. The pod is deleted when it
    finishes; a retry finds a still-running pod of the same try through its labels.

    :param spec_name: the spec's name; the trainer reads ``<specs dir in image>/<name>.yaml``.
    :param trial: the trial from the sweep plan (templated; usually mapped with ``expand``).
    """

    template_fields: Sequence[str] = (*KubernetesPodOperator.template_fields, "trial")

    def __init__(
        self,
        *,
        spec_name: str,
        trial: dict[str, Any] | Any,
        settings: KubernetesSettings | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow.providers.cncf.kubernetes.secret import Secret
        from kubernetes.client import models as k8s

        from cormorant.config import KubernetesSettings

        cfg = settings or KubernetesSettings.from_env()
        self.spec_name = spec_name
        self.trial = trial
        self.k8s_settings = cfg
        kwargs.setdefault("pool", cfg.pool)
        super().__init__(
            image=cfg.image,
            namespace=cfg.namespace,
            service_account_name=cfg.service_account,
            name=f"cormorant-{spec_name}-trial",
            random_name_suffix=True,
            cmds=["python", "-m", "cormorant.trainer"],
            arguments=[],
            node_selector=dict(cfg.node_selector),
            tolerations=[k8s.V1Toleration(**t) for t in cfg.tolerations],
            affinity=cfg.affinity or None,
            secrets=[
                Secret("env", None, cfg.mlflow_secret),  # MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN, ...
                Secret("env", None, cfg.storage_secret),  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...
            ],
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=cfg.run_as_user,
                run_as_group=0,
                fs_group=0,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
            container_security_context=k8s.V1SecurityContext(
                allow_privilege_escalation=False,
                capabilities=k8s.V1Capabilities(drop=["ALL"]),
                read_only_root_filesystem=True,
            ),
            volumes=_volumes(cfg),
            volume_mounts=_volume_mounts(cfg),
            do_xcom_push=True,
            on_finish_action="delete_pod",
            startup_timeout_seconds=cfg.startup_timeout_s,
            schedule_timeout_seconds=cfg.schedule_timeout_s,
            get_logs=True,
            **kwargs,
        )

    def shape_for_trial(self) -> None:
        """Fill the pod's command arguments, resources, GPU node selection and labels from ``trial``."""
        from kubernetes.client import models as k8s

        trial = self.trial
        resources = trial.get("resources") or {}
        gpus = int(resources.get("gpus", 0))
        requests = {"cpu": str(resources.get("cpu", "2")), "memory": str(resources.get("memory", "8Gi"))}
        limits = dict(requests)
        if gpus:
            requests[self.k8s_settings.gpu_resource] = limits[self.k8s_settings.gpu_resource] = str(gpus)
        self.container_resources = k8s.V1ResourceRequirements(requests=requests, limits=limits)
        env = [e for e in (self.env_vars or []) if e.name != "CORMORANT_TRIAL_THREADS"]
        # A pod's files last one trial: its ONNX graph cache (cormorant.graph_cache) is in the lake, which
        # every trial pod reaches, unless the deployment names another in env_vars.
        if not any(e.name == "CORMORANT_GRAPH_CACHE" for e in env):
            env.append(k8s.V1EnvVar(name="CORMORANT_GRAPH_CACHE", value="lake"))
        # A container sees every CPU of its node; its fitting should use the CPUs it asked for.
        self.env_vars = [
            *env,
            k8s.V1EnvVar(name="CORMORANT_TRIAL_THREADS", value=str(cpu_threads(requests["cpu"]))),
        ]
        if gpus and resources.get("gpu_type"):
            self.node_selector = {
                **self.node_selector,
                self.k8s_settings.gpu_type_label: resources["gpu_type"],
            }
        if not gpus:  # a CPU trial needs no GPU node, and should not take one
            self.tolerations = [t for t in self.tolerations if "gpu" not in (t.key or "")]
        self.arguments = [
            "--spec",
            f"{SPECS_IN_IMAGE}/{self.spec_name}.yaml",
            "--trial",
            json.dumps(trial, sort_keys=True),
            "--output",
            XCOM_RESULT,
        ]
        self.labels = {
            **(self.labels or {}),
            "app.kubernetes.io/name": "cormorant-trainer",
            "cormorant/spec": _label(self.spec_name),
            "cormorant/trial": _label(trial["trial_id"]),
            "cormorant/sweep": _label(trial.get("sweep_key", "")),
            "cormorant/family": _label(trial["family"]),
        }

    def execute(self, context: Context) -> Any:
        from cormorant_provider.operators.sweep import cached_trial_result

        cached = cached_trial_result(self, self.spec_name, self.trial)
        if cached is not None:
            return cached
        self.shape_for_trial()
        self.log.info(
            "Trial %s (%s) as a pod in %s with %s",
            self.trial["trial_id"],
            self.trial["family"],
            self.namespace,
            self.container_resources,
        )
        return super().execute(context)
