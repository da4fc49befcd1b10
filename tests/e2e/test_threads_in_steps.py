"""The thread policy in the Dagster layer: every step whose libraries run thread pools (torch, scikit-learn, the
tokenizers' Rust pool) requires the ``compute`` resource, and a real materialization runs its step with the policy's
threads (environment, run config) and gives the process its own limits back afterwards."""

from __future__ import annotations

import os

import dagster as dg
import pytest
import threadpoolctl
import torch

from ehr_assets import threads
from ehr_assets.definitions import build_definitions
from ehr_assets.defs.resources import Compute

from ..conftest import REPO
from .test_real_data_pipeline import make_project

THREAD_POOL_KINDS = {"pytorch", "sklearn", "huggingface"}


@pytest.mark.parametrize("which", ["shipped", "frozen_and_local_backbones"])
def test_every_thread_pool_step_requires_compute(tmp_path, which):
    root = REPO if which == "shipped" else make_project(tmp_path / "project")
    defs = build_definitions(root, warehouse_path=tmp_path / "w.duckdb", artifact_root=tmp_path / "a")
    heavy, missing = [], []
    for a in defs.assets:
        if not isinstance(a, dg.AssetsDefinition):  # the declarations/* observable sources: digests, no compute
            continue
        kinds = set().union(*(s.kinds for s in a.specs))
        if kinds & THREAD_POOL_KINDS:
            heavy.append(a.key.to_user_string())
            if "compute" not in a.required_resource_keys:
                missing.append(a.key.to_user_string())
    collapse = [c for c in defs.asset_checks if any(k.name == "not_collapsed" for k in c.check_keys)]
    missing += [str(list(c.check_keys)[0]) for c in collapse if "compute" not in c.required_resource_keys]
    # every kind of such step is there: training, embeddings, probes, tokenizers (and frozen / recipe tokens)
    expected = {"sft_checkpoint", "sft_embeddings", "count_baseline_probe_metrics", "tokenizer"}
    if which != "shipped":
        expected = {"frozen_smb_embeddings", "frozen_smb_tokens", "sft_local_tokens", "sft_local_checkpoint"}
    assert expected <= set(heavy) and collapse
    assert not missing, f"steps that run thread pools without the compute resource: {missing}"


def thread_probe(seen: dict):
    @dg.asset
    def probe(compute: Compute) -> None:
        seen["torch"] = torch.get_num_threads()
        seen["blas"] = {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
        seen["env"] = os.environ.get(threads.ENV_THREADS)
        seen["policy"] = compute.policy().describe()

    return probe


def run_probe(resources: dict, run_config: dict | None = None) -> tuple[dict, list[str]]:
    seen: dict = {}
    with dg.instance_for_test() as instance:
        res = dg.materialize([thread_probe(seen)], resources=resources, instance=instance, run_config=run_config)
        assert res.success
        msgs = [e.user_message for e in instance.all_logs(res.run_id) if e.user_message.startswith("threads: ")]
    return seen, msgs


def test_a_step_runs_with_the_policy_and_the_process_gets_its_limits_back(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 6)  # a value no other setting here produces
    monkeypatch.delenv(threads.ENV_THREADS, raising=False)
    monkeypatch.setenv(threads.ENV_CONCURRENT, "2")
    before = torch.get_num_threads()
    seen, msgs = run_probe({"compute": Compute()})
    assert seen["torch"] == 3 and seen["blas"] == {3} and seen["env"] == "3"  # 6 cores / 2 steps at once
    assert msgs == ["threads: 3 threads per step (6 usable cores / 2 steps at once)"]
    assert torch.get_num_threads() == before and threads.ENV_THREADS not in os.environ  # torn down

    monkeypatch.setenv(threads.ENV_THREADS, "4")  # the environment's override
    assert run_probe({"compute": Compute()})[0]["torch"] == 4
    # run config beats the environment (the launchpad / `resources: {compute: {config: {threads: N}}}`)
    seen, _ = run_probe({"compute": Compute()}, {"resources": {"compute": {"config": {"threads": 5}}}})
    assert seen["torch"] == 5 and seen["blas"] == {5}
    assert torch.get_num_threads() == before
