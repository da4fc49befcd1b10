"""A recipe's ``compute:`` block on the cluster path: the YAML rules, the ``dagster-k8s/config`` tag of its checkpoint
asset read back by dagster-k8s's own parser and turned into the Kubernetes Job its executor would create, and the pod
the ``k8s`` trainer launcher asks for (built by dagster-k8s's own ``build_pod_body``). The launch itself, through the
real ``PipesK8sClient`` against a loopback API server, is in ``tests/e2e/test_outside.py``."""

from __future__ import annotations

import json

import pytest
import yaml

from ehr_assets.specs import Compute, RecipeSpec, SpecError, load_spec

from .conftest import make_tiny_project

COMPUTE = {
    "gpus": 4,
    "cpu": 32,
    "memory": "256Gi",
    "shm": "32Gi",
    "image": "registry.example/ehr-assets:0.1",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def project_with_compute(tmp_path, compute=COMPUTE):
    root = make_tiny_project(tmp_path / "project", {"msk": 20, "inspect": 20}, recipes=("sft", "jepa"))
    p = root / "models" / "jepa.yaml"  # a recipe others do not extend (the regimes extend sft)
    spec = yaml.safe_load(p.read_text())
    spec["compute"] = compute
    p.write_text(yaml.safe_dump(spec))
    return root


def test_compute_block_rules(tmp_path):
    c = Compute.model_validate({"cpu": 16, "memory": "64Gi", "gpus": 2})
    assert c.cpu == "16" and c.gpus == 2 and c.gpu_resource == "nvidia.com/gpu"
    f = tmp_path / "models" / "r.yaml"
    f.parent.mkdir()
    base = {"backbone": {"config": {}}, "objective": "sft"}
    for bad, key in (({"memory": "lots"}, "compute.memory"), ({"gpus": -1}, "compute.gpus"), ({"gpu": 1}, "compute")):
        f.write_text(yaml.safe_dump({**base, "compute": bad}))
        with pytest.raises(SpecError, match=rf"r\.yaml: {key}"):
            load_spec(f, RecipeSpec)


def test_checkpoint_asset_carries_the_dagster_k8s_tag(tmp_path):
    """The executor's view: dagster-k8s parses the tag and builds the step's Job with the GPUs, memory, image,
    node selector, tolerations and /dev/shm of the recipe; a recipe without compute needs carries no tag."""
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    from ehr_assets.definitions import build_definitions

    defs = build_definitions(project_with_compute(tmp_path), warehouse_path=tmp_path / "w.duckdb")
    tags = defs.get_assets_def("jepa_checkpoint").op.tags
    assert json.loads(tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "dagster-k8s/config" not in defs.get_assets_def("sft_checkpoint").op.tags
    assert "dagster-k8s/config" not in defs.get_assets_def("jepa_embeddings").op.tags

    user = get_user_defined_k8s_config(tags)  # dagster-k8s's own reader of the tag (validates its schema)
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="dagster-default:1", dagster_home="/opt/dagster/home"),
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-abc",
        user_defined_k8s_config=user,
    )
    pod = job.spec.template.spec
    (ctr,) = pod.containers
    assert ctr.image == COMPUTE["image"]
    assert ctr.resources.limits == {"nvidia.com/gpu": "4", "memory": "256Gi"}
    assert ctr.resources.requests == {"cpu": "32", "memory": "256Gi"}
    assert [(m.name, m.mount_path) for m in ctr.volume_mounts] == [("dshm", "/dev/shm")]
    (shm,) = pod.volumes
    assert shm.empty_dir.medium == "Memory" and shm.empty_dir.size_limit == "32Gi"
    assert pod.node_selector == COMPUTE["node_selector"]
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]


def test_training_pod_body_and_command(tmp_path):
    """The pod the k8s launcher hands to PipesK8sClient, as dagster-k8s's build_pod_body makes it: the recipe's
    resources, the artifact claim mounted at the artifact root's own path, never restarted, the Pipes bootstrap
    environment on the training container; several GPUs run under accelerate with one process each."""
    from dagster_k8s.pipes import build_pod_body

    from ehr_assets.defs.k8s import training_command, training_pod_spec

    recipe = RecipeSpec.model_validate(
        {"name": "r", "backbone": {"config": {}}, "objective": "sft", "compute": COMPUTE}
    )
    root = tmp_path / "artifacts"
    spec = training_pod_spec(recipe.compute, root, "ehr-artifacts", "trainer-sa")
    cmd = training_command(recipe) + ["--recipe", "r"]
    assert cmd[:5] == ["accelerate", "launch", "--num_processes", "4", "-m"]
    body = build_pod_body("pod-1", COMPUTE["image"], cmd, {"DAGSTER_PIPES_CONTEXT": "ctx"}, {"labels": {}}, spec)
    (ctr,) = body.spec.containers
    assert ctr.image == COMPUTE["image"] and ctr.command == cmd and ctr.name == "training"
    assert ctr.resources.limits == {"nvidia.com/gpu": "4", "memory": "256Gi"}
    assert {(m.name, m.mount_path) for m in ctr.volume_mounts} == {("artifacts", str(root)), ("dshm", "/dev/shm")}
    claims = {v.name: v.persistent_volume_claim for v in body.spec.volumes}
    assert claims["artifacts"].claim_name == "ehr-artifacts"
    assert body.spec.restart_policy == "Never" and body.spec.service_account_name == "trainer-sa"
    assert ("DAGSTER_PIPES_CONTEXT", "ctx") in [(e.name, e.value) for e in ctr.env]

    one = RecipeSpec.model_validate({"name": "r", "backbone": {"config": {}}, "objective": "sft"})
    assert training_command(one) == ["python", "-m", "ehr_assets.training"]
    assert training_command(recipe, ["torchrun", "-m", "x"]) == ["torchrun", "-m", "x"]
    bare = training_pod_spec(one.compute, root, "c", None)
    assert "resources" not in bare["containers"][0] and "node_selector" not in bare


def test_the_readmes_kubernetes_run_config_is_valid_for_the_pipeline(tmp_path, monkeypatch):
    """examples/k8s/run_config.yaml (the README's) validates against the pipeline job run by dagster-k8s's
    k8s_job_executor (EHR_EXECUTOR=k8s), and its trainer settings reach the resource; a typo is refused."""
    import dagster as dg

    from ehr_assets.definitions import PIPELINE_JOB, build_definitions
    from ehr_assets.defs.resources import Trainer

    from .conftest import REPO

    monkeypatch.setenv("EHR_EXECUTOR", "k8s")
    defs = build_definitions(project_with_compute(tmp_path), warehouse_path=tmp_path / "w.duckdb")
    job = defs.resolve_job_def(PIPELINE_JOB)
    assert job.executor_def.name == "k8s"
    cfg = yaml.safe_load((REPO / "examples" / "k8s" / "run_config.yaml").read_text())
    dg.validate_run_config(job, cfg)
    trainer = Trainer(**cfg["resources"]["trainer"]["config"])
    assert trainer.launcher == "k8s" and trainer.k8s.artifact_claim == "ehr-data"
    cfg["resources"]["trainer"]["config"]["k8s"]["artifact_clam"] = "x"
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, cfg)
    monkeypatch.setenv("EHR_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="EHR_EXECUTOR"):
        build_definitions(project_with_compute(tmp_path / "b"), warehouse_path=tmp_path / "w2.duckdb")
