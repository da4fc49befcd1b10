"""Test fixtures in the formats real data arrive in, written from the documented formats (REFERENCE.md):

* :func:`write_meds_dataset` -- an INSPECT-like MEDS dataset as another ETL would write it: nested ``data/``
  shards, float64 values, timestamp[ns] times, plain (not large) strings, a dictionary-encoded ``table``, extra
  columns ``unit``, ``visit_id`` and ``clarity_table``, static (null-time) gender rows, ``metadata/``.
* :func:`write_cbioportal_study` -- an MSK-CHORD-like cBioPortal study: ``#`` header lines in the patient file,
  five timeline files (diagnosis, treatment, CEA labs, progression, ECOG performance status), one file of an
  unknown event type with extra columns, and a few malformed rows.
* :func:`save_tiny_llama` -- a tiny Llama saved with ``save_pretrained`` plus a byte-level BPE tokenizer trained
  offline on a few lines, in one folder (a stand-in for a local HF checkpoint; nothing is downloaded).

Everything is generated from a seeded RNG; outcomes depend on the history so probes have signal to find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CT_CODE = "CPT4/71275"
PE_CODE = "SNOMED/59282003"
PH_CODE = "SNOMED/70995007"


# ----------------------------------------------------------------------------------------------------------- MEDS
def inspect_like_events(n_subjects: int = 60, seed: int = 7, id_start: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_subjects):
        sid = id_start + k
        birth = pd.Timestamp("1940-01-01") + pd.Timedelta(days=int(rng.integers(0, 365 * 40)))
        risk = float(rng.normal())
        rows.append((sid, birth, "MEDS_BIRTH", None, None, "person", None, None, "PATIENT"))
        rows.append(
            (sid, None, "GENDER/" + ("F" if rng.random() < 0.5 else "M"), None, None, "person", None, None, "PATIENT")
        )  # a static row
        t = pd.Timestamp("2012-01-01") + pd.Timedelta(days=int(rng.integers(0, 900)))
        for v in range(int(rng.integers(2, 5))):
            t += pd.Timedelta(days=int(rng.integers(5, 120)), hours=int(rng.integers(8, 17)))
            vid = sid * 100 + v
            rows.append((sid, t, "Visit/OP", None, None, "observation", None, vid, "ENC"))
            rows.append(
                (
                    sid,
                    t + pd.Timedelta(minutes=30),
                    "LOINC/2160-0",
                    0.8 + 0.25 * risk + 0.1 * rng.normal(),
                    None,
                    "measurement",
                    "mg/dL",
                    vid,
                    "LAB",
                )
            )
            if rng.random() < 0.4:
                rows.append(
                    (
                        sid,
                        t + pd.Timedelta(minutes=40),
                        "LOINC/8867-4",
                        float(rng.integers(55, 120)),
                        None,
                        "measurement",
                        "/min",
                        vid,
                        "VITALS",
                    )
                )
            if rng.random() < 0.3:
                rows.append(
                    (
                        sid,
                        t + pd.Timedelta(minutes=45),
                        "NOTE/TRIAGE",
                        None,
                        "dyspnea" if risk > 0 else "chest pain",
                        "note",
                        None,
                        vid,
                        "NOTE",
                    )
                )
        # index: CT pulmonary angiography, PE diagnosis the same day
        t += pd.Timedelta(days=int(rng.integers(10, 60)), hours=3)
        rows.append((sid, t, CT_CODE, None, None, "procedure", None, sid * 100 + 9, "ORDER_PROC"))
        if rng.random() < 0.6:
            rows.append((sid, t + pd.Timedelta(hours=2), PE_CODE, None, None, "condition", None, sid * 100 + 9, "DX"))
            rows.append(
                (
                    sid,
                    t + pd.Timedelta(hours=3),
                    "RxNorm/1364430",
                    None,
                    None,
                    "drug_exposure",
                    None,
                    sid * 100 + 9,
                    "MED",
                )
            )
        # follow-up and outcomes
        end = t + pd.Timedelta(days=int(rng.integers(200, 800)))
        dies = rng.random() < 1 / (1 + np.exp(-(1.5 * risk - 0.3)))
        death_t = t + pd.Timedelta(days=int(rng.integers(20, 400))) if dies else None
        f = t + pd.Timedelta(days=int(rng.integers(15, 60)))
        while f < end and (death_t is None or f < death_t):
            rows.append((sid, f, "Visit/OP", None, None, "observation", None, None, "ENC"))
            rows.append(
                (
                    sid,
                    f + pd.Timedelta(minutes=20),
                    "LOINC/2160-0",
                    0.9 + 0.3 * risk,
                    None,
                    "measurement",
                    "mg/dL",
                    None,
                    "LAB",
                )
            )
            if risk > 0.8 and rng.random() < 0.5:
                rows.append((sid, f + pd.Timedelta(hours=1), PH_CODE, None, None, "condition", None, None, "DX"))
            f += pd.Timedelta(days=int(rng.integers(30, 120)))
        if death_t is not None:
            rows.append((sid, death_t, "MEDS_DEATH", None, None, "death", None, None, "DEATH"))
    df = pd.DataFrame(
        rows,
        columns=[
            "subject_id",
            "time",
            "code",
            "numeric_value",
            "text_value",
            "table",
            "unit",
            "visit_id",
            "clarity_table",
        ],
    )
    df["_static"] = df["time"].isna()
    df = df.sort_values(["subject_id", "time"], kind="stable", na_position="first").drop(columns="_static")
    return df.reset_index(drop=True)


def _strs(s: pd.Series) -> list:
    return [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in s]


def _arrow(df: pd.DataFrame) -> pa.Table:
    """As another tool might type it: ns timestamps, float64, plain strings, dictionary-encoded ``table``."""
    return pa.table(
        {
            "subject_id": pa.array(df["subject_id"].to_numpy(np.int64)),
            "time": pa.array(pd.to_datetime(df["time"]).astype("datetime64[ns]").to_numpy(), pa.timestamp("ns")),
            "code": pa.array(_strs(df["code"]), pa.string()),
            "numeric_value": pa.array(
                [None if v is None or v != v else float(v) for v in df["numeric_value"]], pa.float64()
            ),
            "text_value": pa.array(_strs(df["text_value"]), pa.string()),
            "table": pa.array(_strs(df["table"]), pa.string()).dictionary_encode(),
            "unit": pa.array(_strs(df["unit"]), pa.string()),
            "visit_id": pa.array([None if v is None or v != v else int(v) for v in df["visit_id"]], pa.int64()),
            "clarity_table": pa.array(_strs(df["clarity_table"]), pa.string()),
        }
    )


def write_meds_dataset(root: Path, events: pd.DataFrame | None = None, *, splits: bool = True) -> Path:
    """Three shards in nested folders, subjects never split across shards, plus metadata/."""
    events = inspect_like_events() if events is None else events
    root = Path(root)
    ids = np.sort(events["subject_id"].unique())
    groups = {
        "data/train/0.parquet": ids[: len(ids) // 3],
        "data/train/1.parquet": ids[len(ids) // 3 : 2 * len(ids) // 3],
        "data/held_out/0.parquet": ids[2 * len(ids) // 3 :],
    }
    for rel, g in groups.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_arrow(events[events["subject_id"].isin(g)]), root / rel)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    codes = sorted(events["code"].unique())
    pq.write_table(
        pa.table({"code": codes, "description": [f"desc {c}" for c in codes], "parent_codes": [[] for _ in codes]}),
        root / "metadata" / "codes.parquet",
    )
    (root / "metadata" / "dataset.json").write_text(
        json.dumps(
            {
                "dataset_name": "inspect_like",
                "dataset_version": "0.1",
                "etl_name": "another_tool",
                "etl_version": "9",
                "meds_version": "0.4.1",
            }
        )
    )
    if splits:
        rng = np.random.default_rng(3)
        perm = rng.permutation(ids)
        n_tr, n_tu = int(0.6 * len(ids)), int(0.15 * len(ids))
        split = {
            int(s): ("train" if i < n_tr else "tuning" if i < n_tr + n_tu else "held_out") for i, s in enumerate(perm)
        }
        pq.write_table(
            pa.table({"subject_id": pa.array(list(split), pa.int64()), "split": list(split.values())}),
            root / "metadata" / "subject_splits.parquet",
        )
    return root


# ----------------------------------------------------------------------------------------------------- cBioPortal
PATIENT_HEADER = [
    "#Patient Identifier\tSex\tRace\tCurrent Age\tOverall Survival Status\tOverall Survival (Months)\tStage",
    "#Identifier to uniquely specify a patient.\tSex\tRace\tAge\tOS status\tOS months\tStage",
    "#STRING\tSTRING\tSTRING\tNUMBER\tSTRING\tNUMBER\tSTRING",
    "#1\t1\t1\t1\t1\t1\t1",
    "PATIENT_ID\tGENDER\tRACE\tCURRENT_AGE_DEID\tOS_STATUS\tOS_MONTHS\tSTAGE_HIGHEST_RECORDED",
]


def write_cbioportal_study(root: Path, n_patients: int = 60, seed: int = 11) -> Path:
    """An MSK-CHORD-like study folder; returns it. Malformed rows: 4 (see the test for which)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pat = list(PATIENT_HEADER)
    dx = ["PATIENT_ID\tSTART_DATE\tSTOP_DATE\tEVENT_TYPE\tSUBTYPE\tSOURCE\tDX_DESCRIPTION\tAJCC\tSUMMARY"]
    tx = ["PATIENT_ID\tSTART_DATE\tSTOP_DATE\tEVENT_TYPE\tTREATMENT_TYPE\tAGENT\tSUBTYPE\tRX_INVESTIGATIVE"]
    lab = ["PATIENT_ID\tSTART_DATE\tSTOP_DATE\tEVENT_TYPE\tSUBTYPE\tSOURCE\tTEST\tLR_UNIT_MEASURE\tRESULT"]
    prog = ["PATIENT_ID\tSTART_DATE\tSTOP_DATE\tEVENT_TYPE\tSUBTYPE\tSOURCE\tPROGRESSION\tPROGRESSION_PROBABILITY"]
    ps = ["PATIENT_ID\tSTART_DATE\tSTOP_DATE\tEVENT_TYPE\tSUBTYPE\tSOURCE\tECOG_KPS"]
    other = ["PATIENT_ID\tSTART_DATE\tSTOP_DATE\tEVENT_TYPE\tSUBTYPE\tSOME_EXTRA\tANOTHER"]
    agents = ["CARBOPLATIN", "PEMETREXED", "PEMBROLIZUMAB", "OSIMERTINIB"]
    for k in range(n_patients):
        pid = f"P-{k:07d}"
        risk = float(rng.normal())
        age = int(rng.integers(40, 85))
        dead = rng.random() < 1 / (1 + np.exp(-(1.4 * risk)))
        os_m = round(float(rng.uniform(3, 40)), 2)
        pat.append(
            f"{pid}\t{'Female' if rng.random() < 0.5 else 'Male'}\t{rng.choice(['WHITE', 'ASIAN', 'BLACK'])}"
            f"\t{age}\t{'1:DECEASED' if dead else '0:LIVING'}\t{os_m}\tStage {rng.integers(1, 5)}"
        )
        last = int(os_m * 30.4)
        dx.append(
            f"{pid}\t0\t\tDiagnosis\tPrimary\tTumor Registry\tADENOCARCINOMA, NOS | LUNG"
            f"\tStage {'IV' if risk > 0 else 'II'}"
            "\tnote"
        )
        ps.append(f"{pid}\t{int(rng.integers(-20, 0))}\t\tPERFORMANCE_STATUS\tECOG\tEHR\t{1 if risk > 0 else 0}")
        for _ in range(int(rng.integers(2, 5))):
            d = int(rng.integers(-30, max(last - 5, 1)))
            lab.append(f"{pid}\t{d}\t\tLAB_TEST\tCEA\tEHR\tCEA\tng/ml\t{max(0.1, 3 + 4 * risk + rng.normal()):.1f}")
        start = int(rng.integers(5, 40))
        for _line in range(int(rng.integers(1, 3))):
            stop = start + int(rng.integers(30, 150))
            if stop >= last:
                break
            tx.append(f"{pid}\t{start}\t{stop}\tTreatment\tMedical Therapy\t{rng.choice(agents)}\tChemo\tN")
            if risk > 0.2 and rng.random() < 0.7 and stop + 10 < last:
                prog.append(f"{pid}\t{stop + 10}\t\tPROGRESSION\tImaging\tNLP\tY\t0.9")
            elif stop + 10 < last:
                prog.append(f"{pid}\t{stop + 10}\t\tPROGRESSION\tImaging\tNLP\tN\t0.2")
            start = stop + 20
        if k % 3 == 0:
            other.append(f"{pid}\t{int(rng.integers(0, 30))}\t\tGENETIC_COUNSELING\tVisit\tx\ty")
    # malformed rows: a non-integer date, an unknown patient, a short row, a stop before start
    lab.append("P-0000001\tabc\t\tLAB_TEST\tCEA\tEHR\tCEA\tng/ml\t2.0")
    lab.append("P-9999999\t10\t\tLAB_TEST\tCEA\tEHR\tCEA\tng/ml\t2.0")
    tx.append("P-0000002\t50")
    tx.append("P-0000003\t60\t40\tTreatment\tMedical Therapy\tCARBOPLATIN\tChemo\tN")
    files = {
        "data_clinical_patient.txt": pat,
        "data_timeline_diagnosis.txt": dx,
        "data_timeline_treatment.txt": tx,
        "data_timeline_cea_labs.txt": lab,
        "data_timeline_progression.txt": prog,
        "data_timeline_performance_status.txt": ps,
        "data_timeline_genetic_counseling.txt": other,
    }
    for name, lines in files.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return root


# -------------------------------------------------------------------------------------------------- tiny backbone
CORPUS = [
    "Birth: 1960-01-01\nGENDER/F\n\n\n[2015-01-01]\nLOINC/2160-0 (mg/dL): 0.85, 1.12\nSNOMED/59282003\nCPT4/71275",
    "[2016-03-04]\nDIAGNOSIS/Primary/ADENOCARCINOMA, NOS | LUNG\nTREATMENT/Chemo/CARBOPLATIN\n"
    "LAB_TEST/CEA (ng/ml): 3.40",
    "PROGRESSION/Y\nPERFORMANCE_STATUS/ECOG: 1.00\nMEDS_DEATH\nVisit/OP\nNOTE/TRIAGE: dyspnea, chest pain",
    "ICD10/C34.90 RxNorm/1364430 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ ()[]:,./-|_",
]


def save_tiny_llama(folder: Path, *, hidden: int = 32, vocab: int = 320, seed: int = 0) -> Path:
    """A 1-layer Llama and its own byte-level BPE tokenizer (with BOS/EOS, no pad), saved to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=2 * hidden,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(folder), safe_serialization=True)
    return folder
