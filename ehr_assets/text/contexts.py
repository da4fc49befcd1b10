"""Decision-node contexts: which prefix of a subject's serialized text a model may read at each decision node, how a
context longer than the model's window is cropped, and the leakage check over the contexts.

A serialized subject (either format) is a text cut into time blocks: ``block_times[k]`` is the time of block ``k``
(block 0: the demographics, the *header*) and ``block_ends[k]`` the offset one past its end, in words, tokens or
characters alike. A node's context is every block at or before its ``prediction_time`` (a block counts while every
block up to it is at or before the node, so an out-of-order time can never let a later block in); the pure validator
:func:`context_violations` is what the asset checks run. Both work on all nodes at once: the blocks of every subject
are laid end to end and each node is one binary search (no loop over nodes).

**Cropping** (:func:`crop_context`, the one rule every reader of a context calls: the embeddings of the default and
of a recipe's tokenization, the JEPA examples in training, the collapse monitor): a context that fits the budget is
read whole; a longer one keeps its header (at most half the budget) and then the most recent tokens up to the node.
In the ``delimited`` format the header is ``<bos> <demographics>``, the person codes (e.g. sex) and the age at the
first clinical event, and the block that ends the context carries the age at the node, so a cropped context still
states the subject's sex and age at the node. In ``smb_v1`` the header is the demographics lines (``Birth:
YYYY-MM-DD``, ``GENDER/F`` ...; none without a ``table`` column); the age at the node is what the birth date and
the day line ``[YYYY-MM-DD]`` of the most recent block give (the released format has no age line, and it is not
changed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["context_violations", "crop_context", "node_contexts"]


def crop_context(ids, end: int, budget: int, header_len: int) -> np.ndarray:
    """The tokens a model reads for a context ``ids[:end]`` in at most ``budget`` tokens: all of them when they fit,
    else the header ``ids[:h]``, ``h = min(header_len, budget // 2)``, followed by the last ``budget - h`` tokens
    before ``end``."""
    ids = np.asarray(ids)
    end, budget = int(end), max(int(budget), 0)
    if end <= budget:
        return ids[:end]
    h = min(int(header_len), budget // 2)
    return np.concatenate([ids[:h], ids[end - (budget - h) : end]])


# ------------------------------------------------------------------------------------------------ blocks end to end
def _flat_blocks(sequences: pd.DataFrame):
    """(the table sorted by subject_id, block offsets [S+1], block times int64 us, their running maximum per
    subject, block ends) of a table with one row per subject and list columns ``block_times`` / ``block_ends``."""
    seq = sequences.sort_values("subject_id", kind="stable")
    counts = np.fromiter((len(b) for b in seq["block_ends"]), dtype=np.int64, count=len(seq))
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    times = np.concatenate([np.asarray(b, dtype="datetime64[us]") for b in seq["block_times"]] or [[]])
    times = times.astype("datetime64[us]").view(np.int64)
    ends = np.concatenate([np.asarray(b, dtype=np.int64) for b in seq["block_ends"]] or [[]]).astype(np.int64)
    subj = np.repeat(np.arange(len(seq)), counts)
    uniq, rank = np.unique(times, return_inverse=True)
    key = np.maximum.accumulate(subj * np.int64(len(uniq) + 1) + rank) if len(times) else rank
    running = uniq[key % (len(uniq) + 1)] if len(times) else times
    return seq, offsets, times, running, ends


def _subject_rank(subject_ids: np.ndarray, sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each ``sid`` among the sorted ``subject_ids``, whether it is there at all)."""
    rank = np.searchsorted(subject_ids, sid)
    found = rank < len(subject_ids)
    found[found] = subject_ids[rank[found]] == sid[found]
    return np.where(found, rank, 0), found


def _blocks_read(offsets, running, rank, t_us) -> np.ndarray:
    """Per node (subject rank, time): the global index of the last block of its context (at least the header).
    Blocks and nodes share one sortable key, subject rank then the rank of the time."""
    times = np.unique(np.r_[running, t_us])
    width = np.int64(len(times) + 1)
    subj = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    b_key = subj * width + np.searchsorted(times, running)
    q_key = rank * width + np.searchsorted(times, t_us)
    k = np.searchsorted(b_key, q_key, side="right") - 1
    return np.maximum(k, offsets[rank])  # the demographics block is always context


def node_contexts(sequences: pd.DataFrame, nodes: pd.DataFrame) -> pd.DataFrame:
    """For each decision node: the token index ending its context (all blocks with time <= prediction_time), the
    time of the last block inside it and the header's end (``header_end``: block 0, what :func:`crop_context`
    keeps). ``ids[:context_end]`` is what a model may read. A node of a subject with no sequence is an error."""
    seq, offsets, times, running, ends = _flat_blocks(sequences)
    sid = nodes["subject_id"].to_numpy(dtype=np.int64)
    rank, found = _subject_rank(seq["subject_id"].to_numpy(dtype=np.int64), sid)
    if not found.all():
        raise KeyError(f"decision node of subject_id {sid[~found][0]} has no serialized sequence")
    pt = nodes["prediction_time"].to_numpy().astype("datetime64[us]").view(np.int64)
    k = _blocks_read(offsets, running, rank, pt)
    out = nodes[["subject_id", "prediction_time", "split", "source_cohort"]].copy()
    out["context_end"] = ends[k].astype(np.int64)
    out["context_last_time"] = times[k].view("datetime64[us]")
    out["n_tokens"] = seq["n_tokens"].to_numpy(dtype=np.int64)[rank]
    out["header_end"] = ends[offsets[rank]].astype(np.int64)
    return out.reset_index(drop=True)


def context_violations(contexts: pd.DataFrame, sequences: pd.DataFrame) -> pd.DataFrame:
    """Rows whose context reads data after the prediction time: the recorded last context time is later than the
    prediction time, or a block that ends inside the context (from the stored token blocks) is later, or the subject
    has no stored sequence."""
    seq, offsets, _, running, ends = _flat_blocks(sequences)
    sids = seq["subject_id"].to_numpy(dtype=np.int64)
    rank, found = _subject_rank(sids, contexts["subject_id"].to_numpy(dtype=np.int64))
    pt = contexts["prediction_time"].to_numpy().astype("datetime64[us]").view(np.int64)
    lt = contexts["context_last_time"].to_numpy().astype("datetime64[us]").view(np.int64)
    ce = contexts["context_end"].to_numpy(dtype=np.int64)
    bad = ~found
    if found.any() and len(ends):
        stride = np.int64(max(int(ends.max(initial=0)), int(ce.max(initial=0))) + 1)
        subj = np.repeat(np.arange(len(sids)), np.diff(offsets))
        g = np.searchsorted(ends + subj * stride, ce + rank * stride, side="left")  # blocks starting before ce
        k = np.clip(g, offsets[rank], np.maximum(offsets[rank + 1] - 1, offsets[rank]))
        has = offsets[rank + 1] > offsets[rank]
        late = np.where(has, running[np.minimum(k, len(running) - 1)] > pt, False)
        bad |= found & (late | (lt > pt))
    else:
        bad |= lt > pt
    return contexts.iloc[np.flatnonzero(bad)]
