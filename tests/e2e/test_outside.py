"""Meeting users where they work, on one materialized partition (tiny synthetic ``msk``, recipe ``sft``, the shipped
ACES task): the ACES task probed beside the YAML tasks at its own prediction times; the exported encoder loaded by
plain ``transformers`` giving the project's embeddings; and the ``k8s`` trainer launcher's request to a Kubernetes
API server (a loopback HTTP server that records the request and refuses it) through the real ``PipesK8sClient``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import duckdb
import numpy as np
import pytest
import yaml

from ehr_assets.definitions import build_definitions

from ..conftest import keep_probes, make_tiny_project

PARTITION = "msk"
PROBES = {"mortality": [365], "survival": None, "admission_mortality_1y": None}


def outside_project(root):
    root = make_tiny_project(root, {"msk": 60, "inspect": 10}, recipes=("sft",))
    sft = root / "models" / "sft.yaml"  # LoRA (the shipped demo trains its tiny backbone fully): export merges it
    sft.write_text(yaml.safe_dump({**yaml.safe_load(sft.read_text()), "finetune": "lora"}))
    keep_probes(root, PROBES)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outside")
    root = outside_project(tmp / "project")
    db, art = tmp / "warehouse.duckdb", tmp / "artifacts"
    defs = build_definitions(root, warehouse_path=db, artifact_root=art)
    sel = dg.AssetSelection.assets("sft_probe_metrics", "count_baseline_probe_metrics").upstream()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=sel.resolve(defs.resolve_asset_graph())
    )
    with dg.instance_for_test() as instance:
        res = job.execute_in_process(partition_key=PARTITION, instance=instance, raise_on_error=False)
        assert res.success
        yield root, db, art, instance


def test_aces_task_is_probed_beside_the_yaml_tasks(built):
    from ehr_assets.defs.io import load_embeddings
    from ehr_assets.eval.report import load_metrics, wide_table

    root, db, art, _ = built
    with duckdb.connect(str(db), read_only=True) as conn:
        aces = conn.execute("SELECT * FROM aces_labels WHERE cohort = ?", [PARTITION]).df()
        nodes = conn.execute(
            "SELECT subject_id, prediction_time FROM decision_nodes WHERE cohort = ?", [PARTITION]
        ).df()
    _, index = load_embeddings(art / "sft_embeddings" / PARTITION)
    key = ["subject_id", "prediction_time"]
    have = set(map(tuple, index[key].astype({"prediction_time": "datetime64[us]"}).to_numpy().tolist()))
    want = set(map(tuple, aces[key].astype({"prediction_time": "datetime64[us]"}).to_numpy().tolist()))
    assert want <= have and len(want - set(map(tuple, nodes[key].to_numpy().tolist()))) > 0  # times of its own
    assert len(index) == len(have)  # one embedding per (subject, time)

    metrics = load_metrics(db)
    auroc = metrics[(metrics["task"] == "admission_mortality_1y") & (metrics["metric"] == "auroc")]
    assert set(auroc["recipe"]) == {"sft", "count_baseline"}
    assert (auroc["n"] == int((aces["split"] == "held_out").sum())).all()  # every held-out ACES row is scored
    wide = wide_table(metrics)
    assert "admission_mortality_1y" in wide and "mortality" in wide


def test_exported_encoder_loads_with_plain_transformers_and_gives_the_projects_embeddings(built, tmp_path):
    import torch
    from huggingface_hub import ModelCard
    from transformers import AutoModel, AutoTokenizer

    from ehr_assets.defs.io import load_embeddings
    from ehr_assets.export import main
    from ehr_assets.text.contexts import crop_context

    root, db, art, _ = built
    out = tmp_path / "encoder"
    argv = ["--recipe", "sft", "--cohort", PARTITION, "--out", str(out), "--project", str(root)]
    assert main([*argv, "--artifacts", str(art), "--warehouse", str(db)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "ehr_assets.json"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)

    model = AutoModel.from_pretrained(str(out), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    emb, index = load_embeddings(art / "sft_embeddings" / PARTITION)
    with duckdb.connect(str(db), read_only=True) as conn:
        seq = conn.execute("SELECT subject_id, text, input_ids FROM token_sequences WHERE cohort = ?", [PARTITION]).df()
    by_subject = seq.set_index("subject_id")
    rows = np.linspace(0, len(index) - 1, 12).astype(int)
    mine, theirs = [], []
    for i in rows:  # decision nodes and ACES times alike: the context text, tokenized by the exported tokenizer
        sid, end = index["subject_id"].iloc[i], int(index["context_end"].iloc[i])
        text = " ".join(by_subject.at[sid, "text"].split()[:end])
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == list(by_subject.at[sid, "input_ids"][:end])
        with torch.no_grad():
            cropped = crop_context(ids, len(ids), 64, int(index["header_end"].fillna(0).iloc[i])).tolist()
            h = model(input_ids=torch.tensor([cropped])).last_hidden_state[0, -1]
        mine.append(h.numpy())
        theirs.append(emb[i])
    np.testing.assert_allclose(np.stack(mine), np.stack(theirs), rtol=1e-4, atol=1e-4)
    # the model card's usage code, run as written on the longest of these contexts, gives the project's embedding
    card_code = ModelCard.load(out / "README.md").text.split("```python\n")[1].split("```")[0]
    longest = max(rows, key=lambda i: int(index["context_end"].iloc[i]))
    sid, end = index["subject_id"].iloc[longest], int(index["context_end"].iloc[longest])
    assert end > 64  # cropped: the header rule is exercised
    scope = {"DIR": str(out), "text": " ".join(by_subject.at[sid, "text"].split()[:end])}
    with torch.no_grad():
        exec(card_code, scope)
    np.testing.assert_allclose(scope["embedding"].numpy(), emb[longest], rtol=1e-4, atol=1e-4)
    base = AutoModel.from_pretrained(str(art / "sft_checkpoint" / PARTITION / "base"), local_files_only=True).eval()
    with torch.no_grad():
        h0 = base(input_ids=torch.tensor([cropped])).last_hidden_state[0, -1].numpy()
    assert np.abs(h0 - theirs[-1]).max() > 1e-2  # the adapter changed what the base computes: merged, not dropped

    card = ModelCard.load(out / "README.md")
    log = json.loads((art / "sft_checkpoint" / PARTITION / "train_log.json").read_text())
    seen = sum(log["tokens_seen"].values())  # per loss
    assert seen > 0 and f"tokens seen in all: {seen:,}" in card.text
    assert "Steps in all: 6" in card.text and "synthetic" in card.text
    results = {(r.metric_type, r.task_name) for r in card.data.eval_results}
    assert ("roc_auc", "admission_mortality_1y") in results and ("c_index", "survival") in results
    assert ("roc_auc", "mortality within 365 days") in results  # each task its own model-index entry
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "feature-extraction"
    assert main([*argv, "--artifacts", str(art), "--warehouse", str(db)]) == 2  # never overwrites a folder


class FakeApiServer(BaseHTTPRequestHandler):
    """Records every request and answers 403 Forbidden, as an API server refusing the pod would."""

    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        FakeApiServer.requests.append((self.path, json.loads(body or b"{}")))
        msg = json.dumps(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403}
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        self.wfile.write(msg.encode())

    def log_message(self, *args):
        pass


def test_k8s_launcher_sends_the_training_pod_to_the_api_server(built, tmp_path):
    from ehr_assets.defs.resources import K8sLaunch, Trainer

    root, db, art, instance = built
    spec = yaml.safe_load((root / "models" / "sft.yaml").read_text())
    spec["compute"] = {"gpus": 2, "memory": "64Gi", "image": "registry.example/ehr:1", "shm": "8Gi"}
    (root / "models" / "sft.yaml").write_text(yaml.safe_dump(spec))
    server = HTTPServer(("127.0.0.1", 0), FakeApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    cluster = {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "fake",
            }
        )
    )
    k8s = K8sLaunch(
        namespace="ml", artifact_claim="ehr-artifacts", kubeconfig_file=str(kubeconfig), project_dir="/srv/p"
    )
    defs = build_definitions(root, warehouse_path=db, artifact_root=art, trainer=Trainer(launcher="k8s", k8s=k8s))
    ckpt = art / "sft_checkpoint" / PARTITION
    before = (ckpt / "adapter" / "adapter_model.safetensors").read_bytes()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("sft_checkpoint")})
    try:
        res = job.execute_in_process(partition_key=PARTITION, instance=instance, raise_on_error=False)
    finally:
        server.shutdown()
    assert not res.success and "403" in str(res.all_events)  # the cluster's refusal surfaces in the run
    (path, pod), *_ = FakeApiServer.requests
    assert path == "/api/v1/namespaces/ml/pods"
    (ctr,) = pod["spec"]["containers"]
    assert ctr["image"] == "registry.example/ehr:1" and pod["spec"]["restartPolicy"] == "Never"
    assert ctr["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "64Gi"}
    cmd = ctr["command"]
    assert cmd[:6] == ["accelerate", "launch", "--num_processes", "2", "-m", "ehr_assets.training"]
    args = dict(zip(cmd[6::2], cmd[7::2]))
    assert args["--recipe"] == "sft" and args["--project"] == "/srv/p" and args["--out"] == str(ckpt)
    assert args["--data"].startswith(str(ckpt.parent))  # the bundle sits under the mounted artifact root
    mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
    assert mounts == {"artifacts": str(art), "dshm": "/dev/shm"}
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["ehr-artifacts"]
    env = {e["name"] for e in ctr["env"]}
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "EHR_ARTIFACT_ROOT"} <= env
    assert pod["metadata"]["labels"]["ehr-assets/recipe"] == "sft"
    # refused before anything ran: the published checkpoint is untouched and the bundle is gone
    assert (ckpt / "adapter" / "adapter_model.safetensors").read_bytes() == before
    assert not list(ckpt.parent.glob(f".{PARTITION}.data-*"))
