"""cBioPortal studies built as cBioPortal documents them (``tests/cbioportal_spec_data.py``), each loaded through
``dg.materialize`` into a real DuckDB warehouse: files found through meta files (``study_es_0``'s names, MSK-CHORD's
names) or by name, positional code segments, radiation as procedures, ``/STOP`` events kept out of decision nodes
unless asked, the common event types' informative columns, duplicated rows reported with file, line and PATIENT_ID,
patients without timeline rows counted."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ehr_assets.data.sources import SourceError, read_cbioportal, subject_id_of
from ehr_assets.specs import CbioportalSource

from ..cbioportal_spec_data import (
    CHORD,
    ES0,
    ES0_SAMPLE_ONLY,
    TREATMENT_ROWS,
    write_by_name_only,
    write_chord_like,
    write_es0_like,
)
from ..shape_project import ShapeProject, report, step_error

ANCHOR = pd.Timestamp("2000-01-01")
DATA = ("cohort_events", "cohort_table", "subjects", "decision_nodes")


def _cohort(path, codes, **source):
    return {
        "source": {"kind": "cbioportal", "path": str(path), **source},
        "decision_nodes": {"codes": codes, "max_per_subject": 5, "min_context_events": 1},
        "splits": {"train": 0.5, "tuning": 0.25, "held_out": 0.25, "seed": 1},
    }


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cbio_shapes")
    es0 = write_es0_like(tmp / "es0")
    chord = write_chord_like(tmp / "chord")
    strict = write_chord_like(tmp / "strict")
    by_name = write_by_name_only(tmp / "by_name")
    cohorts = {
        "es0": _cohort(es0, ["SPECIMEN/.*"]),
        "chord": _cohort(chord, ["TREATMENT/.*"]),
        "chord_stop": _cohort(chord, ["TREATMENT/.*/STOP"]),
        "strict": _cohort(strict, ["TREATMENT/.*"], on_malformed="error"),
        "by_name": _cohort(by_name, ["TREATMENT/[^/]*/[^/]*"]),
    }
    with dg.instance_for_test() as instance:
        yield ShapeProject(tmp / "project", cohorts, {}, instance=instance)


def _ok(result):
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def _events(studies, cohort):
    ev = studies.table("cohort_table", cohort)
    return ev.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)


def test_study_es_0_shapes_found_through_meta_files(studies):
    _ok(res := studies.materialize("es0", DATA))
    ev = _events(studies, "es0")
    # every PATIENT_ID of the patient and the sample files; the sample-only patient has its timeline events
    assert set(ev["patient_id"]) == {"TCGA-A1-A0SB", "TCGA-A2-A04P", "TCGA-A2-A0CM", "TCGA-BH-A18V", ES0_SAMPLE_ONLY}
    # a timeline without STOP_DATE, SPECIMEN coded by its suggested columns, a blank site keeping its slot
    spec = ev[ev["code"].str.startswith("SPECIMEN")]
    assert set(spec["code"]) == {
        "SPECIMEN/breast/tissue",
        "SPECIMEN/blood/blood",
        "SPECIMEN/lung/tissue",
        "SPECIMEN//tissue",
    }
    assert set(spec["table"]) == {"procedure"}
    psa = ev[ev["code"] == "LAB_TEST/PSA"]
    assert sorted(psa["numeric_value"].tolist()) == pytest.approx([4.2, 10.0]) and set(psa["table"]) == {"lab"}
    # DECEASED without the 1: prefix is a death; AGE is the age at diagnosis (day 0)
    a = ev[ev["patient_id"] == "TCGA-A1-A0SB"].set_index("code")["time"]
    assert a["MEDS_DEATH"] == ANCHOR + pd.Timedelta(days=round(31.77 * 365.25 / 12))
    assert a["MEDS_BIRTH"] == ANCHOR - pd.Timedelta(days=round(61 * 365.25))
    assert "NOISE" not in set(ev["code"])  # data_timeline_unlisted.txt: no meta file names it
    rep = report(res, "es0")
    assert rep["files_found_by"] == "meta files" and rep["cancer_study_identifier"] == ES0
    assert rep["patient_files"] == ["data_clinical_patients.txt"] and rep["patients_only_in_sample_files"] == 1
    assert rep["meta_files_not_read"] == ["meta_mutations_extended.txt", "meta_study.txt"]
    assert rep["data_files_without_meta_file"] == ["data_timeline_unlisted.txt"]
    assert rep["patients_without_timeline_rows"] == 1 and rep["patients_without_events"] == 0  # TCGA-A2-A0CM: birth
    assert len(studies.table("decision_nodes", "es0")) == 6  # one per patient and day: 2 + 2 + 1 + 1


def test_msk_chord_names_positional_codes_radiation_and_event_types(studies):
    _ok(res := studies.materialize("chord", DATA))
    ev = _events(studies, "chord")
    codes = set(ev["code"])
    assert {
        "TREATMENT/Chemo/CARBOPLATIN",
        "TREATMENT/Chemo/CARBOPLATIN/STOP",
        "TREATMENT/XRT/",  # no AGENT: the empty slot stays
        "TREATMENT/XRT//STOP",
        "TREATMENT//PEMBROLIZUMAB",  # no SUBTYPE: AGENT stays the third segment
        "TREATMENT/Targeted/OSIMERTINIB-PEMETREXED",  # a '/' inside a value cannot add a segment
        "TREATMENT/SBRT/",
        "IMAGING/CT/CT chest with contrast",
        "STATUS/Partial response",
        "SURGERY/Lobectomy",
        "DIAGNOSIS/Primary/ADENOCARCINOMA, NOS (LUNG)",
        "GENETIC_COUNSELING/Visit",
    } <= codes
    table = ev.drop_duplicates("code").set_index("code")["table"]
    assert table["TREATMENT/XRT/"] == table["TREATMENT/SBRT/"] == table["TREATMENT/XRT//STOP"] == "procedure"
    assert (
        table["TREATMENT/Chemo/CARBOPLATIN"] == "drug_exposure"
        and table["IMAGING/CT/CT chest with contrast"] == "procedure"
    )
    img = ev[ev["code"].str.startswith("IMAGING/")]
    assert img["text_value"].tolist() == ["Stable disease"]
    cea = ev[ev["code"] == "LAB_TEST/CEA"].set_index("patient_id")
    assert cea.loc["P-0000001", "numeric_value"] == np.float32(5.1) and cea.loc["P-0000003", "text_value"] == "<0.5"
    assert set(cea["unit"]) == {"ng/ml"}
    # decision nodes: TREATMENT/.* matches the starts, never a /STOP event (not asked for)
    nodes = studies.table("decision_nodes", "chord")
    assert len(nodes) == 5 and not nodes["node_code"].str.endswith("/STOP").any()
    rep = report(res, "chord")
    assert rep["files_found_by"] == "meta files" and rep["cancer_study_identifier"] == CHORD
    assert rep["patients_without_timeline_rows"] == 1 and rep["patients_without_events"] == 0
    assert rep["unknown_event_types"] == {"GENETIC_COUNSELING": {"rows": 1, "columns": ["COUNSELOR", "SUBTYPE"]}}
    # the duplicated treatment row: skipped, reported with its file and line; its PATIENT_ID goes to the run log
    meta = res.asset_materializations_for_node("cohort_events")[0].metadata
    table = str(meta["source[chord] malformed rows"].value)
    assert "| data_timeline_treatment.txt | repeats an earlier row of the file | 1 | 3 |" in table
    assert meta["source[chord] malformed_rows_total"].value == 1 and "P-0000001" not in table
    logs = [e.user_message for e in studies.instance.all_logs(res.run_id)]  # ... but in the run's log
    assert any(
        "data_timeline_treatment.txt: repeats an earlier row" in m and "line 3, PATIENT_ID P-0000001" in m for m in logs
    )


def test_stop_events_are_nodes_only_when_asked(studies):
    _ok(studies.materialize("chord_stop", DATA))
    nodes = studies.table("decision_nodes", "chord_stop")
    assert set(nodes["node_code"]) == {
        "TREATMENT/Chemo/CARBOPLATIN/STOP",
        "TREATMENT/XRT//STOP",
        "TREATMENT//PEMBROLIZUMAB/STOP",
        "TREATMENT/SBRT//STOP",
    }


def test_a_duplicated_row_with_on_malformed_error_names_file_line_and_patient(studies):
    res = studies.materialize("strict", ("cohort_events",))
    assert not res.success
    msg = step_error(res)
    assert "data_timeline_treatment.txt:3: malformed row (PATIENT_ID P-0000001): repeats an earlier row" in msg
    assert str(subject_id_of("P-0000001")) not in msg


def test_study_found_by_file_names(studies):
    _ok(res := studies.materialize("by_name", DATA))
    ev = _events(studies, "by_name")
    assert set(ev["patient_id"]) == {"A-1", "A-2"} and "TREATMENT/Chemo/CISPLATIN/STOP" in set(ev["code"])
    nodes = studies.table("decision_nodes", "by_name")
    assert list(nodes["node_code"]) == ["TREATMENT/Chemo/CISPLATIN"] * 2  # [^/]* never reaches a /STOP event
    rep = report(res, "by_name")
    assert rep["files_found_by"] == "file names" and rep["patient_files"] == ["data_clinical_patients.txt"]
    files = res.asset_materializations_for_node("cohort_events")[0].metadata["source[by_name] timeline files"].value
    assert "| data_timeline.txt | 4 | 6 | DIAGNOSIS, TREATMENT | DIAGNOSIS/SUBTYPE; TREATMENT/SUBTYPE/AGENT |" in files


# --------------------------------------------------------------------------------------------- refusals (reader)
def _src(path, **kw) -> CbioportalSource:
    return CbioportalSource(kind="cbioportal", path=str(path), **kw)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: (d / "meta_timeline_labs.txt").write_text("datatype TIMELINE\n"),
            r"meta_timeline_labs\.txt:1: not a meta",
        ),
        (
            lambda d: (d / "meta_timeline_labs.txt").write_text(
                "cancer_study_identifier: msk_chord_like\ngenetic_alteration_type: CLINICAL\ndatatype: TIMELINE\n"
            ),
            r"meta_timeline_labs\.txt: missing 'data_filename' \(datatype: TIMELINE\)",
        ),
        (
            lambda d: (d / "data_timeline_labs.txt").unlink(),
            r"meta_timeline_labs\.txt: data_filename 'data_timeline_labs\.txt' not found",
        ),
        (
            lambda d: (d / "meta_timeline_labs.txt").write_text(
                (d / "meta_timeline_labs.txt").read_text().replace("msk_chord_like", "other_study")
            ),
            r"cancer_study_identifier 'other_study' differs from 'msk_chord_like'",
        ),
        (
            lambda d: (d / "data_timeline_labs.txt").write_text(
                "PATIENT_ID\tSTOP_DATE\tEVENT_TYPE\nP-0000001\t\tLAB_TEST\n"
            ),
            r"data_timeline_labs\.txt: missing required timeline column 'START_DATE'",
        ),
    ],
)
def test_bad_meta_and_timeline_files_are_refused_naming_the_file(tmp_path, edit, message):
    study = write_chord_like(tmp_path / "s")
    read_cbioportal(_src(study))  # valid as written
    edit(study)
    with pytest.raises(SourceError, match=message):
        read_cbioportal(_src(study))


def test_patient_defined_twice_names_file_lines_and_patient(tmp_path):
    study = write_es0_like(tmp_path / "s")
    p = study / "data_clinical_patients.txt"
    p.write_text(p.read_text() + "TCGA-A2-A04P\tLIVING\t1\t40\tFemale\n")
    with pytest.raises(SourceError, match=r"data_clinical_patients\.txt:10: PATIENT_ID 'TCGA-A2-A04P' already defined"):
        read_cbioportal(_src(study))


def test_longer_rows_and_rows_ending_before_a_required_column_are_malformed(tmp_path):
    rows = [*TREATMENT_ROWS, "P-0000002|5|60|Treatment|Medical Therapy|Chemo|X|extra", "P-0000003|9"]
    data = read_cbioportal(_src(write_chord_like(tmp_path / "s", rows)))
    bad = {r["reason"]: (r["first_line"], r["patient_id"]) for r in data.report["malformed_rows"]}
    assert bad["8 fields, header has 7"] == (8, "P-0000002")
    assert bad["2 fields: the row ends before EVENT_TYPE"] == (9, "P-0000003")
    assert bad["repeats an earlier row of the file"] == (3, "P-0000001")
