"""The ``delimited`` format (the sequence stage): each subject's timeline as words, with category delimiter tokens and
time markers, one block per distinct event time::

    <bos> <demographics> GENDER/F <age:45-49> <dt:1-3m> <conditions> ICD10/I10 <dt:6-12m> <age:50-54> <conditions>
    ICD10/C34.90 <measurements> LOINC/718-7 <q2> ...

- the demographics block (block 0, the *header*) opens the text: ``<bos> <demographics>``, the codes of the person
  rows recorded by the subject's first clinical event, and the five-year age bucket at that event; ``MEDS_BIRTH``
  itself is implied by the ``<demographics>`` delimiter (a person row dated later is an event of its own time);
- every later block opens with a time-gap token (``<dt:...>``, the gap since the previous block) and lists the events
  of that time grouped by category in a fixed order, each group opened by its delimiter (``<conditions>``,
  ``<drugs>``, ...), events in row order inside a category;
- **the age at the node**: the block that ends a decision node's context (the last block at or before its
  prediction time, normally the node's own) carries the age bucket at its time right after its gap token, so every
  node's context states the age at the node, however it is cropped (:func:`ehr_assets.text.contexts.crop_context`
  keeps the header and the most recent tokens);
- a numeric value becomes a quantile-bin token after its code (``<q1>``..``<q5>``, edges per code from the train
  split), a text value the token ``<txt:VALUE>`` (rows of the demographics block write their code only).

This module states the vocabulary and the rules of one token; :mod:`ehr_assets.text.timelines` writes a whole cohort
at once. Every token is one whitespace-separated word, so block boundaries in words are block boundaries in token ids
(the word-level tokenizer of this format lives in :mod:`ehr_assets.text.tokenizers`); :func:`delimited_char_ends`
turns them into character offsets for a recipe's subword tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from meds import death_code

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


def clean_word(word: str) -> str:
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


def delimited_char_ends(text: str, word_ends: Sequence[int]) -> list[int]:
    """Character offsets of word-index block ends in a single-space-joined ``delimited`` text."""
    lengths = np.fromiter((len(w) for w in text.split(" ")), dtype=np.int64)
    # end of word k-1 = sum of the first k word lengths + (k - 1) separating spaces
    cum = np.concatenate([[0], np.cumsum(lengths + 1)]) - 1
    return [int(max(cum[k], 0)) for k in word_ends]
