"""The lineage on real-data formats, with real Dagster materializations and a real DuckDB file, in a tmp project:

* ``inspect``: a MEDS dataset written by another tool (3 shards, extra columns, shipped splits), ``kind: meds``;
* ``msk``: a cBioPortal study folder (5 known timeline types + 1 unknown, malformed rows), ``kind: cbioportal``;
* recipes: ``frozen_smb`` (objective frozen, smb_v1 text, a tiny Llama saved to a local folder) and ``sft_local``
  (SFT from the same local folder with its own tokenizer plus the delimiter tokens, delimited text).

inspect runs the whole job; msk runs the data lineage, the frozen recipe and the count baseline."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from ehr_assets.definitions import PIPELINE_JOB, build_definitions
from ehr_assets.text.contexts import crop_context
from ehr_assets.text.smb_v1 import smb_v1_text
from ehr_assets.text.tokenizers import encode, load_tokenizer_folder
from ehr_assets.warehouse import replace_partition

from ..conftest import run_checks
from ..real_data import CT_CODE, save_tiny_llama, write_cbioportal_study, write_meds_dataset


def make_project(root):
    for d in ("cohorts", "models", "probes"):
        (root / d).mkdir(parents=True)
    write_meds_dataset(root / "data" / "inspect_meds")
    write_cbioportal_study(root / "data" / "msk_study")
    save_tiny_llama(root / "backbones" / "tiny_llama")

    def w(rel, d):
        (root / rel).write_text(yaml.safe_dump(d, sort_keys=False))

    w(
        "cohorts/inspect.yaml",
        {
            "source": {"kind": "meds", "path": "data/inspect_meds"},
            "decision_nodes": {"codes": [CT_CODE], "max_per_subject": 2, "min_context_events": 3},
        },
    )
    w(
        "cohorts/msk.yaml",
        {
            "source": {"kind": "cbioportal", "path": "data/msk_study"},
            "decision_nodes": {
                "codes": ["DIAGNOSIS/.*", "TREATMENT/[^/]+/[^/]+"],
                "max_per_subject": 2,
                "min_context_events": 3,
            },
            "splits": {"train": 0.5, "tuning": 0.2, "held_out": 0.3, "seed": 1},
        },
    )
    w(
        "probes/mortality.yaml",
        {"kind": "binary", "outcome_codes": ["MEDS_DEATH"], "horizons_days": [365], "cohorts": ["inspect", "msk"]},
    )
    w(
        "probes/survival.yaml",
        {"kind": "survival", "outcome_codes": ["MEDS_DEATH"], "max_followup_days": 1825, "cohorts": ["inspect", "msk"]},
    )
    w(
        "models/frozen_smb.yaml",
        {
            "objective": "frozen",
            "format": "smb_v1",
            "backbone": {"architecture": "llama", "path": "backbones/tiny_llama"},
            "embedding": {"pool": "last", "max_tokens": 256},
        },
    )
    w(
        "models/sft_local.yaml",
        {
            "objective": "sft",
            "backbone": {"architecture": "llama", "path": "backbones/tiny_llama"},
            "lora": {"rank": 4, "alpha": 8},
            "training": {"steps": 3, "batch_size": 4, "seq_len": 64, "log_every": 1},
        },
    )
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realdata")
    root = make_project(tmp / "project")
    db = tmp / "warehouse.duckdb"
    defs = build_definitions(root, warehouse_path=db, artifact_root=tmp / "artifacts")
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def(PIPELINE_JOB)
        inspect = job.execute_in_process(partition_key="inspect", instance=instance, raise_on_error=False)
        msk_sel = dg.AssetSelection.assets(
            "cohort_events",
            "cohort_table",
            "subjects",
            "decision_nodes",
            "task_labels",
            "tokenizer",
            "token_sequences",
            "smb_v1_text",
            "frozen_smb_tokens",
            "frozen_smb_embeddings",
            "frozen_smb_probe_metrics",
            "count_baseline_probe_metrics",
        )
        msk_job = dg.Definitions.merge(
            defs,
            dg.Definitions(
                jobs=[
                    dg.define_asset_job(
                        "msk_lineage",
                        selection=msk_sel,
                        partitions_def=dg.StaticPartitionsDefinition(["inspect", "msk"]),
                    )
                ]
            ),
        )
        msk = msk_job.resolve_job_def("msk_lineage").execute_in_process(
            partition_key="msk", instance=instance, raise_on_error=False
        )
        yield {
            "root": root,
            "db": db,
            "art": tmp / "artifacts",
            "inspect": inspect,
            "msk": msk,
            "defs": defs,
            "instance": instance,
        }


def q(db, sql, params=None) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute(sql, params or []).df()


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_meds_partition_materializes_every_asset_and_check(run):
    res = run["inspect"]
    assert res.success
    assert {
        "cohort_events",
        "cohort_table",
        "subjects",
        "decision_nodes",
        "task_labels",
        "smb_v1_text",
        "frozen_smb_tokens",
        "frozen_smb_embeddings",
        "frozen_smb_probe_metrics",
        "sft_local_tokens",
        "sft_local_checkpoint",
        "sft_local_embeddings",
        "sft_local_probe_metrics",
        "count_baseline_probe_metrics",
    } <= _materialized(res)
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in res.get_asset_check_evaluations()}
    assert (
        checks[("frozen_smb_tokens", "no_future_in_context")] and checks[("sft_local_tokens", "no_future_in_context")]
    )
    assert checks[("cohort_events", "meds_schema")] and checks[("frozen_smb_embeddings", "not_collapsed")]
    assert all(checks.values()), checks


def test_meds_extra_columns_and_shipped_splits_flow_through(run):
    db, root = run["db"], run["root"]
    ev = q(db, "SELECT * FROM cohort_table WHERE cohort = 'inspect'")
    assert {"table", "unit", "visit_id", "clarity_table"} <= set(ev.columns) and ev["subject_id"].nunique() == 60
    assert set(ev.loc[ev["code"] == "LOINC/2160-0", "unit"]) == {"mg/dL"}
    subj = q(db, "SELECT subject_id, split FROM subjects WHERE cohort = 'inspect'")
    shipped = pq.read_table(root / "data" / "inspect_meds" / "metadata" / "subject_splits.parquet").to_pandas()
    assert dict(zip(subj["subject_id"], subj["split"])) == dict(zip(shipped["subject_id"], shipped["split"]))
    meta = run["inspect"].asset_materializations_for_node("cohort_events")[0].metadata
    assert meta["source[inspect]"].value["shards"] == 3
    assert meta["source[inspect]"].value["splits_from"] == "metadata/subject_splits.parquet"


def test_frozen_contexts_are_exactly_the_released_layout(run):
    """A node's context = smb_v1_text(events at or before it), tokenized on its own; its embedding = the local
    model's final hidden state at the last context token."""
    db, art = run["db"], run["art"]
    ev = q(db, "SELECT * FROM cohort_table WHERE cohort = 'inspect'")
    ev["time"] = ev["time"].astype("datetime64[us]")
    ctx = q(
        db,
        "SELECT * FROM recipe_node_contexts WHERE cohort = 'inspect' AND tokens_asset = 'frozen_smb_tokens' "
        "ORDER BY subject_id, prediction_time",
    )
    texts = q(db, "SELECT subject_id, text FROM smb_v1_text WHERE cohort = 'inspect'").set_index("subject_id")["text"]
    tok = load_tokenizer_folder(art / "frozen_smb_tokens" / "inspect")
    assert (
        len(ctx) >= 60
        and json.loads((art / "frozen_smb_tokens" / "inspect" / "tokenization.json").read_text())["added_tokens"] == []
    )
    for r in ctx.head(12).itertuples():
        expected = smb_v1_text(
            ev[ev["subject_id"] == r.subject_id].drop(columns=["cohort"]), end_time=r.prediction_time
        )
        assert texts[r.subject_id][: r.context_char_end] == expected
        assert list(r.context_ids) == encode(tok, [expected], "smb_v1")[0].tolist()
        assert expected.endswith(CT_CODE) or f"\n{CT_CODE}\n" in expected
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    emb = load_file(str(art / "frozen_smb_embeddings" / "inspect" / "embeddings.safetensors"))["embeddings"]
    index = pd.read_parquet(art / "frozen_smb_embeddings" / "inspect" / "index.parquet")
    assert emb.shape == (len(ctx), 32) and list(index["subject_id"]) == list(ctx["subject_id"])
    model = AutoModelForCausalLM.from_pretrained(str(run["root"] / "backbones" / "tiny_llama"), local_files_only=True)
    with torch.no_grad():
        for i in (0, len(ctx) - 1):
            c = ctx["context_ids"].iloc[i]  # cropped to embedding.max_tokens by the shared rule (header, then recent)
            ids = torch.tensor(crop_context(c, len(c), 256, ctx["n_header_tokens"].iloc[i]), dtype=torch.long)[None]
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1].numpy()
            np.testing.assert_allclose(emb[i], h, atol=1e-4, rtol=0)


def test_probe_metrics_for_frozen_and_local_recipes(run):
    m = q(run["db"], "SELECT * FROM probe_metrics")
    for cohort, recipes in (
        ("inspect", {"frozen_smb", "sft_local", "count_baseline"}),
        ("msk", {"frozen_smb", "count_baseline"}),
    ):
        got = m[m["cohort"] == cohort]
        assert set(got["recipe"]) == recipes
        for recipe in recipes:
            r = got[got["recipe"] == recipe]
            assert set(zip(r["task"], r["metric"])) >= {("mortality", "auroc"), ("survival", "c_index")}
            vals = r.loc[r["metric"].isin(["auroc", "c_index"]), "value"]
            assert vals.notna().all() and vals.between(0, 1).all()


def test_local_backbone_trains_with_its_own_tokenizer(run):
    art, root = run["art"], run["root"]
    ck = art / "sft_local_checkpoint" / "inspect"
    base = json.loads((ck / "base.json").read_text())
    n_own = len(load_tokenizer_folder(root / "backbones" / "tiny_llama"))
    tok = load_tokenizer_folder(ck / "tokenizer")
    assert base["path"] == str((root / "backbones" / "tiny_llama").resolve()) and base["resized"] is True
    assert base["vocab_size"] == len(tok) > n_own and "<conditions>" in tok.get_vocab()
    seq = q(
        run["db"], "SELECT * FROM recipe_token_sequences WHERE cohort = 'inspect' AND tokens_asset = 'sft_local_tokens'"
    )
    words = q(run["db"], "SELECT subject_id, text FROM token_sequences WHERE cohort = 'inspect'")
    row = seq.iloc[0]
    text = words.set_index("subject_id").loc[row["subject_id"], "text"]
    assert tok.decode(row["input_ids"]).replace(" ", "") == text.replace(" ", "")  # same delimited text
    assert max(max(x) for x in seq["input_ids"]) >= n_own  # delimiter tokens are in use


def test_cbioportal_partition_converts_and_materializes(run):
    res = run["msk"]
    assert res.success and {"cohort_events", "task_labels", "smb_v1_text", "frozen_smb_probe_metrics"} <= _materialized(
        res
    )
    assert all(e.passed for e in res.get_asset_check_evaluations())
    meta = res.asset_materializations_for_node("cohort_events")[0].metadata
    assert meta["source[msk] malformed_rows_total"].value == 4
    table = meta["source[msk] malformed rows"].value
    assert "| data_timeline_cea_labs.txt | START_DATE is not an integer day | 1 |" in table
    ev = q(run["db"], "SELECT * FROM cohort_table WHERE cohort = 'msk'")
    assert ev["patient_id"].nunique() == 60 and set(ev["table"].dropna()) == {
        "person",
        "condition",
        "drug_exposure",
        "lab",
        "observation",
        "measurement",
        "death",
    }
    nodes = q(run["db"], "SELECT node_code FROM decision_nodes WHERE cohort = 'msk'")
    assert (
        nodes["node_code"].str.startswith("DIAGNOSIS/").sum() > 0
        and nodes["node_code"].str.startswith("TREATMENT/").sum() > 0
    )
    text = q(run["db"], "SELECT text FROM smb_v1_text WHERE cohort = 'msk' LIMIT 1")["text"].iloc[0]
    assert text.startswith("Birth: ") and "\n\n\n[" in text and "LAB_TEST/CEA (ng/ml): " in text


def test_a_context_reading_past_its_node_fails_the_recipe_leakage_check(run):
    db, where = run["db"], {"cohort": "inspect", "tokens_asset": "frozen_smb_tokens"}
    with duckdb.connect(str(db)) as c:
        ctx = c.execute(
            "SELECT * FROM recipe_node_contexts WHERE cohort = 'inspect' AND tokens_asset = 'frozen_smb_tokens'"
        ).df()
        leaky = ctx.copy()
        leaky.loc[leaky.index[:4], "context_char_end"] = leaky.loc[leaky.index[:4], "n_chars"]  # the whole text
        replace_partition(c, "recipe_node_contexts", leaky, where)
    try:
        res = run_checks(run["defs"], run["instance"], "frozen_smb_tokens", "inspect")
        [e] = res.get_asset_check_evaluations()
        assert e.passed is False
        assert f"4 of {len(ctx)} decision nodes read events after their prediction time" in e.metadata["problems"].value
    finally:
        with duckdb.connect(str(db)) as c:
            replace_partition(c, "recipe_node_contexts", ctx, where)


def test_context_ids_holding_later_tokens_fail_the_recipe_leakage_check(run):
    """The offsets may be right while the ids a model reads are not: a node whose context_ids carry the tokens of
    the whole timeline (later events included) fails the same blocking check."""
    db, where = run["db"], {"cohort": "inspect", "tokens_asset": "frozen_smb_tokens"}
    with duckdb.connect(str(db)) as c:
        ctx = c.execute(
            "SELECT * FROM recipe_node_contexts WHERE cohort = 'inspect' AND tokens_asset = 'frozen_smb_tokens'"
        ).df()
        full = (
            c.execute(
                "SELECT subject_id, input_ids FROM recipe_token_sequences WHERE cohort = 'inspect' AND "
                "tokens_asset = 'frozen_smb_tokens'"
            )
            .df()
            .set_index("subject_id")["input_ids"]
        )
        leaky = ctx.copy()
        for i in leaky.index[:3]:
            leaky.at[i, "context_ids"] = [int(x) for x in full[leaky.at[i, "subject_id"]]]
        replace_partition(c, "recipe_node_contexts", leaky, where)
    try:
        res = run_checks(run["defs"], run["instance"], "frozen_smb_tokens", "inspect")
        [e] = res.get_asset_check_evaluations()
        assert e.passed is False
        text = e.metadata["problems"].value
        assert f"3 of {len(ctx)} decision nodes' context_ids are not their context text's tokens" in text
        assert "read events after their prediction time" not in text  # the offsets were left right
    finally:
        with duckdb.connect(str(db)) as c:
            replace_partition(c, "recipe_node_contexts", ctx, where)


def test_exported_predictions_are_read_and_scored_by_meds_evaluation(run, tmp_path):
    """Every prediction file passes meds-evaluation's own PredictionSchema with nothing to cast, and its CLI
    (``meds-evaluation-cli``) scores one file per recipe kind (a trained LoRA recipe, a frozen released-layout
    model, the count baseline) to exactly the AUROC in ``probe_metrics``. Survival tasks have no meds-evaluation
    scorer; their label files pass ``meds.LabelSchema``."""
    import subprocess
    import sys
    from pathlib import Path

    import meds
    from meds_evaluation.schema import PredictionSchema

    root = run["art"] / "prediction_files" / "inspect"
    files = sorted(root.glob("*/*.parquet"))
    assert {p.parent.name for p in files} == {"frozen_smb", "sft_local", "count_baseline"}
    for path in files:
        table = pq.read_table(path)
        PredictionSchema.validate(table)
        assert PredictionSchema.align(table).schema == table.schema
    auroc = q(
        run["db"], "SELECT recipe, value FROM probe_metrics WHERE cohort = 'inspect' AND metric = 'auroc'"
    ).set_index("recipe")["value"]
    cli = Path(sys.executable).parent / "meds-evaluation-cli"
    for recipe in ("sft_local", "frozen_smb", "count_baseline"):
        out = tmp_path / f"{recipe}.json"
        pred = root / recipe / "mortality_365d.parquet"
        done = subprocess.run(
            [str(cli), f"predictions_path={pred}", f"output_file={out}"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        scored = json.loads(out.read_text())["samples_equally_weighted"]
        assert scored["roc_auc_score"] == pytest.approx(auroc[recipe], abs=1e-12), recipe
        assert {"binary_accuracy", "f1_score", "brier_score", "calibration_error"} <= set(scored)
    meds.LabelSchema.validate(pq.read_table(run["art"] / "label_files" / "inspect" / "survival.parquet"))


def test_every_warehouse_table_and_column_is_declared(run):
    """The column types of every table the graph wrote come from ehr_assets/warehouse_schema.py."""
    from ehr_assets.warehouse_schema import TABLES, undeclared

    with duckdb.connect(str(run["db"]), read_only=True) as c:
        tables = [r[0] for r in c.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        described = {t: {r[0]: r[1] for r in c.execute(f'DESCRIBE "{t}"').fetchall()} for t in tables}
    assert len(tables) >= 12
    for t, cols in described.items():
        assert undeclared(t, cols) == [], t
        assert {c: cols[c] for c in TABLES[t].columns} == TABLES[t].columns, t
