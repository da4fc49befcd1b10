"""Kubernetes: a recipe's ``compute:`` block in the forms ``dagster-k8s`` reads, and the ``k8s`` trainer launcher.

Two routes to the GPUs of a cluster, both driven by the same ``compute:`` block of ``models/<recipe>.yaml``:

* **Dagster on Kubernetes** (``k8s_job_executor`` or the ``K8sRunLauncher``): ``<recipe>_checkpoint`` carries the op
  tag ``dagster-k8s/config`` (:func:`k8s_config`: container resources with the GPU limit, image, node selector,
  tolerations, a memory-backed ``/dev/shm``), so the executor starts that step in a pod with the GPUs and the asset
  trains in it (``trainer.launcher: in_process``).
* **``trainer.launcher: k8s``**: the step runs wherever Dagster runs it and starts the training module in a pod of
  its own through Dagster Pipes (``dagster_k8s.PipesK8sClient``): :func:`training_pod_spec` is the pod it asks for,
  :func:`training_command` what the pod runs (``accelerate launch`` with one process per GPU when it has several).
  The pod reads the training-data bundle and writes the checkpoint on a volume claim mounted at the artifact root's
  own path (``trainer.k8s.artifact_claim``); logs and Pipes messages come back from the pod's log stream.

Nothing here talks to a cluster but :func:`launch_training_pod`, through ``PipesK8sClient.run``.
"""

from __future__ import annotations

from pathlib import Path

from ..specs import Compute, RecipeSpec

K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY
SHM_VOLUME = "dshm"
ARTIFACT_VOLUME = "artifacts"
CONTAINER = "training"


def container_resources(compute: Compute) -> dict:
    """``{"requests": ..., "limits": ...}`` of the training container: GPUs as a limit (Kubernetes sets the request
    equal), CPU and memory requested, memory also as the limit."""
    requests, limits = {}, {}
    if compute.cpu:
        requests["cpu"] = compute.cpu
    if compute.memory:
        requests["memory"] = limits["memory"] = compute.memory
    if compute.gpus:
        limits[compute.gpu_resource] = str(compute.gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def shm_volume(compute: Compute) -> tuple[list[dict], list[dict]]:
    """(volumes, volume mounts) of a memory-backed ``/dev/shm`` when ``compute.shm`` is set."""
    if not compute.shm:
        return [], []
    vol = {"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": compute.shm}}
    return [vol], [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}]


def k8s_config(compute: Compute) -> dict:
    """The ``dagster-k8s/config`` value (``container_config`` / ``pod_spec_config``) of a training step; empty when
    the recipe declares no compute needs."""
    container: dict = {}
    resources = container_resources(compute)
    if resources:
        container["resources"] = resources
    if compute.image:
        container["image"] = compute.image
    volumes, mounts = shm_volume(compute)
    if mounts:
        container["volume_mounts"] = mounts
    pod: dict = {}
    if volumes:
        pod["volumes"] = volumes
    if compute.node_selector:
        pod["node_selector"] = dict(compute.node_selector)
    if compute.tolerations:
        pod["tolerations"] = [dict(t) for t in compute.tolerations]
    return {k: v for k, v in (("container_config", container), ("pod_spec_config", pod)) if v}


def op_tags(recipe: RecipeSpec) -> dict:
    """Op tags of ``<recipe>_checkpoint``: ``{"dagster-k8s/config": ...}``, or none."""
    cfg = k8s_config(recipe.compute)
    return {K8S_CONFIG_TAG: cfg} if cfg else {}


def training_command(recipe: RecipeSpec, command: list[str] | None = None) -> list[str]:
    """What the training pod runs before the CLI arguments: ``command`` when given, else ``accelerate launch`` with
    one process per GPU for several GPUs, else ``python -m ehr_assets.training``."""
    if command:
        return list(command)
    if recipe.compute.gpus > 1:
        return ["accelerate", "launch", "--num_processes", str(recipe.compute.gpus), "-m", "ehr_assets.training"]
    return ["python", "-m", "ehr_assets.training"]


def training_pod_spec(compute: Compute, artifact_root: Path, artifact_claim: str, service_account: str | None) -> dict:
    """The ``base_pod_spec`` handed to ``PipesK8sClient.run``: one container with the recipe's resources, the
    artifact volume claim mounted at ``artifact_root`` (the same path as in the launching process, so every path
    argument means the same file), ``/dev/shm``, node selector and tolerations; never restarted (a failed attempt is
    retried by Dagster and resumes from its step checkpoint)."""
    volumes, mounts = shm_volume(compute)
    volumes = [{"name": ARTIFACT_VOLUME, "persistent_volume_claim": {"claim_name": artifact_claim}}, *volumes]
    mounts = [{"name": ARTIFACT_VOLUME, "mount_path": str(artifact_root)}, *mounts]
    container: dict = {"name": CONTAINER, "volume_mounts": mounts}
    resources = container_resources(compute)
    if resources:
        container["resources"] = resources
    spec: dict = {"containers": [container], "volumes": volumes, "restart_policy": "Never"}
    if compute.node_selector:
        spec["node_selector"] = dict(compute.node_selector)
    if compute.tolerations:
        spec["tolerations"] = [dict(t) for t in compute.tolerations]
    if service_account:
        spec["service_account_name"] = service_account
    return spec


def launch_training_pod(context, k8s, recipe: RecipeSpec, command: list[str], env: dict, artifact_root: Path) -> None:
    """Run ``command`` in a training pod through ``PipesK8sClient`` and wait for it (its logs stream into the run).
    ``k8s``: the trainer's :class:`ehr_assets.defs.resources.K8sLaunch` settings."""
    from dagster_k8s import PipesK8sClient

    where = f"recipe {recipe.name!r} (models/{recipe.name}.yaml)"
    image = recipe.compute.image or k8s.image
    if not image:
        raise ValueError(f"{where}: trainer.launcher k8s needs an image: set compute.image or trainer.k8s.image")
    if not k8s.artifact_claim:
        raise ValueError(
            f"{where}: trainer.launcher k8s needs trainer.k8s.artifact_claim, the volume claim holding the artifact "
            f"root {artifact_root} (the pod reads the training data and writes the checkpoint there)"
        )
    client = PipesK8sClient(
        env=dict(env),
        load_incluster_config=k8s.load_incluster_config,
        kubeconfig_file=k8s.kubeconfig_file,
        kube_context=k8s.kube_context,
        poll_interval=k8s.poll_interval_s,
    )
    spec = training_pod_spec(recipe.compute, artifact_root, k8s.artifact_claim, k8s.service_account)
    labels = {"app.kubernetes.io/name": "ehr-assets-training", "ehr-assets/recipe": recipe.name}
    context.log.info(f"launching {recipe.name} training in a pod ({image}, {recipe.compute.gpus} GPU): {command}")
    client.run(
        context=context,
        image=image,
        command=command,
        namespace=k8s.namespace,
        env={"EHR_ARTIFACT_ROOT": str(artifact_root)},
        base_pod_meta={"labels": labels},
        base_pod_spec=spec,
        pod_wait_timeout=k8s.pod_wait_timeout_s,
    ).get_results()
