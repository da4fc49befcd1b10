"""Tables of serialized subjects in the ``delimited`` format, built from
:func:`ehr_assets.text.timelines.build_timelines`: the ``token_sequences`` table (token ids, block offsets and the
texts as Arrow list columns: no per-token Python objects between the serializer and DuckDB), one subject's text for
the serialize command, and the per-subject frame the tests and the recipe tokenizers read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from .timelines import Timelines, build_timelines

__all__ = ["Serialized", "list_column", "sequence_table", "serialize_cohort", "serialize_subject"]


def list_column(offsets: np.ndarray, values: np.ndarray) -> pd.arrays.ArrowExtensionArray:
    """A pandas column of lists (``values[offsets[i]:offsets[i + 1]]`` per row) backed by one Arrow array, which
    DuckDB stores as a LIST column without converting each element to a Python object."""
    arr = pa.LargeListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int64)), pa.array(values))
    return pd.arrays.ArrowExtensionArray(arr)


def sequence_table(tl: Timelines, vocab: dict[str, int], unk_id: int) -> pd.DataFrame:
    """One row per subject: ``subject_id``, ``text``, ``block_times``, ``block_ends`` (words), ``input_ids`` (int32
    under ``vocab``), ``n_tokens``, ``n_unk``."""
    ids = tl.token_ids(vocab, unk_id)
    n = tl.n_words
    unk = np.r_[0, np.cumsum(ids == unk_id)][tl.offsets]  # unknown words before each subject's start
    return pd.DataFrame(
        {
            "subject_id": tl.subject_ids,
            "text": tl.texts(),
            "block_times": list_column(tl.block_offsets, tl.block_times),
            "block_ends": list_column(tl.block_offsets, tl.block_ends),
            "input_ids": list_column(tl.offsets, ids),
            "n_tokens": n.astype(np.int64),
            "n_unk": np.diff(unk).astype(np.int64),
        }
    )


@dataclass
class Serialized:
    """One subject in the delimited format: the text, and per time block its time and end (in words)."""

    text: str
    block_times: list  # np.datetime64 per block (block 0 = demographics at birth)
    block_ends: list[int]  # word index one past each block's last word


def serialize_subject(ev: pd.DataFrame, edges: dict[str, list[float]], nodes: pd.DataFrame | None = None):
    """One subject's events in the delimited format (:func:`build_timelines` of a single subject)."""
    tl = build_timelines(ev, edges, nodes)
    if len(tl.subject_ids) != 1:
        raise ValueError(f"serialize_subject: expected one subject's events, got {len(tl.subject_ids)} subjects")
    return Serialized(tl.texts()[0], list(tl.block_times), [int(e) for e in tl.block_ends])


def serialize_cohort(events: pd.DataFrame, edges: dict[str, list[float]], nodes: pd.DataFrame | None = None):
    """One row per subject: subject_id, text, block_times, block_ends (lists)."""
    tl = build_timelines(events, edges, nodes)
    times, ends = tl.split_blocks()
    return pd.DataFrame(
        {
            "subject_id": tl.subject_ids,
            "text": tl.texts(),
            "block_times": [list(t) for t in times],
            "block_ends": [e.tolist() for e in ends],
        }
    )
