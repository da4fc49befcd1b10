"""Reference: the per-subject, per-event ``delimited`` serializer the package used before the columnar rewrite
(:mod:`ehr_assets.text.timelines`), verbatim apart from imports. Its outputs are the definition the new code must
reproduce token for token (``tests/text/test_timelines.py``)."""

import numpy as np
import pandas as pd
from meds import birth_code

from ehr_assets.constants import DAYS_PER_YEAR
from ehr_assets.text.delimited import BOS, CATEGORIES, age_token, bin_token, category_of, gap_token
from ehr_assets.text.delimited import clean_word as _clean
from ehr_assets.text.sequence_tables import Serialized


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


def build_vocab(train_texts: list[str], min_count: int = 1) -> list[str]:
    """Fixed tokens first, then every other word of the train texts seen at least ``min_count`` times (sorted)."""
    from ehr_assets.text.delimited import FIXED_VOCAB

    counts: dict[str, int] = {}
    for t in train_texts:
        for w in t.split():
            counts[w] = counts.get(w, 0) + 1
    fixed = set(FIXED_VOCAB)
    rest = sorted(w for w, c in counts.items() if c >= min_count and w not in fixed)
    return FIXED_VOCAB + rest
