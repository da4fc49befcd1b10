"""The count-feature baseline: the floor every recipe's embeddings are measured against.

:func:`select_count_vocab` picks the most frequent codes of the train subjects; :func:`count_features` gives, at each
decision node, log1p counts of those codes observed up to (and including) the prediction time, plus age and
log1p(total events). The features go through the same probe as a recipe's embeddings
(:func:`ehr_assets.eval.probe_metrics.evaluate`), so the two are directly comparable. pandas and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import meds
import numpy as np
import pandas as pd

from ..constants import US_PER_YEAR

__all__ = ["EXCLUDED_VOCAB_CODES", "baseline_features", "count_features", "select_count_vocab"]

EXCLUDED_VOCAB_CODES = frozenset({meds.birth_code, meds.death_code})
_NAT_US = np.iinfo(np.int64).min  # NaT as int64 microseconds


def _as_us(values) -> np.ndarray:
    """datetime-like -> int64 microseconds since epoch; NaT -> int64 min (sorts first: 'always known', static)."""
    s = pd.Series(values)
    if getattr(s.dtype, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype("datetime64[us]").to_numpy().view(np.int64)


def select_count_vocab(events: pd.DataFrame, train_subjects, top_k: int = 256) -> list[str]:
    """The ``top_k`` most frequent codes (by number of events) among the train subjects' events.

    ``MEDS_BIRTH`` and ``MEDS_DEATH`` are excluded (age is a separate feature; death is an outcome); every other
    code, ``GENDER/*`` included, is eligible. Ties are broken by the code string (ascending), so the result is
    deterministic and independent of row order.
    """
    train = np.asarray(train_subjects)
    codes = events.loc[events["subject_id"].isin(train), "code"].dropna().astype(str)
    codes = codes[~codes.isin(EXCLUDED_VOCAB_CODES)]
    if codes.empty or top_k <= 0:
        return []
    vc = codes.value_counts()
    df = pd.DataFrame({"code": vc.index.astype(str), "n": vc.to_numpy()})
    df = df.sort_values(["n", "code"], ascending=[False, True], kind="mergesort")
    return df["code"].head(int(top_k)).tolist()


@dataclass
class _ContextKeys:
    """Events and nodes on one sortable int64 axis, ``subject rank * M + time rank``: the events a node may count
    are exactly those with a key in ``[node_lo, node_hi]``."""

    event_us: np.ndarray  # event times, int64 microseconds (NaT -> int64 min)
    node_us: np.ndarray  # prediction times, int64 microseconds
    event_subject: np.ndarray  # dense subject rank of each event
    node_subject: np.ndarray  # dense subject rank of each node
    n_subjects: int
    event_key: np.ndarray
    node_lo: np.ndarray  # first possible key of the node's subject (NaT/static events have time rank 0)
    node_hi: np.ndarray  # inclusive upper key: the node's prediction time


def _context_keys(events: pd.DataFrame, nodes: pd.DataFrame) -> _ContextKeys:
    """Dense ranks of subjects and of times over events + nodes, combined into one sortable int64 key."""
    ev_sid = events["subject_id"].to_numpy()
    nd_sid = nodes["subject_id"].to_numpy()
    ev_t = _as_us(events["time"])
    nd_t = _as_us(nodes["prediction_time"])
    subj_u = np.unique(np.concatenate([ev_sid, nd_sid]))
    ev_sr = np.searchsorted(subj_u, ev_sid).astype(np.int64)
    nd_sr = np.searchsorted(subj_u, nd_sid).astype(np.int64)
    time_u = np.unique(np.concatenate([ev_t, nd_t]))
    M = np.int64(time_u.size + 1)
    ev_key = ev_sr * M + np.searchsorted(time_u, ev_t).astype(np.int64)
    nd_hi = nd_sr * M + np.searchsorted(time_u, nd_t).astype(np.int64)
    return _ContextKeys(ev_t, nd_t, ev_sr, nd_sr, int(subj_u.size), ev_key, nd_sr * M, nd_hi)


def _total_counts(k: _ContextKeys) -> np.ndarray:
    """Number of events (every code) in each node's context."""
    sorted_key = k.event_key[np.argsort(k.event_key, kind="stable")]
    return np.searchsorted(sorted_key, k.node_hi, side="right") - np.searchsorted(sorted_key, k.node_lo, side="left")


def _vocab_counts(codes: pd.Series, k: _ContextKeys, vocab: list[str]) -> np.ndarray:
    """``log1p`` counts of each ``vocab`` code in each node's context, ``[n_nodes, len(vocab)]`` float64: events
    sorted once by (code, key), one ``searchsorted`` per code over the sorted node keys."""
    V, n_nodes = len(vocab), k.node_hi.shape[0]
    uniq_vocab = list(dict.fromkeys(str(c) for c in vocab))  # a repeated code gets the same column values
    col = np.asarray([uniq_vocab.index(str(c)) for c in vocab]) if len(uniq_vocab) < V else np.arange(V)
    code_idx = pd.Index(uniq_vocab).get_indexer(codes.astype(object).to_numpy())
    in_vocab = code_idx >= 0
    ci, ck = code_idx[in_vocab], k.event_key[in_vocab]
    o = np.lexsort((ck, ci))  # by code, then key
    ci, ck = ci[o], ck[o]
    bounds = np.searchsorted(ci, np.arange(len(uniq_vocab) + 1), side="left")
    q = np.argsort(k.node_hi, kind="stable")  # sorted queries make searchsorted cache-friendly
    hi_q, lo_q = k.node_hi[q], k.node_lo[q]
    per_code = np.zeros((len(uniq_vocab), n_nodes), dtype=np.int64)
    for j in range(len(uniq_vocab)):
        keys = ck[bounds[j] : bounds[j + 1]]
        if keys.size:
            per_code[j] = np.searchsorted(keys, hi_q, side="right") - np.searchsorted(keys, lo_q, side="left")
    feats = np.empty((n_nodes, len(uniq_vocab)), dtype=np.float64)
    feats[q] = np.log1p(np.ascontiguousarray(per_code.T, dtype=np.float64))
    return feats if len(uniq_vocab) == V else feats[:, col]


def _age_years(codes: pd.Series, k: _ContextKeys) -> np.ndarray | None:
    """Age at each node's prediction time from the subject's earliest ``MEDS_BIRTH`` (0 without one); None when no
    event is a dated birth."""
    birth_mask = (codes == meds.birth_code).to_numpy() & (k.event_us != _NAT_US)
    if not birth_mask.any():
        return None
    births = pd.Series(k.event_us[birth_mask]).groupby(k.event_subject[birth_mask]).min()
    b = np.full(k.n_subjects, _NAT_US, dtype=np.int64)
    b[births.index.to_numpy()] = births.to_numpy()
    nb = b[k.node_subject]
    has = (nb != _NAT_US) & (k.node_us != _NAT_US)
    age = np.zeros(k.node_us.shape[0])
    age[has] = (k.node_us[has] - nb[has]) / US_PER_YEAR
    return age


def count_features(events: pd.DataFrame, nodes: pd.DataFrame, vocab: list[str]) -> np.ndarray:
    """Count-baseline features, one row per row of ``nodes`` (same order), ``len(vocab) + 2`` float64 columns:

    ``log1p(count of vocab[j] among the subject's events with time <= prediction_time)`` for each j, then
    ``age_years`` at prediction_time (from the subject's earliest MEDS_BIRTH; 0 when absent) and
    ``log1p(total events with time <= prediction_time)`` (all codes). The boundary is inclusive (MEDS convention);
    events after prediction_time are never counted. Events with a null time (static) count as always known.

    Vectorized: events are keyed by (subject rank, time rank), sorted once; each node's context is a contiguous
    key range found by ``searchsorted``; per-code counts use one ``searchsorted`` per vocab code.
    """
    n_nodes, V = len(nodes), len(vocab)
    out = np.zeros((n_nodes, V + 2), dtype=np.float64)
    if n_nodes == 0:
        return out
    k = _context_keys(events, nodes)
    out[:, V + 1] = np.log1p(_total_counts(k))
    if V:
        out[:, :V] = _vocab_counts(events["code"], k, vocab)
    age = _age_years(events["code"], k)
    if age is not None:
        out[:, V] = age
    return out


def baseline_features(events: pd.DataFrame, subjects: pd.DataFrame, nodes: pd.DataFrame) -> np.ndarray:
    """The count baseline's features at ``nodes``: :func:`count_features` over the vocabulary of the ``train``
    subjects of ``subjects`` (columns ``subject_id``, ``split``), as ``count_baseline_probe_metrics`` uses them."""
    train = subjects.loc[subjects["split"] == meds.train_split, "subject_id"].to_numpy()
    return count_features(events, nodes, select_count_vocab(events, train))
