"""``kind: meds`` -- a MEDS dataset folder (the INSPECT release, or anything a MEDS ETL wrote).

* ``data/**/*.parquet`` shards: each is checked against ``meds.DataSchema`` (types are aligned with
  ``DataSchema.align``: float64 -> float32, timestamp[ns] -> [us], string -> large_string; a missing required
  column or one of the wrong kind, e.g. an integer ``time`` or a string ``subject_id``, is an error naming the
  column and the shard). A subject found in two shards is an error. Extra columns are kept (``table`` and
  ``unit`` feed serialization); the names ``cohort`` and ``source_cohort`` are reserved.
* optional columns may be absent (``numeric_value``, ``text_value``: filled with nulls; ``table``, ``unit``: null,
  see :mod:`ehr_assets.text.smb_v1` for a text without categories); the report lists which ones the data had.
* births and deaths are optional: a subject without ``MEDS_BIRTH`` has no age, one without ``MEDS_DEATH`` is
  followed up to its last event (the report counts both).
* static rows (null ``time``, e.g. a gender row) are placed at the subject's ``MEDS_BIRTH`` time, else at its
  first timed event, so every event has a place on the timeline (counted in the report); a subject with static rows
  only has no place on the timeline and is left out (counted).
* repeated rows (identical in every column, which MEDS allows) are kept here and collapsed into one by the cohort
  stage (:func:`ehr_assets.data.cohort.collapse_repeated_rows`, counted in the report); codes are any non-empty
  strings (spaces, unicode, any length).
* ``metadata/subject_splits.parquet`` (``meds.SubjectSplitSchema``) gives the splits when present and
  ``subject_splits: true``; it must list every subject of the data with a split in train/tuning/held_out.
* ``metadata/codes.parquet`` (``meds.CodeMetadataSchema``) and ``metadata/dataset.json``
  (``meds.DatasetMetadataSchema``) are validated when present; codes missing from codes.parquet are counted.

The module is not called ``meds.py``: ``import meds`` below is the ``meds`` package, whose schemas and paths are used
rather than copies of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...constants import MEDS_COLUMNS, SPLITS
from ...specs import MedsSource
from .base import SourceData, SourceError

RESERVED_COLUMNS = ("cohort", "source_cohort")

# arrow type families a MEDS column may arrive in before ``DataSchema.align`` casts it
_KINDS = {
    "subject_id": (pa.types.is_integer,),
    "time": (pa.types.is_timestamp, pa.types.is_date, pa.types.is_null),
    "code": (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary),
    "numeric_value": (pa.types.is_floating, pa.types.is_integer, pa.types.is_null),
    "text_value": (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary, pa.types.is_null),
}


def read_meds(src: MedsSource) -> SourceData:
    """Events, shipped splits and report of the MEDS dataset folder ``src.path`` (the rules: module docstring)."""
    root = Path(src.path)
    if not root.is_dir():
        raise SourceError(f"{root}: MEDS dataset folder not found (source.path)")
    table, n_shards = _read_shards(root / meds.data_subdirectory)
    report: dict = {"kind": "meds", "path": str(root), "shards": n_shards, "rows_read": table.num_rows}
    report["optional_columns"] = [
        c for c in ("numeric_value", "text_value", "table", "unit") if c in table.column_names
    ]
    if src.max_subjects is not None:
        keep = np.sort(pc.unique(table.column("subject_id")).to_numpy())[: src.max_subjects]
        table = table.filter(pc.is_in(table.column("subject_id"), pa.array(keep, pa.int64())))
        report["max_subjects"] = src.max_subjects
    events = _to_pandas(table)  # the only conversion: filters above stay in Arrow
    for col in ("numeric_value", "text_value"):
        if col not in events:
            events[col] = np.nan if col == "numeric_value" else None
    events["numeric_value"] = events["numeric_value"].astype("float32")

    events, n_static, n_dropped = place_static_rows(events)
    report["static_rows_placed"] = n_static
    if n_dropped:
        report["subjects_without_timed_events_dropped"] = n_dropped
    events = events.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)
    report["extra_columns"] = [c for c in events.columns if c not in MEDS_COLUMNS]
    report.update(_life_events(events))

    report.update(_dataset_info(root))
    codes_path = root / meds.code_metadata_filepath
    if codes_path.is_file():
        codes = _validated(codes_path, meds.CodeMetadataSchema)
        known = set(codes.column("code").to_pylist())
        report["codes_missing_from_metadata"] = int(sum(c not in known for c in events["code"].unique()))

    splits = None
    split_path = root / meds.subject_splits_filepath
    if src.subject_splits and split_path.is_file():
        splits = _meds_splits(split_path, events["subject_id"].unique())
        report["splits_from"] = str(split_path.relative_to(root))
    else:
        has_meta = (root / "metadata").is_dir()
        report["splits_from"] = "cohort splits (seeded)" + ("" if has_meta else "; no metadata/ folder")
    report["subjects"] = int(events["subject_id"].nunique())
    report["rows"] = len(events)
    return SourceData(events, splits, report)


# ---------------------------------------------------------------------------------------------------------- shards
def _read_shards(data_dir: Path) -> tuple[pa.Table, int]:
    """(events of every shard under ``data_dir`` as one Arrow table, number of shards): each shard checked against
    ``meds.DataSchema``, each subject in one shard; shards may differ in their optional and extra columns."""
    shards = sorted(p for p in data_dir.glob("**/*.parquet") if not p.name.startswith("."))
    if not shards:
        raise SourceError(f"{data_dir}: no parquet shards (a MEDS dataset has data/**/*.parquet)")

    tables, owner = [], {}
    for shard in shards:
        t = _meds_shard(shard)
        for sid in pc_unique(t.column("subject_id")):
            if sid in owner:
                raise SourceError(
                    f"{shard}: subject_id {sid} also occurs in {owner[sid]}; MEDS keeps a subject in one shard"
                )
            owner[sid] = shard
        tables.append(t)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SourceError(f"{data_dir}: the shards disagree on a column's type ({e})") from None
    return table, len(shards)


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
    return table


def _meds_shard(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except Exception as e:  # not parquet, truncated file, ...
        raise SourceError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    want = meds.DataSchema.schema()
    for name in ("subject_id", "time", "code"):
        if name not in table.column_names:
            raise SourceError(f"{path}: missing required MEDS column {name!r} (columns: {table.column_names})")
    for name in RESERVED_COLUMNS:
        if name in table.column_names:
            raise SourceError(f"{path}: column {name!r} is reserved by this project; rename it")
    for name, kinds in _KINDS.items():
        if name in table.column_names:
            t = table.schema.field(name).type
            if not any(k(t) for k in kinds):
                raise SourceError(
                    f"{path}: column {name!r} has type {t}; MEDS wants {want.field(name).type} (meds.DataSchema)"
                )
    table = _decode_dictionaries(table)
    if pa.types.is_date(table.schema.field("time").type):
        table = table.set_column(
            table.schema.get_field_index("time"), "time", table.column("time").cast(pa.timestamp("us"))
        )
    try:
        table = meds.DataSchema.align(table)
        meds.DataSchema.validate(table)
    except Exception as e:
        raise SourceError(f"{path}: fails meds.DataSchema: {e}") from None
    return table


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Plain pandas columns: strings as objects with None, integer extras as nullable Int64 (no float rounding)."""
    ints = {f.name for f in table.schema if pa.types.is_integer(f.type) and f.name != "subject_id"}
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype()}.get)
    df["subject_id"] = df["subject_id"].astype("int64")
    df["time"] = df["time"].astype("datetime64[us]")
    for f in table.schema:
        if f.name in ints or f.name in ("subject_id", "time"):
            continue
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            col = df[f.name].astype(object)
            df[f.name] = col.where(col.notna(), None)
    return df


def pc_unique(col: pa.ChunkedArray) -> list[int]:
    """The distinct values of an arrow column, as a Python list."""
    return pc.unique(col).to_pylist()


def _life_events(events: pd.DataFrame) -> dict:
    """Report entries: subjects without a ``MEDS_BIRTH`` (no age) and with a ``MEDS_DEATH``."""
    n = events["subject_id"].nunique()
    born = events.loc[events["code"] == meds.birth_code, "subject_id"].nunique()
    died = events.loc[events["code"] == meds.death_code, "subject_id"].nunique()
    return {"subjects_without_birth": int(n - born), "subjects_with_death": int(died)}


def place_static_rows(events: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Null-time rows get the subject's MEDS_BIRTH time, else its first timed event; returns (events, placed,
    subjects dropped because they have no timed event at all). Used by :func:`read_meds` and by the serialize CLI,
    so that static rows sit at birth there as in the pipeline."""
    static = events["time"].isna()
    if not static.any():
        return events, 0, 0
    timed = events[~static]
    sid = events.loc[static, "subject_id"].to_numpy()
    # lookups by reindexing: a dataset without any MEDS_BIRTH (or any timed row) gives NaT, never a float NaN
    birth = timed.loc[timed["code"] == meds.birth_code].groupby("subject_id")["time"].min()
    at_birth = birth.reindex(sid).to_numpy(dtype="datetime64[us]")
    at_first = timed.groupby("subject_id")["time"].min().reindex(sid).to_numpy(dtype="datetime64[us]")
    events = events.copy()
    events["time"] = events["time"].astype("datetime64[us]")
    events.loc[static, "time"] = np.where(np.isnat(at_birth), at_first, at_birth)
    no_time = events["time"].isna()
    dropped = int(events.loc[no_time, "subject_id"].nunique())
    events = events[~no_time]
    # a static row sorts after the timed rows of the same instant (e.g. gender right after birth)
    order = np.lexsort((static[~no_time].to_numpy(), events["time"].to_numpy(), events["subject_id"].to_numpy()))
    return events.iloc[order], int((static & ~no_time).sum()), dropped


# -------------------------------------------------------------------------------------------------------- metadata
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from None


def _dataset_info(root: Path) -> dict:
    """Report entries from ``metadata/dataset.json`` (validated against ``meds.DatasetMetadataSchema``), if any."""
    info_path = root / meds.dataset_metadata_filepath
    if not info_path.is_file():
        return {}
    info = _read_json(info_path)
    try:
        meds.DatasetMetadataSchema.validate(info)
    except Exception as e:
        raise SourceError(f"{info_path}: fails meds.DatasetMetadataSchema: {e} ({e.__cause__})") from None
    keys = ("dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version")
    return {k: str(info[k]) for k in keys if info.get(k) is not None}


def _validated(path: Path, schema) -> pa.Table:
    try:
        table = _decode_dictionaries(pq.read_table(path))
        table = schema.align(table)
        schema.validate(table)
    except Exception as e:
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        raise SourceError(f"{path}: fails meds.{schema.__name__}: {e}{cause}") from None
    return table


def _meds_splits(path: Path, subject_ids: np.ndarray) -> pd.DataFrame:
    sp = _validated(path, meds.SubjectSplitSchema).to_pandas()[["subject_id", "split"]]
    bad = sp.loc[~sp["split"].isin(SPLITS), "split"]
    if len(bad):
        raise SourceError(
            f"{path}: split {bad.iloc[0]!r} is not one of {list(SPLITS)} ({len(bad)} row(s)); "
            "rename the splits or set subject_splits: false"
        )
    dup = sp["subject_id"].duplicated()
    if dup.any():
        raise SourceError(f"{path}: subject_id {int(sp.loc[dup, 'subject_id'].iloc[0])} is listed more than once")
    missing = np.setdiff1d(np.asarray(subject_ids, dtype=np.int64), sp["subject_id"].to_numpy())
    if len(missing):
        raise SourceError(
            f"{path}: {len(missing)} subject(s) of data/ have no split (e.g. subject_id {int(missing[0])}); "
            "list them or set subject_splits: false"
        )
    return sp[sp["subject_id"].isin(subject_ids)].reset_index(drop=True)
