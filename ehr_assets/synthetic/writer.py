"""The MEDS dataset writer: a cohort's events (in one frame, or streamed chunk by chunk) become a MEDS dataset
folder, validated with the ``meds`` package's schemas.

* ``data/<k>.parquet``: shards of whole subjects, aligned to and validated with :class:`meds.DataSchema` (extra
  columns such as ``table``/``unit`` kept);
* ``metadata/codes.parquet`` (:class:`meds.CodeMetadataSchema`), ``metadata/dataset.json``
  (:class:`meds.DatasetMetadataSchema`) and, given splits, ``metadata/subject_splits.parquet``
  (:class:`meds.SubjectSplitSchema`);
* for the streamed writer, the hidden state in ``latent/<k>.parquet`` -- outside ``data/``, so MEDS tools never
  mistake it for events; only an oracle may read it.

:func:`random_splits` is the seeded train/tuning/held_out assignment the CLI writes.
"""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..constants import MEDS_COLUMNS, US_PER_YEAR
from .codes import code_metadata


def _aligned(schema, table: pa.Table) -> pa.Table:
    out = schema.align(table)
    schema.validate(out)
    return out


def _prepare_dirs(out_dir: Path, *subdirs: str) -> None:
    """Create ``data/``, ``metadata/`` and the given sub-folders; remove stale ``*.parquet`` shards from the shard
    folders so no old shard survives a rewrite."""
    (out_dir / Path(meds.code_metadata_filepath).parent).mkdir(parents=True, exist_ok=True)
    for sub in (meds.data_subdirectory, *subdirs):
        d = out_dir / sub
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.parquet"):
            old.unlink()


def _ordered_columns(ev: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in MEDS_COLUMNS if c in ev.columns] + [c for c in ev.columns if c not in MEDS_COLUMNS]
    return ev[cols]


def _write_data_shard(part: pd.DataFrame, path: Path) -> None:
    """One shard of whole subjects, aligned to and validated with :class:`meds.DataSchema` (extra columns kept)."""
    table = _aligned(meds.DataSchema, pa.Table.from_pandas(part, preserve_index=False))
    pq.write_table(table, path)


def _write_code_metadata(data_codes, out_dir: Path) -> None:
    meta = code_metadata().set_index("code")
    data_codes = sorted(set(map(str, data_codes)))
    codes = pa.table(
        {
            "code": pa.array(data_codes, pa.string()),
            "description": pa.array([meta["description"].get(c) for c in data_codes], pa.string()),
            "parent_codes": pa.array(
                [list(meta["parent_codes"][c]) if c in meta.index else [] for c in data_codes],
                pa.list_(pa.string()),
            ),
        }
    )
    pq.write_table(_aligned(meds.CodeMetadataSchema, codes), out_dir / meds.code_metadata_filepath)


def _write_dataset_json(out_dir: Path, dataset_name: str, columns) -> None:
    try:
        from importlib.metadata import version

        etl_version = version("ehr-assets")
    except Exception:  # not installed as a distribution
        etl_version = None
    info = {
        "dataset_name": dataset_name,
        "dataset_version": "1.0",
        "etl_name": "ehr_assets.synthetic",
        "meds_version": getattr(meds, "__version__", None),
        "created_at": datetime.now(UTC).isoformat(),
        "code_modifier_columns": ["unit"] if "unit" in columns else [],
        "other_extension_columns": [c for c in columns if c not in MEDS_COLUMNS and c != "unit"],
    }
    if etl_version:
        info["etl_version"] = etl_version
    info = {k: v for k, v in info.items() if v is not None}
    meds.DatasetMetadataSchema.validate(info)
    (out_dir / meds.dataset_metadata_filepath).write_text(json.dumps(info, indent=2) + "\n")


def _write_splits(splits: pd.DataFrame, out_dir: Path) -> None:
    sp = splits[["subject_id", "split"]]
    dup = sp["subject_id"].duplicated()
    if dup.any():
        example = sp.loc[dup, "subject_id"].iloc[0]
        raise ValueError(f"splits list {int(dup.sum())} subject_id(s) more than once, e.g. {example}")
    table = pa.table(
        {
            "subject_id": pa.array(sp["subject_id"].to_numpy(dtype=np.int64), pa.int64()),
            "split": pa.array(sp["split"].astype(str).tolist(), pa.string()),
        }
    )
    pq.write_table(_aligned(meds.SubjectSplitSchema, table), out_dir / meds.subject_splits_filepath)


def write_meds_dataset(
    events: pd.DataFrame,
    splits: pd.DataFrame | None,
    out_dir: Path,
    dataset_name: str,
    *,
    subjects_per_shard: int = 10_000,
) -> None:
    """Write ``events`` as a MEDS dataset folder ``out_dir``.

    * ``data/<k>.parquet``: shards of whole subjects (each subject in exactly one shard), rows sorted by subject then
      time, aligned to and validated with :class:`meds.DataSchema` (extra columns such as ``table``/``unit`` kept).
      Existing ``data/*.parquet`` files in ``out_dir`` are removed first so no stale shard survives.
    * ``metadata/codes.parquet``: every code in the data, with description and parent codes
      (:class:`meds.CodeMetadataSchema`); codes unknown to the generator get a null description.
    * ``metadata/dataset.json``: :class:`meds.DatasetMetadataSchema`.
    * ``metadata/subject_splits.parquet`` when ``splits`` (``subject_id``, ``split``) is given
      (:class:`meds.SubjectSplitSchema`); a subject listed twice is an error.
    """
    out_dir = Path(out_dir)
    if subjects_per_shard <= 0:
        raise ValueError(f"subjects_per_shard must be positive, got {subjects_per_shard}")
    missing = [c for c in ("subject_id", "time", "code") if c not in events.columns]
    if missing:
        raise ValueError(f"events lack required MEDS column(s) {missing}")
    _prepare_dirs(out_dir)
    data_dir = out_dir / meds.data_subdirectory

    ev = _ordered_columns(events.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True))
    sids = ev["subject_id"].to_numpy()
    uniq = np.unique(sids)
    bounds = np.searchsorted(sids, uniq[::subjects_per_shard])
    bounds = np.append(bounds, len(ev))
    for k in range(len(bounds) - 1):
        _write_data_shard(ev.iloc[bounds[k] : bounds[k + 1]], data_dir / f"{k}.parquet")
    _write_code_metadata(pd.unique(ev["code"].astype(str)), out_dir)
    _write_dataset_json(out_dir, dataset_name, list(ev.columns))
    if splits is not None:
        _write_splits(splits, out_dir)


@dataclass
class DatasetStats:
    """What :func:`write_meds_dataset_chunked` wrote."""

    subjects: int = 0
    events: int = 0
    latent_rows: int = 0
    deaths: int = 0
    shards: int = 0
    codes: int = 0
    lifetime_years: float = 0.0  # sum over subjects of (last event - birth)
    record_years: float = 0.0  # sum over subjects of (last event - first event other than birth/gender)
    generate_s: float = 0.0
    write_s: float = 0.0


def _span_years(ev: pd.DataFrame) -> tuple[float, float]:
    """(lifetime, record) patient-years of a chunk sorted by subject then time (see :class:`DatasetStats`)."""
    sid = ev["subject_id"].to_numpy()
    t = ev["time"].to_numpy().view(np.int64)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    ends = np.r_[starts[1:], sid.size] - 1
    lifetime = float((t[ends] - t[starts]).sum()) / US_PER_YEAR
    clinical = (ev["table"] != "person").to_numpy() if "table" in ev.columns else np.ones(sid.size, bool)
    first = pd.Series(t[clinical]).groupby(sid[clinical]).min()
    last = pd.Series(t[ends], index=sid[starts])
    record = float((last.reindex(first.index) - first).sum()) / US_PER_YEAR
    return lifetime, record


def write_meds_dataset_chunked(
    chunks, out_dir: Path, dataset_name: str, splits: pd.DataFrame | None = None, *, latent: bool = True
) -> DatasetStats:
    """Stream :class:`~.generator.SyntheticCohort` chunks (e.g. from :func:`~.generator.iter_chunks`) into a MEDS
    dataset folder: one ``data/<k>.parquet`` shard per chunk (validated with :class:`meds.DataSchema`), and with
    ``latent`` the hidden state in ``latent/<k>.parquet`` (outside the MEDS layout: no model may read it). The
    metadata files are written after the last chunk, as in :func:`write_meds_dataset`. Only one chunk is in memory at
    a time."""
    out_dir = Path(out_dir)
    _prepare_dirs(out_dir, "latent") if latent else _prepare_dirs(out_dir)
    stats = DatasetStats()
    codes: set[str] = set()
    columns: list[str] = []
    it = iter(chunks)
    k = 0
    while True:
        t0 = _time.perf_counter()
        chunk = next(it, None)
        t1 = _time.perf_counter()
        stats.generate_s += t1 - t0
        if chunk is None:
            break
        ev = _ordered_columns(chunk.events)
        _write_data_shard(ev, out_dir / meds.data_subdirectory / f"{k}.parquet")
        if latent:
            pq.write_table(
                pa.Table.from_pandas(chunk.latent, preserve_index=False), out_dir / "latent" / f"{k}.parquet"
            )
        columns = list(ev.columns)
        codes.update(pd.unique(ev["code"]).tolist())
        life, rec = _span_years(ev)
        stats.subjects += int(ev["subject_id"].nunique())
        stats.events += len(ev)
        stats.latent_rows += len(chunk.latent)
        stats.deaths += int((ev["code"] == meds.death_code).sum())
        stats.lifetime_years += life
        stats.record_years += rec
        stats.shards += 1
        k += 1
        del chunk, ev
        stats.write_s += _time.perf_counter() - t1
    t0 = _time.perf_counter()
    _write_code_metadata(codes, out_dir)
    _write_dataset_json(out_dir, dataset_name, columns)
    if splits is not None:
        _write_splits(splits, out_dir)
    stats.codes = len(codes)
    stats.write_s += _time.perf_counter() - t0
    return stats


def random_splits(subject_ids, seed: int, fractions=(0.7, 0.1, 0.2)) -> pd.DataFrame:
    """A seeded random train/tuning/held_out split of the unique ``subject_ids`` (default 70/10/20).

    The same algorithm as :func:`ehr_assets.data.cohort.assign_splits` (sorted ids, one seeded permutation), so a
    cohort's
    declared fractions and seed give the pipeline's split (tested)."""
    ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_tune = int(round(fractions[1] * len(ids)))
    split = np.empty(len(ids), dtype=object)
    split[perm[:n_train]] = meds.train_split
    split[perm[n_train : n_train + n_tune]] = meds.tuning_split
    split[perm[n_train + n_tune :]] = meds.held_out_split
    return pd.DataFrame({"subject_id": ids, "split": split})
