"""The ``delimited`` format (the sequence stage): each subject's timeline as words, with category delimiter tokens and
time markers, one block per distinct event time::

    <bos> <demographics> GENDER/F <age:45-49> <dt:1-3m> <conditions> ICD10/I10 <measurements> LOINC/718-7 <q2> ...

- a block opens with a time-gap token (``<dt:...>``, the gap since the previous block) and lists the events of that
  time grouped by category in a fixed order, each group opened by its delimiter (``<conditions>``, ``<drugs>``, ...);
- a numeric value becomes a quantile-bin token after its code (``<q1>``..``<q5>``, edges per code from the train
  split), a text value the token ``<txt:VALUE>``;
- the birth block shows gender and the age bucket at the subject's first clinical event; ``MEDS_BIRTH`` itself is
  implied by the ``<demographics>`` delimiter.

Every token is one whitespace-separated word, so block boundaries in words are block boundaries in token ids (the
word-level tokenizer of this format lives in :mod:`ehr_assets.text.tokenizers`); :func:`delimited_char_ends` turns
them into character offsets for a recipe's subword tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from meds import birth_code, death_code

from ..constants import DAYS_PER_YEAR

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]
PAD, UNK, BOS, EOS, MASK = SPECIAL_TOKENS

# event ``table`` -> category (the SMB-v1 grouping, REFERENCE.md), in serialization order
CATEGORY_TABLES = {
    "demographics": ["person"],
    "conditions": ["condition", "diagnosis", "condition_occurrence"],
    "observations": [
        "observation",
        "ed_out",
        "icu_discharge",
        "ed_registration",
        "hospital_admission",
        "icu_admission",
        "hospital_discharge",
        "visit",
        "visit_occurrence",
    ],
    "measurements": ["measurement", "lab", "vital", "vitals"],
    "procedures": ["procedure", "device_exposure", "procedure_occurrence"],
    "drugs": ["drug_exposure", "medication", "infusion_start", "infusion_end"],
    "death": ["death", "meds_death"],
    "notes": ["note"],
    "other": [],
}
CATEGORIES = list(CATEGORY_TABLES)
TABLE_TO_CATEGORY = {t: c for c, ts in CATEGORY_TABLES.items() for t in ts}
DELIMITERS = [f"<{c}>" for c in CATEGORIES]

# time-gap buckets: (upper bound in days, token)
GAP_BUCKETS = [
    (1, "<dt:0d>"),
    (2, "<dt:1d>"),
    (7, "<dt:2-6d>"),
    (30, "<dt:1-4w>"),
    (91, "<dt:1-3m>"),
    (182, "<dt:3-6m>"),
    (365, "<dt:6-12m>"),
    (730, "<dt:1-2y>"),
    (float("inf"), "<dt:2y+>"),
]
GAP_TOKENS = [t for _, t in GAP_BUCKETS]
AGE_TOKENS = [f"<age:{a}-{a + 4}>" for a in range(0, 100, 5)] + ["<age:100+>"]
N_BINS = 5
BIN_TOKENS = [f"<q{i}>" for i in range(1, N_BINS + 1)]
FIXED_VOCAB = SPECIAL_TOKENS + DELIMITERS + GAP_TOKENS + AGE_TOKENS + BIN_TOKENS


def category_of(table: object, code: str) -> str:
    """An event's category: its ``table``'s (case-insensitive), ``death`` for the MEDS death code, else ``other``."""
    if code == death_code:
        return "death"
    if isinstance(table, str):
        return TABLE_TO_CATEGORY.get(table.lower(), "other")
    return "other"


def gap_token(days: float) -> str:
    """The time-gap token of a gap of ``days`` (:data:`GAP_BUCKETS`)."""
    for upper, tok in GAP_BUCKETS:
        if days < upper:
            return tok
    return GAP_TOKENS[-1]


def age_token(years: float) -> str:
    """The five-year age bucket token of an age in years (``<age:100+>`` from 100 on)."""
    if years >= 100:
        return "<age:100+>"
    a = int(max(years, 0) // 5 * 5)
    return f"<age:{a}-{a + 4}>"


def _clean(word: str) -> str:
    """A code or text value as one word: whitespace runs become ``_``, an empty word ``_``."""
    return "_".join(str(word).split()) or "_"


# ------------------------------------------------------------------------------------------------------ value bins
def value_bin_edges(events: pd.DataFrame) -> dict[str, list[float]]:
    """Quantile edges (N_BINS-1 per code) of numeric values, from the given (train) events."""
    num = events.loc[events["numeric_value"].notna(), ["code", "numeric_value"]]
    qs = np.linspace(0, 1, N_BINS + 1)[1:-1]
    edges = num.groupby("code")["numeric_value"].quantile(qs).unstack()
    return {code: [float(x) for x in row] for code, row in edges.iterrows()}


def bin_token(code: str, value: float, edges: dict[str, list[float]]) -> str:
    """The quantile-bin token of ``value`` among ``code``'s edges; the middle bin for a code without edges."""
    e = edges.get(code)
    if e is None:
        return BIN_TOKENS[N_BINS // 2]
    return BIN_TOKENS[int(np.searchsorted(e, value, side="right"))]


# --------------------------------------------------------------------------------------------------- serialization
@dataclass
class Serialized:
    """One subject in the delimited format: the text, and per time block its time and end (in words)."""

    text: str
    block_times: list  # np.datetime64 per block (block 0 = demographics at birth)
    block_ends: list[int]  # word index one past each block's last word


def _demographics_block(
    times: np.ndarray, codes: np.ndarray, tables: np.ndarray
) -> tuple[list[str], np.datetime64, np.ndarray]:
    """The demographics block of one subject: its words (from ``<bos>`` on), its time, and the mask of the events
    serialized after it (every non-birth event outside the block)."""
    is_birth = codes == birth_code
    birth = times[is_birth][0] if is_birth.any() else None
    person = np.array(
        [not b and category_of(t, c) == "demographics" for c, t, b in zip(codes, tables, is_birth)], dtype=bool
    )
    other = np.array(
        [not b and category_of(t, c) != "demographics" for c, t, b in zip(codes, tables, is_birth)], dtype=bool
    )
    first_other = times[other][0] if other.any() else None
    # the demographics block holds the person rows recorded by the first clinical event; a person row dated later
    # (e.g. an ethnicity recorded years after) is an event of its own time, so no context can read it early
    in_demo = person & (np.ones(len(times), bool) if first_other is None else (times <= first_other))
    clinical = other | (person & ~in_demo)
    words = [BOS, "<demographics>"]
    words.extend(_clean(c) for c in codes[in_demo])
    if birth is not None and other.any():
        words.append(age_token((first_other - birth) / np.timedelta64(1, "D") / DAYS_PER_YEAR))
    demo_times = [t for t in (([birth] if birth is not None else []) + list(times[in_demo]))]
    block_time = max(demo_times) if demo_times else (times[0] if len(times) else np.datetime64("NaT"))
    return words, block_time, clinical


def _event_words(code: str, value, text, edges: dict[str, list[float]]) -> list[str]:
    """One event's words: its code, a value-bin token for a numeric value, ``<txt:VALUE>`` for a text value."""
    words = [_clean(code)]
    if value == value and value is not None:  # not NaN
        words.append(bin_token(code, float(value), edges))
    if isinstance(text, str) and text:
        words.append(f"<txt:{_clean(text)}>")
    return words


def _time_block_words(
    idx: np.ndarray,
    codes: np.ndarray,
    values: np.ndarray,
    texts: np.ndarray,
    tables: np.ndarray,
    edges: dict[str, list[float]],
) -> list[str]:
    """The words of the events ``idx`` (one event time) after the block's gap token: category by category in
    :data:`CATEGORIES` order, each opened by its delimiter."""
    by_cat: dict[str, list[str]] = {}
    for k in idx:
        words = _event_words(codes[k], values[k], texts[k], edges)
        by_cat.setdefault(category_of(tables[k], codes[k]), []).extend(words)
    out: list[str] = []
    for cat in CATEGORIES:
        if cat in by_cat:
            out.append(f"<{cat}>")
            out.extend(by_cat[cat])
    return out


def _same_time_runs(times: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal times in a sorted time array."""
    if not len(times):
        return []
    starts = np.flatnonzero(np.r_[True, times[1:] != times[:-1]])
    ends = np.r_[starts[1:], len(times)]
    return list(zip(starts, ends))


def serialize_subject(ev: pd.DataFrame, edges: dict[str, list[float]]) -> Serialized:
    """Serialize one subject's events (sorted by time) in the delimited format: the demographics block, then one
    block per distinct clinical event time, opened by its time-gap token."""
    times = ev["time"].to_numpy()
    codes = ev["code"].to_numpy()
    values = ev["numeric_value"].to_numpy()
    texts = ev["text_value"].to_numpy()
    tables = ev["table"].to_numpy()
    words, demo_time, clinical = _demographics_block(times, codes, tables)
    block_times: list = [demo_time]
    block_ends: list[int] = [len(words)]

    prev = None
    idx = np.flatnonzero(clinical)
    for s, e in _same_time_runs(times[idx]):  # clinical events grouped by exact time
        t = times[idx[s]]
        words.append("<dt:0d>" if prev is None else gap_token((t - prev) / np.timedelta64(1, "D")))
        words.extend(_time_block_words(idx[s:e], codes, values, texts, tables, edges))
        block_times.append(t)
        block_ends.append(len(words))
        prev = t
    return Serialized(" ".join(words), block_times, block_ends)


def serialize_cohort(events: pd.DataFrame, edges: dict[str, list[float]], log=None) -> pd.DataFrame:
    """One row per subject: subject_id, text, block_times, block_ends."""
    rows = []
    groups = events.groupby("subject_id", sort=True)
    n = groups.ngroups
    for i, (sid, ev) in enumerate(groups):
        s = serialize_subject(ev, edges)
        rows.append((sid, s.text, s.block_times, s.block_ends))
        if log and (i + 1) % 2000 == 0:
            log(f"serialized {i + 1}/{n} subjects")
    return pd.DataFrame(rows, columns=["subject_id", "text", "block_times", "block_ends"])


def delimited_char_ends(text: str, word_ends: Sequence[int]) -> list[int]:
    """Character offsets of word-index block ends in a single-space-joined ``delimited`` text."""
    lengths = np.fromiter((len(w) for w in text.split(" ")), dtype=np.int64)
    # end of word k-1 = sum of the first k word lengths + (k - 1) separating spaces
    cum = np.concatenate([[0], np.cumsum(lengths + 1)]) - 1
    return [int(max(cum[k], 0)) for k in word_ends]
