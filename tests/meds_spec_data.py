"""MEDS datasets written from the MEDS specification (``meds`` 0.4), not with this project's writer.

Each dataset is built with pyarrow from ``meds.DataSchema.schema()`` (only the columns a dataset has: MEDS makes
``numeric_value`` and ``text_value`` optional and allows extra columns), checked with ``meds.DataSchema.validate``
before it is written, and laid out as the standard lays a dataset out: shards under ``data/`` (any sub-folders),
``metadata/codes.parquet`` (``CodeMetadataSchema``), ``metadata/subject_splits.parquet`` (``SubjectSplitSchema``)
and ``metadata/dataset.json`` (``DatasetMetadataSchema``). The tests (``tests/data/test_meds_shapes.py``) build from
it the shapes real data arrive in that this project's own writer never produces: no births, no deaths, static rows
without a birth, repeated rows, split sub-folders, no optional columns, unusual codes.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import meds
import pyarrow as pa
import pyarrow.parquet as pq

LONG_CODE = "LOINC/" + "x" * 2000  # a very long code
SPACE_CODE = "LAB TEST/Serum creatinine (mg/dL)"
UNICODE_CODE = "DIAGNOSIS/Lungenembolie – Verdacht ✓ 肺栓塞"
INDEX = "CT/PULMONARY ANGIOGRAPHY"  # the decision-node code of every fixture dataset
OUTCOME = "ADMIT/INPATIENT"  # the outcome code of the fixture task


def _table(rows: list[dict], optional: tuple[str, ...], extras: dict[str, pa.DataType]) -> pa.Table:
    """A shard: the required MEDS columns, the ``optional`` MEDS columns and ``extras``, in the schema's types."""
    schema = meds.DataSchema.schema()
    fields = [schema.field(n) for n in ("subject_id", "time", "code", *optional)]
    fields += [pa.field(n, t) for n, t in extras.items()]
    arrow_schema = pa.schema(fields)
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in fields} for r in rows], schema=arrow_schema)
    meds.DataSchema.validate(table)  # the fixture is a valid MEDS shard, by the standard's own validator
    return table


def write_dataset(
    root: Path,
    shards: dict[str, list[dict]],
    *,
    optional: tuple[str, ...] = ("numeric_value", "text_value"),
    extras: dict[str, pa.DataType] | None = None,
    splits: dict[int, str] | None = None,
    name: str = "fixture",
) -> Path:
    """Write a MEDS dataset: ``shards`` maps a path under ``data/`` to its rows (dicts of column values)."""
    root = Path(root)
    codes: set[str] = set()
    for rel, rows in shards.items():
        path = root / meds.data_subdirectory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(rows, optional, extras or {}), path)
        codes |= {r["code"] for r in rows}
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    code_table = pa.Table.from_pylist(
        [{"code": c, "description": None, "parent_codes": []} for c in sorted(codes)],
        schema=meds.CodeMetadataSchema.schema(),
    )
    meds.CodeMetadataSchema.validate(code_table)
    pq.write_table(code_table, root / meds.code_metadata_filepath)
    info = {"dataset_name": name, "dataset_version": "1", "etl_name": "spec-fixture", "meds_version": "0.4.1"}
    meds.DatasetMetadataSchema.validate(info)
    (root / meds.dataset_metadata_filepath).write_text(json.dumps(info))
    if splits is not None:
        sp = pa.Table.from_pylist(
            [{"subject_id": s, "split": v} for s, v in sorted(splits.items())], schema=meds.SubjectSplitSchema.schema()
        )
        meds.SubjectSplitSchema.validate(sp)
        pq.write_table(sp, root / meds.subject_splits_filepath)
    return root


T0 = datetime(2015, 3, 1, 9, 0)


def subject_rows(sid: int, *, birth: bool = True, death: bool = False, k: int = 0, **codes) -> list[dict]:
    """One subject's rows, sorted by time: (birth), a gender static row (null time), visits with a lab value and a
    text note, an index study (the decision node) and, for every other subject, an outcome admission 30 days later;
    a last visit; (death) 200 days after the index. ``k`` shifts the calendar so that subjects differ."""
    t = T0 + timedelta(days=37 * k)
    rows: list[dict] = [{"subject_id": sid, "time": None, "code": "GENDER/" + "FM"[k % 2]}]
    if birth:
        rows.append({"subject_id": sid, "time": datetime(1950 + k % 30, 1 + k % 12, 1), "code": meds.birth_code})
    for v in range(3):
        tv = t + timedelta(days=40 * v)
        rows.append({"subject_id": sid, "time": tv, "code": "VISIT/OUTPATIENT"})
        rows.append({"subject_id": sid, "time": tv, "code": codes.get("lab", "LAB/CREATININE"), "numeric_value": 1.0})
        rows.append({"subject_id": sid, "time": tv, "code": "NOTE/TRIAGE", "text_value": "short of breath"})
    ti = t + timedelta(days=130)
    rows.append({"subject_id": sid, "time": ti, "code": codes.get("index", INDEX)})
    if k % 2 == 0:
        rows.append({"subject_id": sid, "time": ti + timedelta(days=30), "code": OUTCOME})
    rows.append({"subject_id": sid, "time": ti + timedelta(days=100 if death else 400), "code": "VISIT/OUTPATIENT"})
    if death:
        rows.append({"subject_id": sid, "time": ti + timedelta(days=200), "code": meds.death_code})
    static = [r for r in rows if r["time"] is None]
    return static + sorted((r for r in rows if r["time"] is not None), key=lambda r: r["time"])


def subjects(ids, **kw) -> list[dict]:
    return [r for k, sid in enumerate(ids) for r in subject_rows(sid, k=k, **kw)]
