"""The ``delimited`` format of a whole cohort at once, computed column by column: no loop over subjects or events.

:mod:`.delimited` states the format; this module produces it for millions of events. The events are sorted once by
(subject, time) (stable, so rows of one time keep their order); each row gets its category, whether it belongs to
the demographics block, its clinical time block, and how many words it writes (the block's gap token and, at a
decision node, its age token when the row opens a block; the category delimiter when it opens a category of its
block; the code; a value-bin token; a text-value token). One stable sort of the clinical rows by (block, category)
and a cumulative sum of those counts give every word its position, so the whole cohort's words are written with a
few vectorized assignments. The result, :class:`Timelines`, holds word ids into a table of distinct words
(``words``), subject offsets and the time blocks; token ids under a word-level vocabulary are one lookup
(:meth:`Timelines.token_ids`), and the texts (a join per subject) are built only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from meds import birth_code, death_code

from ..constants import DAYS_PER_YEAR, US_PER_DAY
from .delimited import (
    AGE_TOKENS,
    BIN_TOKENS,
    BOS,
    CATEGORIES,
    FIXED_VOCAB,
    GAP_BUCKETS,
    N_BINS,
    TABLE_TO_CATEGORY,
    clean_word,
)

__all__ = ["Timelines", "build_timelines", "vocabulary_counts"]

WORD_ID = {w: i for i, w in enumerate(FIXED_VOCAB)}  # the fixed words keep their index in the word table
DEMO, DEATH, OTHER = CATEGORIES.index("demographics"), CATEGORIES.index("death"), CATEGORIES.index("other")
DELIMITER_IDS = np.asarray([WORD_ID[f"<{c}>"] for c in CATEGORIES], dtype=np.int32)
GAP_IDS = np.asarray([WORD_ID[t] for _, t in GAP_BUCKETS], dtype=np.int32)
GAP_UPPERS = np.asarray([u for u, _ in GAP_BUCKETS[:-1]], dtype=np.float64)
AGE_IDS = np.asarray([WORD_ID[t] for t in AGE_TOKENS], dtype=np.int32)
BIN_IDS = np.asarray([WORD_ID[t] for t in BIN_TOKENS], dtype=np.int32)
NO_TIME = np.iinfo(np.int64).max


@dataclass
class Timelines:
    """A cohort in the delimited format. Subject ``s`` (``subject_ids[s]``, ascending) is the words
    ``words[word_ids[offsets[s]:offsets[s + 1]]]``; its time blocks are ``block_times[k]`` / ``block_ends[k]`` for
    ``k`` in ``block_offsets[s]:block_offsets[s + 1]`` (block ends in words from the subject's first word; block 0 is
    the demographics block)."""

    subject_ids: np.ndarray  # int64 [S]
    words: np.ndarray  # object [V] distinct words
    word_ids: np.ndarray  # int32 [T]
    offsets: np.ndarray  # int64 [S + 1]
    block_times: np.ndarray  # datetime64[us] [B]
    block_ends: np.ndarray  # int64 [B]
    block_offsets: np.ndarray  # int64 [S + 1]

    @property
    def n_words(self) -> np.ndarray:
        """Words per subject."""
        return np.diff(self.offsets)

    def token_ids(self, vocab: dict[str, int], unk_id: int) -> np.ndarray:
        """Every word's id in ``vocab`` (``unk_id`` when absent), int32 [T], in the layout of ``word_ids``."""
        lut = np.fromiter((vocab.get(w, unk_id) for w in self.words), dtype=np.int32, count=len(self.words))
        return lut[self.word_ids]

    def texts(self) -> list[str]:
        """Each subject's text: its words joined by single spaces."""
        w = self.words[self.word_ids]
        o = self.offsets
        return [" ".join(w[o[i] : o[i + 1]]) for i in range(len(self.subject_ids))]

    def split_blocks(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(block times, block ends) per subject, as arrays."""
        cut = self.block_offsets[1:-1]
        return np.split(self.block_times, cut), np.split(self.block_ends, cut)


# ----------------------------------------------------------------------------------------------------- event columns
@dataclass
class _Rows:
    """The events as sorted numpy columns, with what the format needs to know about each row."""

    sid: np.ndarray  # int64 subject id
    subj: np.ndarray  # subject rank 0..S-1
    t: np.ndarray  # int64 microseconds
    cat: np.ndarray  # category index (CATEGORIES)
    birth: np.ndarray  # bool: MEDS_BIRTH (writes nothing)
    code_word: np.ndarray  # int32 word id of the cleaned code
    bin_word: np.ndarray  # int32 word id of the value-bin token, -1 without a numeric value
    txt_word: np.ndarray  # int32 word id of <txt:...>, -1 without a text value
    words: list[str]  # the word table (FIXED_VOCAB first)
    subject_ids: np.ndarray  # int64 [S]
    starts: np.ndarray  # first row of each subject [S + 1]


def _as_us(values) -> np.ndarray:
    return pd.Series(values).astype("datetime64[us]").to_numpy().view(np.int64)


def sorted_order(sid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The stable order of rows by (subject, time); no sort when they already are (cohort tables are stored so)."""
    if not len(sid) or bool(np.all((sid[1:] > sid[:-1]) | ((sid[1:] == sid[:-1]) & (t[1:] >= t[:-1])))):
        return np.arange(len(sid))
    return np.lexsort((t, sid))


def _factorized(events: pd.DataFrame, column: str, order: np.ndarray) -> tuple[np.ndarray, list]:
    """(index of each sorted row's value among the distinct values, -1 for a missing one; the distinct values),
    factorized on the column as stored (no conversion of millions of strings to Python objects)."""
    if column not in events:
        return np.full(len(order), -1, dtype=np.int64), []
    idx, uniq = pd.factorize(events[column], use_na_sentinel=True)
    return np.asarray(idx, dtype=np.int64)[order], list(uniq)


def _categories(tab_idx: np.ndarray, tab_uniq: list, code_idx: np.ndarray, code_uniq: list) -> np.ndarray:
    """Category index of every row: its ``table``'s (case-insensitive; not a string: ``other``), ``death`` for the
    MEDS death code (the rule of :func:`ehr_assets.text.delimited.category_of`)."""
    by_table = [
        CATEGORIES.index(TABLE_TO_CATEGORY.get(t.lower(), "other")) if isinstance(t, str) else OTHER for t in tab_uniq
    ]
    cat = np.asarray(by_table + [OTHER], dtype=np.int8)[tab_idx]  # -1 (no table) picks the last entry: other
    is_death = np.asarray([c == death_code for c in code_uniq] + [False], dtype=bool)
    cat[is_death[code_idx]] = DEATH
    return cat


def _value_bins(codes: np.ndarray, code_uniq, values: np.ndarray, edges: dict[str, list[float]]) -> np.ndarray:
    """Bin index (0..N_BINS-1) of every numeric value among its code's edges (``searchsorted(edges, v, 'right')``),
    the middle bin for a code without edges; -1 where there is no value."""
    width = max((len(e) for e in edges.values()), default=0)
    table = np.full((len(code_uniq) + 1, max(width, 1)), np.inf)
    has_edges = np.zeros(len(code_uniq) + 1, dtype=bool)
    for i, c in enumerate(code_uniq):
        e = edges.get(c)
        if e is not None:
            table[i, : len(e)] = e
            has_edges[i] = True
    out = np.full(len(values), -1, dtype=np.int64)
    ok = ~np.isnan(values)
    v, c = values[ok], codes[ok]
    out[ok] = np.where(has_edges[c], (table[c] <= v[:, None]).sum(axis=1), N_BINS // 2)
    return out


def _rows(events: pd.DataFrame, edges: dict[str, list[float]]) -> _Rows:
    """Sort the events by (subject, time), stable, and compute every row's category and words."""
    sid_all = events["subject_id"].to_numpy(dtype=np.int64)
    t_all = _as_us(events["time"])
    order = sorted_order(sid_all, t_all)
    sid, t = sid_all[order], t_all[order]
    code_idx, code_uniq = _factorized(events, "code", order)
    txt_idx, txt_uniq = _factorized(events, "text_value", order)
    tab_idx, tab_uniq = _factorized(events, "table", order)
    values = events["numeric_value"].to_numpy(dtype=np.float64, na_value=np.nan)[order]

    words = list(FIXED_VOCAB) + [clean_word(c) for c in code_uniq] + [f"<txt:{clean_word(x)}>" for x in txt_uniq]
    word_idx, uniq_words = pd.factorize(np.asarray(words, dtype=object))  # equal strings share one id
    code_word = word_idx[len(FIXED_VOCAB) : len(FIXED_VOCAB) + len(code_uniq)].astype(np.int32)[code_idx]
    txt_ok = np.asarray([isinstance(x, str) and x != "" for x in txt_uniq] + [False], dtype=bool)
    txt_lut = np.r_[word_idx[len(FIXED_VOCAB) + len(code_uniq) :], -1].astype(np.int32)
    txt_word = np.where(txt_ok[txt_idx], txt_lut[txt_idx], -1).astype(np.int32)
    bins = _value_bins(code_idx, code_uniq, values, edges)
    bin_word = np.where(bins >= 0, BIN_IDS[np.clip(bins, 0, N_BINS - 1)], -1).astype(np.int32)

    new = np.r_[True, sid[1:] != sid[:-1]] if len(sid) else np.zeros(0, bool)
    starts = np.r_[np.flatnonzero(new), len(sid)]
    return _Rows(
        sid=sid,
        subj=np.cumsum(new) - 1,
        t=t,
        cat=_categories(tab_idx, tab_uniq, code_idx, code_uniq),
        birth=np.asarray([c == birth_code for c in code_uniq] + [False], dtype=bool)[code_idx],
        code_word=code_word,
        bin_word=bin_word,
        txt_word=txt_word,
        words=list(uniq_words),
        subject_ids=sid[starts[:-1]],
        starts=starts,
    )


def _first_per_subject(subj: np.ndarray, mask: np.ndarray, values: np.ndarray, n: int, fill) -> np.ndarray:
    """``values`` at the first row of each subject where ``mask`` holds (rows sorted by subject), else ``fill``."""
    out = np.full(n, fill, dtype=values.dtype)
    idx = np.flatnonzero(mask)
    s, first = np.unique(subj[idx], return_index=True)
    out[s] = values[idx[first]]
    return out


def _demographics(r: _Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows in the demographics block, first clinical time per subject, birth time per subject, block time).
    The block holds the person rows recorded by the subject's first clinical event (all of them without one); its
    time is the latest of the birth and those rows, else the subject's first event's."""
    n = len(r.subject_ids)
    person = ~r.birth & (r.cat == DEMO)
    other = ~r.birth & (r.cat != DEMO)
    first_other = _first_per_subject(r.subj, other, r.t, n, NO_TIME)
    in_demo = person & (r.t <= first_other[r.subj])
    birth_t = _first_per_subject(r.subj, r.birth, r.t, n, NO_TIME)
    last_demo = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_demo, r.subj[in_demo], r.t[in_demo])
    demo_t = np.maximum(np.where(birth_t != NO_TIME, birth_t, np.iinfo(np.int64).min), last_demo)
    none = (birth_t == NO_TIME) & (np.bincount(r.subj[in_demo], minlength=n) == 0)
    demo_t[none] = r.t[r.starts[:-1]][none]
    return in_demo, first_other, birth_t, demo_t


def _age_ids(t_us: np.ndarray, birth_us: np.ndarray) -> np.ndarray:
    """The age-token word id at ``t_us`` for a birth at ``birth_us`` (:func:`ehr_assets.text.delimited.age_token`)."""
    years = (t_us - birth_us) / US_PER_DAY / DAYS_PER_YEAR
    return AGE_IDS[np.minimum(np.maximum(years, 0) // 5, len(AGE_IDS) - 1).astype(np.int64)]


# --------------------------------------------------------------------------------------------------- clinical blocks
@dataclass
class _Blocks:
    """The clinical rows sorted by (block, category, row), the words each writes, and per block its subject, time,
    gap token and node age token (-1: no decision node sits in the block)."""

    rows: np.ndarray  # row index into _Rows, in writing order
    block: np.ndarray  # global block index of each row
    opens_block: np.ndarray
    opens_cat: np.ndarray
    n_out: np.ndarray  # words each row writes
    b_subj: np.ndarray  # per block
    b_t: np.ndarray
    gap: np.ndarray
    age: np.ndarray


def _last_block_at_or_before(b_subj, b_t, n_subj: np.ndarray, n_t: np.ndarray) -> np.ndarray:
    """Per query (subject rank, time): the index of the subject's last block with time <= the query's, -1 if none.
    Blocks are sorted by (subject, time); both are mapped onto one sortable key (subject, rank of the time)."""
    times = np.unique(np.r_[b_t, n_t])
    width = np.int64(len(times) + 1)
    b_key = b_subj.astype(np.int64) * width + np.searchsorted(times, b_t)
    q_key = n_subj.astype(np.int64) * width + np.searchsorted(times, n_t)
    k = np.searchsorted(b_key, q_key, side="right") - 1
    ok = k >= 0
    ok[ok] = b_subj[k[ok]] == n_subj[ok]
    return np.where(ok, k, -1)


def _node_ages(r: _Rows, b_subj, b_t, birth_t, nodes: pd.DataFrame | None) -> np.ndarray:
    """Per block, the word id of the age token at its time when a decision node's context ends in it (the last
    block at or before the node) and the subject has a birth; else -1."""
    age = np.full(len(b_t), -1, dtype=np.int32)
    if nodes is None or not len(nodes) or not len(b_t):
        return age
    sid = nodes["subject_id"].to_numpy(dtype=np.int64)
    rank = np.searchsorted(r.subject_ids, sid)
    known = (rank < len(r.subject_ids)) & (r.subject_ids[np.minimum(rank, len(r.subject_ids) - 1)] == sid)
    k = _last_block_at_or_before(b_subj, b_t, rank[known], _as_us(nodes["prediction_time"])[known])
    k = np.unique(k[k >= 0])
    k = k[birth_t[b_subj[k]] != NO_TIME]
    age[k] = _age_ids(b_t[k], birth_t[b_subj[k]])
    return age


def _clinical(r: _Rows, in_demo: np.ndarray, birth_t: np.ndarray, nodes: pd.DataFrame | None) -> _Blocks:
    """Group the clinical rows (neither birth nor demographics block) into time blocks and order them for writing."""
    idx = np.flatnonzero(~r.birth & ~in_demo)
    subj, t = r.subj[idx], r.t[idx]
    new = np.r_[True, (subj[1:] != subj[:-1]) | (t[1:] != t[:-1])] if len(idx) else np.zeros(0, bool)
    block = np.cumsum(new) - 1
    b_subj, b_t = subj[new], t[new]
    first = np.r_[True, b_subj[1:] != b_subj[:-1]] if len(b_t) else np.zeros(0, bool)
    days = np.r_[0, np.diff(b_t)] / US_PER_DAY if len(b_t) else np.zeros(0)
    gap = np.where(first, GAP_IDS[0], GAP_IDS[np.searchsorted(GAP_UPPERS, days, side="right")]).astype(np.int32)
    age = _node_ages(r, b_subj, b_t, birth_t, nodes)

    o = np.lexsort((r.cat[idx], block))  # stable: rows of one category keep their order
    idx, block = idx[o], block[o]
    cat = r.cat[idx]
    opens_block = np.r_[True, block[1:] != block[:-1]] if len(idx) else np.zeros(0, bool)
    opens_cat = opens_block | (np.r_[True, cat[1:] != cat[:-1]] if len(idx) else np.zeros(0, bool))
    n_out = (
        opens_block * (1 + (age[block] >= 0)) + opens_cat + 1 + (r.bin_word[idx] >= 0) + (r.txt_word[idx] >= 0)
    ).astype(np.int64)
    return _Blocks(idx, block, opens_block, opens_cat, n_out, b_subj, b_t, gap, age)


# ---------------------------------------------------------------------------------------------------------- writing
def _write_clinical(out: np.ndarray, r: _Rows, c: _Blocks, start: np.ndarray) -> np.ndarray:
    """Write every clinical row's words from ``start`` (its first word's position); returns each block's end."""
    p = start.copy()
    ob, oc = c.opens_block, c.opens_cat
    out[p[ob]] = c.gap[c.block[ob]]
    p += ob
    aged = ob & (c.age[c.block] >= 0)
    out[p[aged]] = c.age[c.block[aged]]
    p += aged
    out[p[oc]] = DELIMITER_IDS[r.cat[c.rows[oc]]]
    p += oc
    out[p] = r.code_word[c.rows]
    p += 1
    b, x = r.bin_word[c.rows], r.txt_word[c.rows]
    out[p[b >= 0]] = b[b >= 0]
    p += b >= 0
    out[p[x >= 0]] = x[x >= 0]
    p += x >= 0
    last = np.r_[ob[1:], True] if len(ob) else np.zeros(0, bool)
    return p[last]


def _write_demographics(out: np.ndarray, r: _Rows, in_demo, first_other, birth_t, ds: np.ndarray) -> None:
    """``<bos> <demographics>``, the codes of the block's rows in row order, then the age at the first clinical
    event when the subject has a birth and a clinical event."""
    out[ds] = WORD_ID[BOS]
    out[ds + 1] = WORD_ID["<demographics>"]
    rows = np.flatnonzero(in_demo)
    s = r.subj[rows]
    rank = np.arange(len(rows)) - np.searchsorted(s, s, side="left")
    out[ds[s] + 2 + rank] = r.code_word[rows]
    n_demo = np.bincount(s, minlength=len(ds))
    aged = (birth_t != NO_TIME) & (first_other != NO_TIME)
    out[(ds + 2 + n_demo)[aged]] = _age_ids(first_other[aged], birth_t[aged])


def build_timelines(
    events: pd.DataFrame, edges: dict[str, list[float]], nodes: pd.DataFrame | None = None
) -> Timelines:
    """Every subject of ``events`` in the delimited format (:mod:`.delimited`), with value bins from ``edges``.
    With ``nodes`` (``subject_id``, ``prediction_time``), the block that ends each node's context opens with the
    age token at its time, after its gap token (the format's age at the node)."""
    r = _rows(events, edges)
    n = len(r.subject_ids)
    in_demo, first_other, birth_t, demo_t = _demographics(r)
    c = _clinical(r, in_demo, birth_t, nodes)
    demo_len = 2 + np.bincount(r.subj[in_demo], minlength=n) + ((birth_t != NO_TIME) & (first_other != NO_TIME))
    clin_len = np.bincount(r.subj[c.rows], weights=c.n_out, minlength=n).astype(np.int64)
    offsets = np.r_[0, np.cumsum(demo_len + clin_len)].astype(np.int64)
    out = np.empty(int(offsets[-1]), dtype=np.int32)
    _write_demographics(out, r, in_demo, first_other, birth_t, offsets[:-1])
    start = np.cumsum(c.n_out) - c.n_out + np.cumsum(demo_len)[r.subj[c.rows]]
    clin_ends = _write_clinical(out, r, c, start) - offsets[c.b_subj]

    n_blocks = np.bincount(c.b_subj, minlength=n) + 1
    block_offsets = np.r_[0, np.cumsum(n_blocks)].astype(np.int64)
    times = np.empty(int(block_offsets[-1]), dtype=np.int64)
    ends = np.empty(int(block_offsets[-1]), dtype=np.int64)
    times[block_offsets[:-1]], ends[block_offsets[:-1]] = demo_t, demo_len
    pos = np.arange(len(c.b_t)) + c.b_subj + 1  # clinical block b follows b earlier blocks and b_subj + 1 headers
    times[pos], ends[pos] = c.b_t, clin_ends
    return Timelines(
        subject_ids=r.subject_ids,
        words=np.asarray(r.words, dtype=object),
        word_ids=out,
        offsets=offsets,
        block_times=times.view("datetime64[us]"),
        block_ends=ends,
        block_offsets=block_offsets,
    )


def vocabulary_counts(events: pd.DataFrame) -> dict[str, int]:
    """How often each word other than the fixed ones appears in the delimited serialization of ``events``, without
    writing it: every row but a birth writes its code, a row outside the demographics block its text value too."""
    r = _rows(events, {})
    in_demo = _demographics(r)[0]
    codes = r.code_word[~r.birth]
    texts = r.txt_word[~r.birth & ~in_demo & (r.txt_word >= 0)]
    counts = np.bincount(np.r_[codes, texts], minlength=len(r.words))
    fixed = set(FIXED_VOCAB)
    return {w: int(k) for w, k in zip(r.words, counts) if k and w not in fixed}
