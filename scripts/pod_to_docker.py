"""The trial pod that ``KubernetesTrialOperator`` would submit, as a ``docker run`` of its main container.

With no cluster at hand, this is how the trainer image is shown to run the pod's exact command: the pod
is rendered by the cncf.kubernetes provider (``build_pod_request_obj``), and its main container becomes a
``docker run`` with the same image, command, arguments and environment, the Secrets it names injected as
environment (from values given here, standing in for the cluster's Secrets), the same user, no privilege
escalation, no capabilities, a read-only root file system, its emptyDir volumes (scratch, and the XCom
sidecar's ``/airflow/xcom``) and its ConfigMap volumes as folders of this host, and its CPU and memory
limits. The XCom sidecar itself is not run: the result is read from the XCom folder.

Secret values never reach a command line: the returned arguments name the variables (``-e NAME``), and
the returned environment, given to the ``docker`` process, holds their values.
"""

from __future__ import annotations

from typing import Any

BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
DECIMAL_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``16Gi``, ``512Mi``, ``1G``, ``1000``) in bytes."""
    for suffixes in (BINARY_SUFFIXES, DECIMAL_SUFFIXES):
        for suffix, factor in suffixes.items():
            if quantity.endswith(suffix):
                return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


def cpus(quantity: str) -> str:
    """A Kubernetes CPU quantity (``4``, ``2.5``, ``500m``) as docker's ``--cpus``."""
    value = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    return f"{value:g}"


def main_container(pod: Any) -> Any:
    return next(c for c in pod.spec.containers if c.name == "base")


def docker_run(
    pod: Any,
    *,
    secrets: dict[str, dict[str, str]],
    folders: dict[str, str],
    network: str | None = None,
    name: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(arguments after "docker", environment for the docker process)`` that run ``pod``'s main
    container. ``secrets`` holds each Secret the pod references (name -> its keys and values);
    ``folders`` a host folder for each volume the container mounts that should outlive it or come from
    this host (the XCom emptyDir, a ConfigMap); other emptyDirs become tmpfs mounts. Refuses a pod
    whose Secrets or ConfigMaps are not given, rather than running a container that lacks them."""
    container = main_container(pod)
    security = pod.spec.security_context
    context = container.security_context
    args = ["run", "--rm"]
    if name:
        args += ["--name", name]
    if network:
        args += ["--network", network]
    if security and security.run_as_user is not None:
        args += ["--user", f"{security.run_as_user}:{security.run_as_group or 0}"]
    if context is not None:
        if context.allow_privilege_escalation is False:
            args += ["--security-opt", "no-new-privileges"]
        if context.capabilities and context.capabilities.drop:
            args += [f"--cap-drop={cap}" for cap in context.capabilities.drop]
        if context.read_only_root_filesystem:
            args.append("--read-only")
    limits = (container.resources.limits or {}) if container.resources else {}
    if "cpu" in limits:
        args += ["--cpus", cpus(limits["cpu"])]
    if "memory" in limits:
        args += ["--memory", str(memory_bytes(limits["memory"]))]
    gpus = [v for k, v in limits.items() if k.endswith("/gpu")]
    if gpus and int(gpus[0]) > 0:
        args += ["--gpus", str(gpus[0])]

    volumes = {v.name: v for v in pod.spec.volumes or []}
    for mount in container.volume_mounts or []:
        volume = volumes[mount.name]
        mode = ":ro" if mount.read_only else ""
        if mount.name in folders:
            args += ["-v", f"{folders[mount.name]}:{mount.mount_path}{mode}"]
        elif volume.empty_dir is not None:
            size = volume.empty_dir.size_limit
            options = "rw,exec" + (f",size={memory_bytes(size)}" if size else "")
            args += ["--tmpfs", f"{mount.mount_path}:{options}"]
        else:
            raise ValueError(
                f"volume {mount.name!r} of the pod needs a host folder (folders[{mount.name!r}])"
            )

    env: dict[str, str] = {}
    for source in container.env_from or []:
        ref = source.secret_ref or source.config_map_ref
        if ref is None or ref.name not in secrets:
            raise ValueError(f"the pod reads the Secret {getattr(ref, 'name', None)!r}: give its values")
        env.update(secrets[ref.name])
    for variable in container.env or []:
        if variable.value_from is not None:
            raise ValueError(f"environment variable {variable.name} comes from a reference this cannot run")
        env[variable.name] = variable.value
    for key in sorted(env):
        args += ["-e", key]

    command = list(container.command or [])
    if command:
        args += ["--entrypoint", command[0]]
    args.append(container.image)
    args += command[1:] + list(container.args or [])
    return args, env
