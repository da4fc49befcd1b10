"""cBioPortal study folders built as cBioPortal's file-format documentation and importer describe them, not as this
project's reader expects them.

* meta files: ``cancer_study_identifier``, ``genetic_alteration_type: CLINICAL``, ``datatype`` (PATIENT_ATTRIBUTES,
  SAMPLE_ATTRIBUTES, TIMELINE) and ``data_filename`` ("Clinical Data" and "Timeline Data" of the File Formats page);
  ``meta_study.txt`` with ``type_of_cancer``; a meta file of another data type (mutations) whose data this project
  does not read;
* clinical attribute files with the four ``#`` header lines (display names, descriptions, datatypes, priorities)
  before the ``PATIENT_ID`` header; a sample file mapping samples to patients (the patient file is optional);
* timelines: ``PATIENT_ID, START_DATE, [STOP_DATE,] EVENT_TYPE`` then the event type's own columns, with the
  suggested columns of the documentation (TREATMENT: TREATMENT_TYPE, SUBTYPE, AGENT; LAB_TEST: TEST, RESULT;
  IMAGING: DIAGNOSTIC_TYPE, DIAGNOSTIC_TYPE_DETAILED, RESULT, SOURCE; STATUS: STATUS, SOURCE; SPECIMEN:
  SPECIMEN_SITE, SPECIMEN_TYPE, SOURCE), point events with a blank STOP_DATE or no STOP_DATE column at all (as in
  cBioPortal's own test study ``study_es_0``), rows whose trailing blank cells were trimmed.

:func:`write_es0_like` mirrors ``study_es_0`` (``meta_clinical_patients.txt`` -> ``data_clinical_patients.txt``, one
``data_timeline.txt`` without STOP_DATE, ``DECEASED``/``LIVING`` without the ``1:``/``0:`` prefix);
:func:`write_chord_like` mirrors MSK-CHORD's names (``meta_timeline_<name>.txt`` -> ``data_timeline_<name>.txt``);
:func:`write_by_name_only` has no meta file at all.
"""

from __future__ import annotations

from pathlib import Path

ES0 = "study_es_0_like"
CHORD = "msk_chord_like"


def _write(root: Path, files: dict[str, list[str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def meta(study: str, datatype: str, data_filename: str) -> list[str]:
    return [
        f"cancer_study_identifier: {study}",
        "genetic_alteration_type: CLINICAL",
        f"datatype: {datatype}",
        f"data_filename: {data_filename}",
    ]


def clinical(names: list[str], types: list[str], columns: list[str], rows: list[list[str]]) -> list[str]:
    """A clinical attribute file: the four ``#`` metadata rows, the attribute names, the data rows."""
    return [
        "#" + "\t".join(names),
        "#" + "\t".join(names),
        "#" + "\t".join(types),
        "#" + "\t".join("1" for _ in names),
        "\t".join(columns),
        *("\t".join(r) for r in rows),
    ]


def _tsv(header: str, rows: list[str]) -> list[str]:
    return [header.replace(" ", "\t"), *(r.replace("|", "\t") for r in rows)]


# ------------------------------------------------------------------------------------------------- study_es_0-like
ES0_PATIENTS = [  # PATIENT_ID, OS_STATUS, OS_MONTHS, AGE, SEX
    ["TCGA-A1-A0SB", "DECEASED", "31.77", "61", "Female"],
    ["TCGA-A2-A04P", "LIVING", "24.5", "47", "Female"],
    ["TCGA-A2-A0CM", "LIVING", "", "55", "Male"],
    ["TCGA-BH-A18V", "DECEASED", "3.0", "70", "Female"],
]
ES0_SAMPLE_ONLY = "TCGA-E2-A14N"  # in the sample file only


def write_es0_like(root: Path) -> Path:
    patients = clinical(
        ["Patient Identifier", "Overall Survival Status", "Overall Survival (Months)", "Age", "Sex"],
        ["STRING", "STRING", "NUMBER", "NUMBER", "STRING"],
        ["PATIENT_ID", "OS_STATUS", "OS_MONTHS", "AGE", "SEX"],
        ES0_PATIENTS,
    )
    samples = clinical(
        ["Patient Identifier", "Sample Identifier", "Sample Type"],
        ["STRING", "STRING", "STRING"],
        ["PATIENT_ID", "SAMPLE_ID", "SAMPLE_TYPE"],
        [[p[0], p[0] + "-01", "primary"] for p in ES0_PATIENTS]
        + [[ES0_SAMPLE_ONLY, ES0_SAMPLE_ONLY + "-01", "primary"]],
    )
    timeline = _tsv(
        "PATIENT_ID START_DATE EVENT_TYPE SPECIMEN_REFERENCE_NUMBER SPECIMEN_SITE SPECIMEN_TYPE SOURCE TEST RESULT",
        [
            "TCGA-A1-A0SB|0|SPECIMEN|TCGA-A1-A0SB-01|breast|tissue|Hospital 1",  # trailing cells trimmed
            "TCGA-A1-A0SB|0|SPECIMEN|TCGA-A1-A0SB-02|blood|blood|Hospital 1",
            "TCGA-A1-A0SB|100|SPECIMEN|TCGA-A1-A0SB-03|blood|blood|Hospital 1",
            "TCGA-A1-A0SB|120|LAB_TEST||||Hospital 1|PSA|4.2",
            "TCGA-A2-A04P|0|SPECIMEN|TCGA-A2-A04P-01|lung|tissue|Hospital 1",
            "TCGA-A2-A04P|50|SPECIMEN|TCGA-A2-A04P-02|lung|tissue|Hospital 2",
            "TCGA-A2-A04P|60|Lab_test||||Hospital 2|PSA|10",
            "TCGA-BH-A18V|0|SPECIMEN|TCGA-BH-A18V-01||tissue|Hospital 1",  # a blank SPECIMEN_SITE keeps its slot
            f"{ES0_SAMPLE_ONLY}|5|SPECIMEN|{ES0_SAMPLE_ONLY}-01|breast|tissue|Hospital 3",
        ],
    )
    return _write(
        root,
        {
            "meta_study.txt": [
                "type_of_cancer: brca",
                f"cancer_study_identifier: {ES0}",
                "name: A study shaped like study_es_0",
                "description: fixture",
            ],
            "meta_clinical_patients.txt": meta(ES0, "PATIENT_ATTRIBUTES", "data_clinical_patients.txt"),
            "data_clinical_patients.txt": patients,
            "meta_clinical_samples.txt": meta(ES0, "SAMPLE_ATTRIBUTES", "data_clinical_samples.txt"),
            "data_clinical_samples.txt": samples,
            "meta_timeline.txt": meta(ES0, "TIMELINE", "data_timeline.txt"),
            "data_timeline.txt": timeline,
            "meta_mutations_extended.txt": [
                f"cancer_study_identifier: {ES0}",
                "genetic_alteration_type: MUTATION_EXTENDED",
                "datatype: MAF",
                "stable_id: mutations",
                "data_filename: data_mutations_extended.maf",
            ],
            "data_timeline_unlisted.txt": _tsv("PATIENT_ID START_DATE EVENT_TYPE", ["TCGA-A1-A0SB|1|NOISE"]),
        },
    )


# ------------------------------------------------------------------------------------------------- MSK-CHORD-like
CHORD_PATIENTS = [  # PATIENT_ID, GENDER, CURRENT_AGE_DEID, OS_STATUS, OS_MONTHS
    ["P-0000001", "Female", "64", "1:DECEASED", "20.0"],
    ["P-0000002", "Male", "58", "0:LIVING", "30.0"],
    ["P-0000003", "Male", "71", "0:LIVING", "12.0"],
    ["P-0000004", "Female", "49", "0:LIVING", "18.0"],  # no timeline row
]
TREATMENT_ROWS = [
    "P-0000001|10|70|Treatment|Medical Therapy|Chemo|CARBOPLATIN",
    "P-0000001|10|70|Treatment|Medical Therapy|Chemo|CARBOPLATIN",  # a duplicated row: malformed, reported
    "P-0000001|100|130|Treatment|Radiation Therapy|XRT|",  # radiation: a procedure, no AGENT
    "P-0000002|5|60|Treatment|Medical Therapy||PEMBROLIZUMAB",  # a blank SUBTYPE keeps its slot
    "P-0000002|80||Treatment|Medical Therapy|Targeted|OSIMERTINIB/PEMETREXED",  # a '/' inside a value
    "P-0000003|20|50|Treatment|Radiation Therapy|SBRT",  # trailing blank AGENT trimmed
]


def write_chord_like(root: Path, treatment_rows: list[str] = TREATMENT_ROWS) -> Path:
    patients = clinical(
        ["Patient Identifier", "Sex", "Current Age", "Overall Survival Status", "Overall Survival (Months)"],
        ["STRING", "STRING", "NUMBER", "STRING", "NUMBER"],
        ["PATIENT_ID", "GENDER", "CURRENT_AGE_DEID", "OS_STATUS", "OS_MONTHS"],
        CHORD_PATIENTS,
    )
    timelines = {
        "diagnosis": _tsv(
            "PATIENT_ID START_DATE STOP_DATE EVENT_TYPE SUBTYPE DX_DESCRIPTION",
            [f"P-000000{i}|0||Diagnosis|Primary|ADENOCARCINOMA, NOS (LUNG)" for i in (1, 2, 3)],
        ),
        "treatment": _tsv("PATIENT_ID START_DATE STOP_DATE EVENT_TYPE TREATMENT_TYPE SUBTYPE AGENT", treatment_rows),
        "imaging": _tsv(
            "PATIENT_ID START_DATE STOP_DATE EVENT_TYPE DIAGNOSTIC_TYPE DIAGNOSTIC_TYPE_DETAILED RESULT SOURCE",
            ["P-0000001|40||IMAGING|CT|CT chest with contrast|Stable disease|Radiology"],
        ),
        "status": _tsv(
            "PATIENT_ID START_DATE STOP_DATE EVENT_TYPE STATUS SOURCE",
            ["P-0000002|90||STATUS|Partial response|Clinic note"],
        ),
        "labs": _tsv(
            "PATIENT_ID START_DATE STOP_DATE EVENT_TYPE TEST RESULT LR_UNIT_MEASURE",
            ["P-0000001|30||LAB_TEST|CEA|5.1|ng/ml", "P-0000003|25||LAB_TEST|CEA|<0.5|ng/ml"],
        ),
        "surgery": _tsv("PATIENT_ID START_DATE STOP_DATE EVENT_TYPE SUBTYPE", ["P-0000003|3||Surgery|Lobectomy"]),
        "genetic_counseling": _tsv(
            "PATIENT_ID START_DATE STOP_DATE EVENT_TYPE SUBTYPE COUNSELOR",
            ["P-0000002|2||GENETIC_COUNSELING|Visit|Dr. X"],
        ),
    }
    files = {
        "meta_study.txt": [
            "type_of_cancer: mixed",
            f"cancer_study_identifier: {CHORD}",
            "name: A study named like MSK-CHORD",
            "description: fixture",
        ],
        "meta_clinical_patient.txt": meta(CHORD, "PATIENT_ATTRIBUTES", "data_clinical_patient.txt"),
        "data_clinical_patient.txt": patients,
    }
    for name, lines in timelines.items():
        files[f"meta_timeline_{name}.txt"] = meta(CHORD, "TIMELINE", f"data_timeline_{name}.txt")
        files[f"data_timeline_{name}.txt"] = lines
    return _write(root, files)


# ------------------------------------------------------------------------------------------------- by name only
def write_by_name_only(root: Path) -> Path:
    """No meta file: ``data_clinical_patients.txt`` and a single ``data_timeline.txt``."""
    patients = clinical(
        ["Patient Identifier", "Overall Survival Status", "Overall Survival (Months)"],
        ["STRING", "STRING", "NUMBER"],
        ["PATIENT_ID", "OS_STATUS", "OS_MONTHS"],
        [["A-1", "0:LIVING", "10"], ["A-2", "1:DECEASED", "2"]],
    )
    timeline = _tsv(
        "PATIENT_ID START_DATE STOP_DATE EVENT_TYPE SUBTYPE AGENT TREATMENT_TYPE",
        [
            "A-1|0||Diagnosis|Primary",
            "A-1|3|40|Treatment|Chemo|CISPLATIN|Medical Therapy",
            "A-2|0||Diagnosis|Primary",
            "A-2|7|30|TREATMENT|Chemo|CISPLATIN|Medical Therapy",
        ],
    )
    return _write(root, {"data_clinical_patients.txt": patients, "data_timeline.txt": timeline})
