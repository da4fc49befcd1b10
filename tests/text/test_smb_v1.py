"""ehr_assets.text.smb_v1: the SMB-v1 text layout (REFERENCE.md) on hand-built edge cases, the block offsets used by the
pipeline, and the ``python -m ehr_assets.serialize`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_assets.text.__main__ import main
from ehr_assets.text.smb_v1 import smb_v1_blocks, smb_v1_text

from ..conftest import ev


@pytest.fixture
def edge_events() -> pd.DataFrame:
    rows = [
        # demographics: a birth row, a second birth-like code on the same date (its line is a duplicate), gender
        (1, "1960-05-06", "MEDS_BIRTH", None, "person"),
        (1, "1960-05-06", "GENDER/F", None, "person"),
        (1, "1960-05-06", "SNOMED/3950001_birth_date", None, "person"),
        # day 1: a drug at 09:00 is listed after the 10:00 condition (category order, not time order)
        (1, "2015-01-02 09:00", "RXNORM/123", None, "drug_exposure"),
        (1, "2015-01-02 10:00", "ICD10/I10", None, "condition"),
        # six values of one code: the last five, the unit of the last value; 8.125 -> 8.12 and 0.375 -> 0.38
        # (Python's %.2f rounds the binary value half to even)
        (1, "2015-01-02 10:30", "LOINC/718-7", 12.0, "lab", "g/dL"),
        (1, "2015-01-02 10:31", "LOINC/718-7", 8.125, "lab", "g/dL"),
        (1, "2015-01-02 10:32", "LOINC/718-7", 13.333, "lab", "g/dL"),
        (1, "2015-01-02 10:33", "LOINC/718-7", 11.0, "lab", "g/dL"),
        (1, "2015-01-02 10:34", "LOINC/718-7", 0.375, "lab", "g/dL"),
        (1, "2015-01-02 10:35", "LOINC/718-7", 9.996, "lab", "g/L"),
        (1, "2015-01-02 10:40", "SMOKING", None, "observation", None, "never"),
        (1, "2015-01-02 10:45", "BP/SYS", 120.0, "measurement", ""),  # empty unit: no parentheses
        (1, "2015-01-02 10:50", "CPT/1", None, "procedure"),
        (1, "2015-01-02 10:55", "CPT/1", None, "procedure"),  # same code again: one line
        (1, "2015-01-02 11:00", "ICD10/I10", None, "condition"),
        (1, "2015-01-02 11:05", "LOINC/2", None, "measurement"),  # one event without value, one with text
        (1, "2015-01-02 11:06", "LOINC/2", None, "measurement", None, "pos"),
        (1, "2015-01-02 11:10", "Visit/OP", None, "visit"),  # table in no category: left out
        # day 2: only an uncategorised event -> the date line stays, with no lines under it
        (1, "2015-01-05 08:00", "Visit/OP", None, "visit"),
        (1, "2015-02-01 12:00", "MEDS_DEATH", None, "death"),
    ]
    return ev(rows)


EXPECTED = """Birth: 1960-05-06
GENDER/F


[2015-01-02]
ICD10/I10
SMOKING: never
LOINC/718-7 (g/L): 8.12, 13.33, 11.00, 0.38, 10.00
BP/SYS: 120.00
LOINC/2: pos
CPT/1
RXNORM/123

[2015-01-05]

[2015-02-01]
MEDS_DEATH"""


def test_smb_v1_layout_on_edge_cases(edge_events):
    assert smb_v1_text(edge_events) == EXPECTED
    # events are sorted by (time, table) first: the clinical rows in reverse order give the same text (rows with
    # equal time and table keep their input order, so the demographics rows stay as they are)
    reordered = pd.concat([edge_events.iloc[:3], edge_events.iloc[3:][::-1]])
    assert smb_v1_text(reordered) == EXPECTED


def test_smb_v1_end_time_and_binned_mode(edge_events):
    ctx = smb_v1_text(edge_events, end_time="2015-01-02 10:31")
    assert (
        ctx == "Birth: 1960-05-06\nGENDER/F\n\n\n[2015-01-02]\nICD10/I10\nLOINC/718-7 (g/dL): 12.00, 8.12\nRXNORM/123"
    )
    # bins are listed most recent first and printed oldest first
    binned = smb_v1_text(edge_events, end_time="2015-02-01 12:00", time_bins=[(20, 0), (40, 20)])
    assert binned == (
        "Birth: 1960-05-06\nGENDER/F\n\n"
        "2014-12-23 - 2015-01-12\nICD10/I10\nSMOKING: never\nLOINC/718-7 (g/L): 8.12, 13.33, 11.00, 0.38, 10.00\n"
        "BP/SYS: 120.00\nLOINC/2: pos\nCPT/1\nRXNORM/123\n\n"
        "2015-01-12 - 2015-02-01\nMEDS_DEATH"
    )
    with pytest.raises(ValueError, match="must be >= the second"):
        smb_v1_text(edge_events, end_time="2015-02-01", time_bins=[(1, 5)])


def test_smb_v1_without_table_or_demographics():
    e = ev(
        [
            (7, "2020-01-01 08:00", "B", 1.0, None),
            (7, "2020-01-01 09:00", "A", None, None),
            (7, "2020-01-03", "MEDS_BIRTH", None, None),
        ]
    ).drop(columns=["table"])
    # no table column: no categories, no demographics section; a birth code still becomes a Birth line
    assert smb_v1_text(e) == "\n[2020-01-01]\nB: 1.00\nA\n\n[2020-01-03]\nBirth: 2020-01-03"
    assert smb_v1_text(e.iloc[:0]) == ""


def test_blocks_reproduce_the_text_and_node_contexts_are_exact_prefixes(edge_events):
    whole = smb_v1_blocks(edge_events)
    assert whole.text == EXPECTED
    assert [whole.text[:c].split("\n")[-1] for c in whole.char_ends] == [
        "GENDER/F",
        "RXNORM/123",
        "[2015-01-05]",
        "MEDS_DEATH",
    ]
    times = np.asarray(whole.times, dtype="datetime64[us]")
    assert (np.diff(times.astype(np.int64)) >= 0).all()
    # a decision node at 10:31 splits its day: the context is exactly the text of the events at or before it
    node = np.datetime64("2015-01-02T10:31", "us")
    split = smb_v1_blocks(edge_events, [node])
    k = int(np.searchsorted(np.asarray(split.times, dtype="datetime64[us]"), node, side="right"))
    assert split.text[: split.char_ends[k - 1]] == smb_v1_text(edge_events, end_time=node)
    assert split.times[k - 1] == node and split.times[k] > node
    # the rest of that day follows as a second block with the same date line
    assert split.text.count("[2015-01-02]") == 2 and whole.text.count("[2015-01-02]") == 1


def test_cli_prints_one_subject(tmp_path, edge_events, capsys):
    other = edge_events.assign(subject_id=2, code=edge_events["code"] + "_2")
    path = tmp_path / "events.parquet"
    pd.concat([edge_events, other]).to_parquet(path)
    assert main(["--format", "smb_v1", "--meds-parquet", str(path), "--subject", "1"]) == 0
    assert capsys.readouterr().out == EXPECTED + "\n"
    main(["--format", "delimited", "--meds-parquet", str(path), "--subject", "1", "--end-time", "2015-01-02 09:00"])
    # what a model reads at a node: the block that ends the context carries the age at the node after its gap token
    assert (
        capsys.readouterr().out == "<bos> <demographics> GENDER/F SNOMED/3950001_birth_date <age:50-54> <dt:0d> "
        "<age:50-54> <drugs> RXNORM/123\n"
    )
    with pytest.raises(SystemExit, match="subject '3' not found"):
        main(["--format", "smb_v1", "--meds-parquet", str(path), "--subject", "3"])


# ------------------------------------------------------------------------------------------- without a table column
NO_TABLE = """
[1960-05-06]
Birth: 1960-05-06
GENDER/F

[2015-01-02]
RXNORM/123
ICD10/I10
LOINC/718-7 (g/L): 8.12, 13.33, 11.00, 0.38, 10.00
SMOKING: never
BP/SYS: 120.00
CPT/1
LOINC/2: pos
Visit/OP

[2015-01-05]
Visit/OP

[2015-02-01]
MEDS_DEATH"""


def test_without_a_table_column_the_released_formatters_layout(edge_events):
    """What the released formatter (smb-utils ``format_patient_history`` with no category column) prints: no
    demographics header, Birth and gender inside the birth day's block, every code of a day in first-seen order
    (a table that is in no category is no reason to leave an event out), the last five values with the last unit."""
    bare = edge_events.drop(columns=["table"])
    assert smb_v1_text(bare) == NO_TABLE
    # a subject whose table is null on every row (a source without the column, as the warehouse stores it) too
    assert smb_v1_text(edge_events.assign(table=None)) == NO_TABLE
    assert smb_v1_blocks(bare).text == smb_v1_blocks(edge_events.assign(table=None)).text == NO_TABLE
    # one categorized row is enough for the categorized layout
    some = edge_events.assign(table=[None] * (len(edge_events) - 1) + ["death"])
    assert smb_v1_text(some) == "\n[1960-05-06]\n\n[2015-01-02]\n\n[2015-01-05]\n\n[2015-02-01]\nMEDS_DEATH"
    assert smb_v1_text(edge_events) == EXPECTED


def test_without_a_table_column_node_contexts_are_exact_prefixes(edge_events):
    bare = edge_events.drop(columns=["table"])
    for node in ("2015-01-02 10:31", "1960-05-06", "2015-01-05 08:00"):
        t = np.datetime64(pd.Timestamp(node), "us")
        split = smb_v1_blocks(bare, [t])
        k = int(np.searchsorted(np.asarray(split.times, dtype="datetime64[us]"), t, side="right"))
        assert split.text[: split.char_ends[k - 1]] == smb_v1_text(bare, end_time=t)
    assert smb_v1_text(bare, end_time="2015-01-02 10:31").endswith(
        "[2015-01-02]\nRXNORM/123\nICD10/I10\nLOINC/718-7 (g/dL): 12.00, 8.12"
    )


def test_cli_places_static_rows_without_a_birth(tmp_path, capsys):
    """``python -m ehr_assets.serialize`` on MEDS rows with a static row and no MEDS_BIRTH anywhere: the static row
    sits at the first event (after that instant's timed rows), as in the pipeline."""
    t = pd.to_datetime([None, "2020-01-02 10:00", "2020-01-03 00:00"])
    pd.DataFrame({"subject_id": [5, 5, 5], "time": t, "code": ["GENDER/F", "A", "B"]}).to_parquet(
        tmp_path / "x.parquet"
    )
    assert main(["--format", "smb_v1", "--meds-parquet", str(tmp_path / "x.parquet"), "--subject", "5"]) == 0
    assert capsys.readouterr().out == "\n[2020-01-02]\nA\nGENDER/F\n\n[2020-01-03]\nB\n"
