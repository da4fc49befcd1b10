"""ehr_assets.data.sources: MEDS datasets written by another tool and cBioPortal study folders, read into MEDS events;
bad input refused with the file and the column or line named."""

from __future__ import annotations

import json
import shutil

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ehr_assets.data.sources import SourceError, read_cbioportal, read_meds, subject_id_of
from ehr_assets.specs import CbioportalSource, CohortSpec, MedsSource, SpecError, load_spec

from ..real_data import CT_CODE, inspect_like_events, write_cbioportal_study, write_meds_dataset


def meds_src(path, **kw) -> MedsSource:
    return MedsSource(kind="meds", path=str(path), **kw)


def cbio_src(path, **kw) -> CbioportalSource:
    return CbioportalSource(kind="cbioportal", path=str(path), **kw)


@pytest.fixture(scope="module")
def meds_dir(tmp_path_factory):
    return write_meds_dataset(tmp_path_factory.mktemp("meds") / "ds")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_cbioportal_study(tmp_path_factory.mktemp("cbio") / "study")


# ----------------------------------------------------------------------------------------------------------- MEDS
def test_meds_dataset_with_shards_extra_columns_static_rows_and_splits(meds_dir):
    src_events = inspect_like_events()
    data = read_meds(meds_src(meds_dir))
    ev = data.events
    assert len(ev) == len(src_events) and ev["subject_id"].nunique() == 60
    # types aligned to the MEDS DataSchema; the extra columns kept, integer extras without float rounding
    assert ev["time"].dtype == "datetime64[us]" and ev["numeric_value"].dtype == "float32"
    assert {"table", "unit", "visit_id", "clarity_table"} <= set(ev.columns)
    assert str(ev["visit_id"].dtype) == "Int64" and int(ev["visit_id"].max()) == int(src_events["visit_id"].max())
    assert set(ev["table"].dropna()) == {
        "person",
        "observation",
        "measurement",
        "note",
        "procedure",
        "condition",
        "drug_exposure",
        "death",
    }
    # every static gender row is placed at its subject's birth time, right after the birth row
    s = ev[ev["subject_id"] == 100]
    assert list(s["code"].iloc[:2]) == ["MEDS_BIRTH", "GENDER/M"] and s["time"].iloc[0] == s["time"].iloc[1]
    assert ev["time"].notna().all() and data.report["static_rows_placed"] == 60
    assert (ev.groupby("subject_id")["time"].apply(lambda t: t.is_monotonic_increasing)).all()
    # the shipped splits
    shipped = pq.read_table(meds_dir / "metadata" / "subject_splits.parquet").to_pandas()
    pd.testing.assert_frame_equal(
        data.splits.sort_values("subject_id").reset_index(drop=True),
        shipped.sort_values("subject_id").reset_index(drop=True),
    )
    rep = data.report
    assert rep["shards"] == 3 and rep["dataset_name"] == "inspect_like" and rep["codes_missing_from_metadata"] == 0
    assert rep["splits_from"] == "metadata/subject_splits.parquet"
    # what the ETL wrote (float64) and what is read (float32) agree to float32 precision
    lab = ev[ev["code"] == "LOINC/2160-0"]["numeric_value"].to_numpy()
    want = src_events[src_events["code"] == "LOINC/2160-0"]["numeric_value"].astype("float32").to_numpy()
    np.testing.assert_array_equal(np.sort(lab), np.sort(want))


def test_meds_options_and_missing_metadata(meds_dir, tmp_path):
    d = read_meds(meds_src(meds_dir, subject_splits=False, max_subjects=10))
    assert d.splits is None and sorted(d.events["subject_id"].unique()) == list(range(100, 110))
    bare = tmp_path / "bare"
    shutil.copytree(meds_dir / "data", bare / "data")
    d = read_meds(meds_src(bare))
    assert d.splits is None and "no metadata/ folder" in d.report["splits_from"]


def _shard(path, **cols):
    base = {
        "subject_id": pa.array([1, 1], pa.int64()),
        "time": pa.array([0, 86_400_000_000], pa.timestamp("us")),
        "code": pa.array(["A", "B"]),
        "numeric_value": pa.array([1.0, None], pa.float32()),
    }
    base.update(cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({k: v for k, v in base.items() if v is not None}), path)


@pytest.mark.parametrize(
    "cols, message",
    [
        ({"code": None}, "missing required MEDS column 'code'"),
        ({"time": pa.array([1, 2], pa.int64())}, "column 'time' has type int64; MEDS wants timestamp[us]"),
        ({"subject_id": pa.array(["a", "b"])}, "column 'subject_id' has type string; MEDS wants int64"),
        ({"numeric_value": pa.array(["1.0", "x"])}, "column 'numeric_value' has type string; MEDS wants float"),
        ({"code": pa.array(["A", None])}, "Columns that should have no nulls but do: code"),
        ({"cohort": pa.array(["x", "y"])}, "column 'cohort' is reserved"),
    ],
)
def test_meds_bad_shard_names_file_and_column(tmp_path, cols, message):
    _shard(tmp_path / "ds" / "data" / "0.parquet")
    _shard(tmp_path / "ds" / "data" / "sub" / "1.parquet", **{"subject_id": pa.array([2, 2], pa.int64()), **cols})
    with pytest.raises(SourceError) as e:
        read_meds(meds_src(tmp_path / "ds"))
    assert str(tmp_path / "ds" / "data" / "sub" / "1.parquet") in str(e.value) and message in str(e.value)


def test_meds_subject_in_two_shards_and_bad_splits(tmp_path):
    _shard(tmp_path / "a" / "data" / "0.parquet")
    _shard(tmp_path / "a" / "data" / "1.parquet")
    with pytest.raises(SourceError, match=r"1\.parquet: subject_id 1 also occurs in .*0\.parquet"):
        read_meds(meds_src(tmp_path / "a"))
    _shard(tmp_path / "b" / "data" / "0.parquet")
    _shard(tmp_path / "b" / "data" / "1.parquet", subject_id=pa.array([2, 2], pa.int64()))
    sp = tmp_path / "b" / "metadata" / "subject_splits.parquet"
    sp.parent.mkdir(parents=True)
    pq.write_table(pa.table({"subject_id": pa.array([1], pa.int64()), "split": ["train"]}), sp)
    with pytest.raises(
        SourceError,
        match=r"subject_splits\.parquet: 1 subject\(s\) of data/ have no split "
        r"\(e\.g\. subject_id 2\)",
    ):
        read_meds(meds_src(tmp_path / "b"))
    pq.write_table(pa.table({"subject_id": pa.array([1, 2], pa.int64()), "split": ["train", "test"]}), sp)
    with pytest.raises(SourceError, match=r"split 'test' is not one of \['train', 'tuning', 'held_out'\]"):
        read_meds(meds_src(tmp_path / "b"))
    (tmp_path / "b" / "metadata" / "dataset.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"dataset\.json: not valid JSON"):
        read_meds(meds_src(tmp_path / "b"))
    with pytest.raises(SourceError, match="no parquet shards"):
        read_meds(meds_src(tmp_path / "b" / "metadata"))


# ----------------------------------------------------------------------------------------------------- cBioPortal
def test_cbioportal_study_to_meds_events(study):
    data = read_cbioportal(cbio_src(study))
    ev, rep = data.events, data.report
    meds.DataSchema.validate(
        meds.DataSchema.align(
            pa.Table.from_pandas(
                ev[["subject_id", "time", "code", "numeric_value", "text_value"]], preserve_index=False
            )
        )
    )
    assert rep["patients"] == 60 and ev["subject_id"].nunique() == 60 and data.splits is None
    p0 = ev[ev["patient_id"] == "P-0000000"]
    assert (p0["subject_id"] == subject_id_of("P-0000000")).all()
    # codes from EVENT_TYPE and the type's own columns; LAB_TEST RESULT as numeric_value with its unit
    types = {c.split("/")[0] for c in ev["code"]}
    assert {
        "DIAGNOSIS",
        "TREATMENT",
        "LAB_TEST",
        "PROGRESSION",
        "PERFORMANCE_STATUS",
        "GENETIC_COUNSELING",
        "MEDS_BIRTH",
        "MEDS_DEATH",
        "GENDER",
        "RACE",
    } == types
    lab = ev[ev["code"] == "LAB_TEST/CEA"]
    assert lab["numeric_value"].notna().all() and set(lab["unit"]) == {"ng/ml"} and set(lab["table"]) == {"lab"}
    tx = ev[ev["code"].str.startswith("TREATMENT/")]
    assert set(tx["table"]) == {"drug_exposure"} and "TREATMENT/Chemo/CARBOPLATIN" in set(tx["code"])
    assert tx["code"].str.endswith("/STOP").sum() == (~tx["code"].str.endswith("/STOP")).sum()  # start + stop
    assert "DIAGNOSIS/Primary/ADENOCARCINOMA, NOS | LUNG" in set(ev["code"])
    assert set(ev.loc[ev["code"] == "MEDS_DEATH", "table"]) == {"death"}
    # per-file counts; malformed rows counted per file and reason with their first line
    files = {f["file"]: f for f in rep["timeline_files"]}
    assert len(files) == 6 and files["data_timeline_genetic_counseling.txt"]["event_types"] == "GENETIC_COUNSELING"
    assert rep["unknown_event_types"] == {
        "GENETIC_COUNSELING": {"rows": 20, "columns": ["ANOTHER", "SOME_EXTRA", "SUBTYPE"]}
    }
    bad = {(r["file"], r["reason"]): (r["rows"], r["first_line"]) for r in rep["malformed_rows"]}
    lab_lines = (study / "data_timeline_cea_labs.txt").read_text().splitlines()
    assert bad == {
        ("data_timeline_cea_labs.txt", "START_DATE is not an integer day"): (1, len(lab_lines) - 1),
        ("data_timeline_cea_labs.txt", "PATIENT_ID not in the patient or sample files"): (1, len(lab_lines)),
        ("data_timeline_treatment.txt", "2 fields: the row ends before EVENT_TYPE"): (
            1,
            files["data_timeline_treatment.txt"]["rows"] + 0,
        ),
        ("data_timeline_treatment.txt", "STOP_DATE before START_DATE"): (
            1,
            files["data_timeline_treatment.txt"]["rows"] + 1,
        ),
    }
    assert rep["malformed_rows_total"] == 4


def test_cbioportal_anchor_birth_and_death_rules(study):
    ev = read_cbioportal(cbio_src(study, anchor_date="2010-06-01")).events
    pat = pd.read_csv(study / "data_clinical_patient.txt", sep="\t", comment="#")
    row = pat.iloc[0]
    e = ev[ev["patient_id"] == row["PATIENT_ID"]]
    day0 = pd.Timestamp("2010-06-01")
    # day 0 (diagnosis) is the anchor date; other days are offsets from it
    assert e.loc[e["code"].str.startswith("DIAGNOSIS/"), "time"].iloc[0] == day0
    # MSK-CHORD: CURRENT_AGE_DEID measured at last follow-up (OS_MONTHS after day 0)
    birth = e.loc[e["code"] == "MEDS_BIRTH", "time"].iloc[0]
    assert birth == day0 + pd.Timedelta(days=round(row["OS_MONTHS"] * 365.25 / 12 - row["CURRENT_AGE_DEID"] * 365.25))
    assert set(e.loc[e["table"] == "person", "time"]) == {birth}
    dead = pat[pat["OS_STATUS"] == "1:DECEASED"]
    deaths = ev[ev["code"] == "MEDS_DEATH"]
    assert len(deaths) == len(dead)
    r = dead.iloc[0]
    t = deaths.loc[deaths["patient_id"] == r["PATIENT_ID"], "time"].iloc[0]
    assert t == day0 + pd.Timedelta(days=round(r["OS_MONTHS"] * 365.25 / 12))
    assert (
        ev.groupby("subject_id").apply(
            lambda g: (
                g["time"].max() == g.loc[g["code"] == "MEDS_DEATH", "time"].max()
                if (g["code"] == "MEDS_DEATH").any()
                else True
            )
        )
    ).all()
    # age at the anchor instead
    ev2 = read_cbioportal(cbio_src(study, age_column="CURRENT_AGE_DEID", age_at="anchor")).events
    b2 = ev2.loc[(ev2["patient_id"] == row["PATIENT_ID"]) & (ev2["code"] == "MEDS_BIRTH"), "time"].iloc[0]
    assert b2 == pd.Timestamp("2000-01-01") - pd.Timedelta(days=round(row["CURRENT_AGE_DEID"] * 365.25))


def test_cbioportal_death_never_precedes_an_event_and_rules_override(tmp_path):
    s = tmp_path / "s"
    s.mkdir()
    (s / "data_clinical_patient.txt").write_text("PATIENT_ID\tSEX\tOS_STATUS\tOS_MONTHS\nA\tF\t1:DECEASED\t1.0\n")
    (s / "data_timeline_labs.txt").write_text(
        "PATIENT_ID\tSTART_DATE\tSTOP_DATE\tEVENT_TYPE\tTEST\tRESULT\tUNIT_X\n"
        "A\t-3\t\tlab_test\tHGB\t<0.5\tg/dL\nA\t45\t\tLAB_TEST\tHGB\t11.5\tg/dL\n"
    )
    data = read_cbioportal(
        cbio_src(
            s,
            event_types={
                "lab_test": {
                    "code_columns": ["TEST"],
                    "value_column": "RESULT",
                    "unit_column": "UNIT_X",
                    "table": "measurement",
                }
            },
        )
    )
    ev = data.events
    assert list(ev["code"]) == ["SEX/F", "LAB_TEST/HGB", "LAB_TEST/HGB", "MEDS_DEATH"]  # no age: no birth row
    assert ev["text_value"].iloc[1] == "<0.5" and np.isnan(ev["numeric_value"].iloc[1])
    assert ev["numeric_value"].iloc[2] == np.float32(11.5) and set(ev["unit"].iloc[1:3]) == {"g/dL"}
    assert set(ev["table"].iloc[1:3]) == {"measurement"}
    # death at 1 month (day 30) would precede the day-45 lab: moved to day 45, and counted
    assert ev["time"].iloc[3] == pd.Timestamp("2000-01-01") + pd.Timedelta(days=45)
    assert data.report["deaths_moved_to_last_event"] == 1 and data.report["birth_rule"] == "none (no age column)"


def test_cbioportal_errors_name_file_and_line(study, tmp_path):
    with pytest.raises(SourceError) as e:
        read_cbioportal(cbio_src(study, on_malformed="error"))
    assert "data_timeline_cea_labs.txt:" in str(e.value) and "START_DATE is not an integer day" in str(e.value)
    s = tmp_path / "s"
    shutil.copytree(study, s)
    (s / "data_timeline_progression.txt").write_text("PATIENT_ID\tSTOP_DATE\tEVENT_TYPE\nP-0000001\t\tPROGRESSION\n")
    with pytest.raises(
        SourceError,
        match=r"data_timeline_progression\.txt: missing required timeline column "
        r"'START_DATE'",
    ):
        read_cbioportal(cbio_src(s))
    (s / "data_clinical_patient.txt").unlink()
    with pytest.raises(SourceError, match=r"/s: no patient attributes: .*PATIENT_ATTRIBUTES.*data_clinical_patient"):
        read_cbioportal(cbio_src(s))
    with pytest.raises(SourceError, match="study folder not found"):
        read_cbioportal(cbio_src(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------------------- specs
def test_source_specs_validate_and_resolve_paths(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "source": {"kind": "cbioportal", "path": "x", "on_malformed": "ignore"},
                "decision_nodes": {"codes": ["X"]},
            }
        )
    )
    with pytest.raises(SpecError, match=r"c\.yaml: source\.on_malformed: Input should be 'report' or 'error'"):
        load_spec(f, CohortSpec)
    f.write_text("source: {kind: meds, path: data/x, max_subjects: ten}\ndecision_nodes: {codes: [X]}\n")
    with pytest.raises(SpecError, match=r"c\.yaml: source\.max_subjects: Input should be a valid integer"):
        load_spec(f, CohortSpec)
    # a relative path resolves against the project root, whatever the working directory
    from ehr_assets.specs import load_project

    root = tmp_path / "proj"
    for d in ("cohorts", "models", "probes"):
        (root / d).mkdir(parents=True)
    (root / "cohorts" / "inspect.yaml").write_text(
        f"source: {{kind: meds, path: data/inspect}}\ndecision_nodes: {{codes: ['{CT_CODE}']}}\n"
    )
    p = load_project(root)
    assert p.cohorts["inspect"].source.path == str((root / "data" / "inspect").resolve())
    json.dumps(p.cohorts["inspect"].model_dump(mode="json"))  # still plain data


def test_example_declarations_validate():
    """The README's bring-your-own-data examples are valid declarations."""
    from ehr_assets.specs import RecipeSpec

    from ..conftest import REPO

    inspect = load_spec(REPO / "examples" / "cohorts" / "inspect.yaml", CohortSpec)
    msk = load_spec(REPO / "examples" / "cohorts" / "msk.yaml", CohortSpec)
    assert inspect.source.kind == "meds" and msk.source.kind == "cbioportal"
    assert msk.source.anchor_date == "2000-01-01" and msk.source.event_types["TUMOR_MARKER"].value_column == "RESULT"
    frozen = load_spec(REPO / "examples" / "models" / "smb_v1_released.yaml", RecipeSpec)
    sft = load_spec(REPO / "examples" / "models" / "llama_sft.yaml", RecipeSpec)
    assert frozen.is_frozen and frozen.tokenization == ("smb_v1", "backbones/smb-v1-1.7b")
    assert sft.tokenization == ("delimited", "backbones/Llama-3.1-8B") and not sft.default_tokenization


def test_meds_shards_disagreeing_on_an_extra_column(tmp_path):
    _shard(tmp_path / "ds" / "data" / "0.parquet", visit=pa.array([1, 2], pa.int64()))
    _shard(tmp_path / "ds" / "data" / "1.parquet", subject_id=pa.array([2, 2], pa.int64()), visit=pa.array(["a", "b"]))
    with pytest.raises(SourceError, match=r"data: the shards disagree on a column's type"):
        read_meds(meds_src(tmp_path / "ds"))


def test_static_rows_sit_at_birth_not_at_the_first_event_and_without_birth_at_the_first():
    from ehr_assets.data.sources import place_static_rows

    t = pd.to_datetime(["2019-12-01", "2020-01-01", None, "2021-01-01", None]).astype("datetime64[us]")
    ev = pd.DataFrame(
        {
            "subject_id": [1, 1, 1, 2, 2],
            "time": t,
            "code": ["PRENATAL/ULTRASOUND", "MEDS_BIRTH", "GENDER/F", "VISIT", "GENDER/M"],
        }
    )
    out, placed, dropped = place_static_rows(ev)
    at = out.set_index("code")["time"]
    assert at["GENDER/F"] == pd.Timestamp("2020-01-01") and at["GENDER/M"] == pd.Timestamp("2021-01-01")
    assert (placed, dropped) == (2, 0) and list(out["code"]) == [
        "PRENATAL/ULTRASOUND",
        "MEDS_BIRTH",
        "GENDER/F",
        "VISIT",
        "GENDER/M",
    ]
