"""Source readers: what a cohort declares under ``source:`` becomes MEDS events.

Every reader returns a :class:`SourceData`: the events (MEDS DataSchema columns, ``table`` and ``unit``, plus any
extra columns the source carries), the subject splits the source ships (or ``None``: the cohort's seeded split is
used) and a JSON-able report for the ``cohort_events`` asset's metadata. Bad input raises :class:`SourceError` naming
the file and the column, line or subject; nothing is written before the whole source has been read.

``kind: meds`` -- a MEDS dataset folder (the INSPECT release, or anything a MEDS ETL wrote)
    * ``data/**/*.parquet`` shards: each is checked against ``meds.DataSchema`` (types are aligned with
      ``DataSchema.align``: float64 -> float32, timestamp[ns] -> [us], string -> large_string; a missing required
      column or one of the wrong kind, e.g. an integer ``time`` or a string ``subject_id``, is an error naming the
      column and the shard). A subject found in two shards is an error. Extra columns are kept (``table`` and
      ``unit`` feed serialization); the names ``cohort`` and ``source_cohort`` are reserved.
    * static rows (null ``time``, e.g. a gender row) are placed at the subject's ``MEDS_BIRTH`` time, else at its
      first timed event, so every event has a place on the timeline (counted in the report).
    * ``metadata/subject_splits.parquet`` (``meds.SubjectSplitSchema``) gives the splits when present and
      ``subject_splits: true``; it must list every subject of the data with a split in train/tuning/held_out.
    * ``metadata/codes.parquet`` (``meds.CodeMetadataSchema``) and ``metadata/dataset.json``
      (``meds.DatasetMetadataSchema``) are validated when present; codes missing from codes.parquet are counted.

``kind: cbioportal`` -- a cBioPortal study folder (MSK-CHORD ``msk_chord_2024`` and the like)
    * ``data_clinical_patient.txt``: tab-separated, ``#`` comment lines skipped, one row per ``PATIENT_ID``.
    * every ``data_timeline_*.txt``: tab-separated with ``PATIENT_ID, START_DATE, STOP_DATE, EVENT_TYPE`` (a file
      lacking one of them is refused, naming the file and the column); further columns are used by the rules below
      or ignored. A row becomes an event coded ``EVENT_TYPE/<value of each code column>`` (EVENT_TYPE upper-cased,
      blank values skipped) at ``START_DATE``; the rule's value column gives ``numeric_value`` when it parses as a
      number, else ``text_value``; the rule's table is the event's category. Built-in rules cover the MSK-CHORD
      event types (:data:`TIMELINE_RULES`); a cohort YAML may override or add rules under ``event_types``; an
      unknown EVENT_TYPE uses ``SUBTYPE`` as its code column and the table ``observation`` (counted).
    * **anchor rule**: dates are integer days from each patient's day 0 (the diagnosis in MSK-CHORD). Day 0 is the
      calendar date ``anchor_date`` (default 2000-01-01) for every patient; calendar dates are synthetic (the study is
      de-identified), only intervals are real. ``MEDS_BIRTH`` is derived from an age column when one is known:
      ``age_at: anchor`` -> birth = day 0 - age years; ``age_at: last_follow_up`` -> birth = day 0 + OS_MONTHS -
      age years. Default: ``AGE_AT_DIAGNOSIS`` (at the anchor) when the column exists, else ``CURRENT_AGE_DEID``
      (MSK-CHORD; at last follow-up, needs OS_MONTHS), else no birth row. Demographic columns (default: those of
      GENDER, SEX, RACE, ETHNICITY present) become ``COLUMN/value`` person rows at birth (else at the first event).
    * ``OS_STATUS`` starting with ``1`` (``1:DECEASED``) and ``OS_MONTHS`` give ``MEDS_DEATH`` at day
      ``round(OS_MONTHS * 365.25 / 12)``; a death that would precede a recorded event is moved to the last event's
      day (counted), since no event may follow death.
    * ``subject_id`` = the first 6 bytes of SHA-256(PATIENT_ID) as an integer (stable across study releases); the
      ``PATIENT_ID`` is kept in the extra column ``patient_id``.
    * malformed rows (wrong field count, blank or unknown PATIENT_ID, non-integer START_DATE/STOP_DATE, STOP_DATE
      before START_DATE, blank EVENT_TYPE) are skipped and counted per file and reason (``on_malformed: report``,
      default) or refused with the file and line named (``on_malformed: error``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .specs import CbioportalSource, CohortSpec, MedsSource, TimelineRule

MEDS_COLUMNS = ["subject_id", "time", "code", "numeric_value", "text_value"]
RESERVED_COLUMNS = ("cohort", "source_cohort")
SPLITS = (meds.train_split, meds.tuning_split, meds.held_out_split)
DAYS_PER_MONTH = 365.25 / 12


class SourceError(ValueError):
    """A source file breaks its format; the message names the file and the column, line or subject."""


@dataclass
class SourceData:
    events: pd.DataFrame
    splits: pd.DataFrame | None = None  # subject_id, split; None: split by the cohort's seed
    report: dict = field(default_factory=dict)  # JSON-able, shown as asset metadata


def read_source(spec: CohortSpec) -> SourceData:
    """Read a source cohort's declared source (paths are absolute once :func:`specs.load_project` resolved them)."""
    src = spec.source
    if src.kind == "synthetic":
        from .synthetic import generate

        ev = generate(src.profile, src.subjects, src.seed, src.id_start).events
        return SourceData(ev, None, {"kind": "synthetic", "profile": src.profile})
    if src.kind == "meds":
        return read_meds(src)
    if src.kind == "cbioportal":
        return read_cbioportal(src)
    raise SourceError(f"cohort {spec.name!r}: source kind {src.kind!r} is not supported")


# ============================================================================================================ MEDS
# arrow type families a MEDS column may arrive in before ``DataSchema.align`` casts it
_KINDS = {
    "subject_id": (pa.types.is_integer,),
    "time": (pa.types.is_timestamp, pa.types.is_date, pa.types.is_null),
    "code": (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary),
    "numeric_value": (pa.types.is_floating, pa.types.is_integer, pa.types.is_null),
    "text_value": (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary, pa.types.is_null),
}


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
                    f"{path}: column {name!r} has type {t}; MEDS wants {want.field(name).type} "
                    "(meds.DataSchema)"
                )
    table = _decode_dictionaries(table)
    if pa.types.is_date(table.schema.field("time").type):
        table = table.set_column(table.schema.get_field_index("time"), "time",
                                 table.column("time").cast(pa.timestamp("us")))
    try:
        table = meds.DataSchema.align(table)
        meds.DataSchema.validate(table)
    except Exception as e:
        raise SourceError(f"{path}: fails meds.DataSchema: {e}") from None
    return table


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from None


def _validated(path: Path, schema) -> pa.Table:
    try:
        table = _decode_dictionaries(pq.read_table(path))
        table = schema.align(table)
        schema.validate(table)
    except Exception as e:
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        raise SourceError(f"{path}: fails meds.{schema.__name__}: {e}{cause}") from None
    return table


def read_meds(src: MedsSource) -> SourceData:
    root = Path(src.path)
    if not root.is_dir():
        raise SourceError(f"{root}: MEDS dataset folder not found (source.path)")
    data_dir = root / meds.data_subdirectory
    shards = sorted(data_dir.glob("**/*.parquet"))
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
    events = _to_pandas(table)
    for col in ("numeric_value", "text_value"):
        if col not in events:
            events[col] = np.nan if col == "numeric_value" else None
    events["numeric_value"] = events["numeric_value"].astype("float32")
    report: dict = {"kind": "meds", "path": str(root), "shards": len(shards), "rows_read": len(events)}

    if src.max_subjects is not None:
        keep = np.sort(events["subject_id"].unique())[: src.max_subjects]
        events = events[events["subject_id"].isin(keep)]
        report["max_subjects"] = src.max_subjects

    events, n_static, n_dropped = _place_static_rows(events)
    report["static_rows_placed"] = n_static
    if n_dropped:
        report["subjects_without_timed_events_dropped"] = n_dropped
    events = events.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)
    report["extra_columns"] = [c for c in events.columns if c not in MEDS_COLUMNS]

    meta = root / "metadata"
    ds = root / meds.dataset_metadata_filepath
    if ds.is_file():
        info = _read_json(ds)
        try:
            meds.DatasetMetadataSchema.validate(info)
        except Exception as e:
            raise SourceError(f"{ds}: fails meds.DatasetMetadataSchema: {e} ({e.__cause__})") from None
        for k in ("dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version"):
            if info.get(k) is not None:
                report[k] = str(info[k])
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
        report["splits_from"] = "cohort splits (seeded)" + ("" if meta.is_dir() else "; no metadata/ folder")
    report["subjects"] = int(events["subject_id"].nunique())
    report["rows"] = len(events)
    return SourceData(events, splits, report)


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
    import pyarrow.compute as pc

    return pc.unique(col).to_pylist()


def _place_static_rows(events: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Null-time rows get the subject's MEDS_BIRTH time, else its first timed event; returns (events, placed,
    subjects dropped because they have no timed event at all)."""
    static = events["time"].isna()
    if not static.any():
        return events, 0, 0
    timed = events[~static]
    birth = timed.loc[timed["code"] == meds.birth_code].groupby("subject_id")["time"].min()
    first = timed.groupby("subject_id")["time"].min()
    anchor = events.loc[static, "subject_id"].map(birth).fillna(events.loc[static, "subject_id"].map(first))
    events = events.copy()
    events.loc[static, "time"] = anchor
    no_time = events["time"].isna()
    dropped = int(events.loc[no_time, "subject_id"].nunique())
    events = events[~no_time]
    # a static row sorts after the timed rows of the same instant (e.g. gender right after birth)
    order = np.lexsort((static[~no_time].to_numpy(), events["time"].to_numpy(), events["subject_id"].to_numpy()))
    return events.iloc[order], int((static & ~no_time).sum()), dropped


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


# ====================================================================================================== cBioPortal
TIMELINE_REQUIRED = ("PATIENT_ID", "START_DATE", "STOP_DATE", "EVENT_TYPE")

# Built-in rules by EVENT_TYPE (upper case, spaces as '_'), after the MSK-CHORD timeline files.
TIMELINE_RULES: dict[str, TimelineRule] = {
    "DIAGNOSIS": TimelineRule(code_columns=["SUBTYPE", "DX_DESCRIPTION"], table="condition"),
    "TREATMENT": TimelineRule(code_columns=["SUBTYPE", "AGENT"], table="drug_exposure", stop_event=True),
    "PRIOR_MEDICATION": TimelineRule(code_columns=["AGENT"], table="drug_exposure"),
    "SURGERY": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "RADIATION": TimelineRule(code_columns=["SUBTYPE"], table="procedure", stop_event=True),
    "RADIATION_THERAPY": TimelineRule(code_columns=["SUBTYPE"], table="procedure", stop_event=True),
    "SPECIMEN": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "SPECIMEN_SURGERY": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "SEQUENCING": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "LAB_TEST": TimelineRule(code_columns=["TEST"], value_column="RESULT", unit_column="LR_UNIT_MEASURE", table="lab"),
    "PROGRESSION": TimelineRule(code_columns=["PROGRESSION"], table="observation"),
    "IMAGING": TimelineRule(code_columns=["SUBTYPE"], table="observation"),
    "TUMOR_SITES": TimelineRule(code_columns=["TUMOR_SITE"], table="observation"),
    "CANCER_PRESENCE": TimelineRule(code_columns=["CANCER_PRESENT"], table="observation"),
    "PERFORMANCE_STATUS": TimelineRule(code_columns=["SUBTYPE"], value_column="ECOG_KPS", table="measurement"),
    "ECOG_KPS": TimelineRule(code_columns=["SUBTYPE"], value_column="ECOG_KPS", table="measurement"),
    "PDL1": TimelineRule(value_column="PDL1_POSITIVE", table="measurement"),
    "MMR": TimelineRule(value_column="MMR", table="measurement"),
    "GLEASON": TimelineRule(value_column="GLEASON_SCORE", table="measurement"),
    "TUMOR_MARKER": TimelineRule(code_columns=["TEST"], value_column="RESULT", table="lab"),
    "FOLLOW_UP": TimelineRule(code_columns=["SUBTYPE"], table="observation"),
}
UNKNOWN_RULE = TimelineRule(code_columns=["SUBTYPE"], table="observation")
DEMOGRAPHIC_COLUMNS = ("GENDER", "SEX", "RACE", "ETHNICITY")
_INT_RE = re.compile(r"^[+-]?\d+$")
_BLANK = {"", "NA", "N/A", "NAN", "NULL", "[NOT AVAILABLE]", "[UNKNOWN]", "[NOT APPLICABLE]"}


def subject_id_of(patient_id: str) -> int:
    """Stable int64 id of a cBioPortal PATIENT_ID: the first 6 bytes of its SHA-256."""
    return int.from_bytes(hashlib.sha256(patient_id.encode("utf-8")).digest()[:6], "big")


def _norm_type(event_type: str) -> str:
    return "_".join(event_type.strip().upper().replace("-", " ").split())


def _blank(v: str | None) -> bool:
    return v is None or v.strip().upper() in _BLANK


def _number(v: str) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _read_tsv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a cBioPortal tab-separated file; '#' lines and blank lines skipped."""
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if fields[0].startswith("#"):
                    continue
                if header is None:
                    header = [h.strip() for h in fields]
                    continue
                rows.append((lineno, fields))
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text ({e})") from None
    if header is None:
        raise SourceError(f"{path}: no header row")
    return header, rows


class _Malformed:
    """Per-file counts of skipped rows by reason (report mode) or an immediate error naming file and line."""

    def __init__(self, mode: str):
        self.mode = mode
        self.counts: dict[tuple[str, str], int] = {}
        self.first_line: dict[tuple[str, str], int] = {}

    def __call__(self, path: Path, lineno: int, reason: str) -> None:
        if self.mode == "error":
            raise SourceError(f"{path}:{lineno}: malformed row: {reason}")
        key = (path.name, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.first_line.setdefault(key, lineno)

    def table(self) -> list[dict]:
        return [
            {"file": f, "reason": r, "rows": n, "first_line": self.first_line[(f, r)]}
            for (f, r), n in sorted(self.counts.items())
        ]


def _patients(path: Path, bad: _Malformed) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        raise SourceError(f"{path}: patient file missing (a cBioPortal study needs data_clinical_patient.txt)")
    header, rows = _read_tsv(path)
    if "PATIENT_ID" not in header:
        raise SourceError(f"{path}: missing column 'PATIENT_ID' (header: {header})")
    out, seen = [], {}
    for lineno, fields in rows:
        if len(fields) != len(header):
            bad(path, lineno, f"{len(fields)} fields, header has {len(header)}")
            continue
        rec = dict(zip(header, (x.strip() for x in fields)))
        pid = rec["PATIENT_ID"]
        if not pid:
            bad(path, lineno, "blank PATIENT_ID")
            continue
        if pid in seen:
            raise SourceError(f"{path}:{lineno}: PATIENT_ID {pid!r} already defined on line {seen[pid]}")
        seen[pid] = lineno
        out.append(rec)
    return header, out


def _age_rule(src: CbioportalSource, header: list[str]) -> tuple[str | None, str | None]:
    if src.age_column is not None:
        if src.age_column not in header:
            raise SourceError(f"{src.path}/data_clinical_patient.txt: age_column {src.age_column!r} not in the header")
        return src.age_column, src.age_at or "anchor"
    if "AGE_AT_DIAGNOSIS" in header:
        return "AGE_AT_DIAGNOSIS", "anchor"
    if "CURRENT_AGE_DEID" in header and "OS_MONTHS" in header:
        return "CURRENT_AGE_DEID", "last_follow_up"
    return None, None


def read_cbioportal(src: CbioportalSource) -> SourceData:
    root = Path(src.path)
    if not root.is_dir():
        raise SourceError(f"{root}: cBioPortal study folder not found (source.path)")
    bad = _Malformed(src.on_malformed)
    pat_path = root / "data_clinical_patient.txt"
    header, patients = _patients(pat_path, bad)
    rules = dict(TIMELINE_RULES)
    rules.update({_norm_type(k): v for k, v in src.event_types.items()})
    anchor = np.datetime64(src.anchor_date, "us")
    day = np.timedelta64(1, "D")

    ids = {p["PATIENT_ID"]: subject_id_of(p["PATIENT_ID"]) for p in patients}
    hashed = pd.Series(list(ids.values()))
    if hashed.duplicated().any():
        raise SourceError(f"{pat_path}: two PATIENT_IDs hash to subject_id {int(hashed[hashed.duplicated()].iloc[0])}")

    # --- timelines
    rows: list[tuple] = []  # (patient_id, day, code, numeric, text, table, unit)
    files = sorted(root.glob("data_timeline_*.txt"))
    if not files:
        raise SourceError(f"{root}: no data_timeline_*.txt files")
    per_file: list[dict] = []
    unknown_types: dict[str, int] = {}
    for path in files:
        h, recs = _read_tsv(path)
        missing = [c for c in TIMELINE_REQUIRED if c not in h]
        if missing:
            raise SourceError(f"{path}: missing required timeline column {missing[0]!r} (header: {h})")
        idx = {c: i for i, c in enumerate(h)}
        n_events = 0
        types: set[str] = set()
        for lineno, f in recs:
            if len(f) != len(h):
                bad(path, lineno, f"{len(f)} fields, header has {len(h)}")
                continue
            pid = f[idx["PATIENT_ID"]].strip()
            if not pid:
                bad(path, lineno, "blank PATIENT_ID")
                continue
            if pid not in ids:
                bad(path, lineno, "PATIENT_ID not in data_clinical_patient.txt")
                continue
            start, stop = f[idx["START_DATE"]].strip(), f[idx["STOP_DATE"]].strip()
            if not _INT_RE.match(start):
                bad(path, lineno, "START_DATE is not an integer day")
                continue
            if stop and not _INT_RE.match(stop):
                bad(path, lineno, "STOP_DATE is not an integer day")
                continue
            if stop and int(stop) < int(start):
                bad(path, lineno, "STOP_DATE before START_DATE")
                continue
            etype = _norm_type(f[idx["EVENT_TYPE"]])
            if not etype:
                bad(path, lineno, "blank EVENT_TYPE")
                continue
            rule = rules.get(etype)
            if rule is None:
                rule = UNKNOWN_RULE
                unknown_types[etype] = unknown_types.get(etype, 0) + 1
            types.add(etype)
            parts = [etype] + [
                f[idx[c]].strip() for c in rule.code_columns if c in idx and not _blank(f[idx[c]])
            ]
            code = "/".join(parts)
            num, text, unit = np.nan, None, None
            if rule.value_column and rule.value_column in idx and not _blank(f[idx[rule.value_column]]):
                raw = f[idx[rule.value_column]].strip()
                x = _number(raw)
                num, text = (x, None) if x is not None else (np.nan, raw)
            if rule.unit_column and rule.unit_column in idx and not _blank(f[idx[rule.unit_column]]):
                unit = f[idx[rule.unit_column]].strip()
            rows.append((pid, int(start), code, num, text, rule.table, unit))
            n_events += 1
            if rule.stop_event and stop and int(stop) > int(start):
                rows.append((pid, int(stop), code + "/STOP", np.nan, None, rule.table, None))
                n_events += 1
        per_file.append({"file": path.name, "rows": len(recs), "events": n_events, "event_types": ", ".join(sorted(types))})

    ev = pd.DataFrame(rows, columns=["patient_id", "day", "code", "numeric_value", "text_value", "table", "unit"])
    last_day = ev.groupby("patient_id")["day"].max()
    first_day = ev.groupby("patient_id")["day"].min()

    # --- patient-level rows: birth, demographics, death
    age_col, age_at = _age_rule(src, header)
    demo_cols = src.demographics if src.demographics is not None else [c for c in DEMOGRAPHIC_COLUMNS if c in header]
    for c in demo_cols:
        if c not in header:
            raise SourceError(f"{pat_path}: demographics column {c!r} not in the header")
    static: list[tuple] = []  # (patient_id, time us, code, table, order)
    n_birth = n_death = n_moved = n_no_os = 0
    for p in patients:
        pid = p["PATIENT_ID"]
        os_months = _number(p.get("OS_MONTHS", ""))
        birth = None
        if age_col is not None:
            age = _number(p.get(age_col, ""))
            if age is not None and (age_at == "anchor" or os_months is not None):
                offset = (os_months or 0.0) * DAYS_PER_MONTH if age_at == "last_follow_up" else 0.0
                birth = anchor + int(round(offset - age * 365.25)) * day
        first = anchor + int(first_day[pid]) * day if pid in first_day.index else None
        demo_time = birth if birth is not None else first
        if birth is not None:
            static.append((pid, birth, meds.birth_code, "person"))
            n_birth += 1
        if demo_time is not None:
            for c in demo_cols:
                v = p.get(c, "")
                if not _blank(v):
                    static.append((pid, demo_time, f"{c}/{v}", "person"))
        status = p.get("OS_STATUS", "").strip().upper()
        if status.startswith("1") or "DECEASED" in status:
            if os_months is None:
                n_no_os += 1
                continue
            d = int(round(os_months * DAYS_PER_MONTH))
            if pid in last_day.index and d < int(last_day[pid]):
                d = int(last_day[pid])
                n_moved += 1
            static.append((pid, anchor + d * day, meds.death_code, "death"))
            n_death += 1

    timed = pd.DataFrame(
        {
            "patient_id": ev["patient_id"],
            "time": anchor + ev["day"].to_numpy(dtype=np.int64) * day,
            "code": ev["code"],
            "numeric_value": ev["numeric_value"].astype("float32"),
            "text_value": ev["text_value"],
            "table": ev["table"],
            "unit": ev["unit"],
            "_rank": 1,
        }
    )
    st = pd.DataFrame(static, columns=["patient_id", "time", "code", "table"]).assign(
        numeric_value=np.float32("nan"), text_value=None, unit=None
    )
    st["_rank"] = np.where(st["code"] == meds.death_code, 2, 0)  # birth/demographics first, death last in a day
    events = pd.concat([st, timed], ignore_index=True)
    events["time"] = events["time"].astype("datetime64[us]")
    events.insert(0, "subject_id", events["patient_id"].map(ids).astype("int64"))
    events = events.sort_values(["subject_id", "time", "_rank"], kind="stable").drop(columns="_rank")
    events = events[["subject_id", "time", "code", "numeric_value", "text_value", "table", "unit", "patient_id"]]
    events = events.reset_index(drop=True)
    events["numeric_value"] = events["numeric_value"].astype("float32")

    report = {
        "kind": "cbioportal",
        "path": str(root),
        "patients": len(patients),
        "subjects_with_events": int(events["subject_id"].nunique()),
        "timeline_files": per_file,
        "malformed_rows": bad.table(),
        "malformed_rows_total": int(sum(bad.counts.values())),
        "unknown_event_types": unknown_types,
        "anchor_date": src.anchor_date,
        "birth_rule": f"{age_col} at {age_at}" if age_col else "none (no age column)",
        "births": n_birth,
        "deaths": n_death,
        "deaths_moved_to_last_event": n_moved,
        "deceased_without_os_months": n_no_os,
        "rows": len(events),
    }
    return SourceData(events, None, report)
