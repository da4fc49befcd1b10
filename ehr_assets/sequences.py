"""Sequence stage: serialize each subject's timeline as text with category delimiter tokens, and tokenize it offline.

The ``delimited`` format, one block per distinct event time::

    <bos> <demographics> GENDER/F <age:45-49> <dt:1-3m> <conditions> ICD10/I10 <measurements> LOINC/718-7 <q2> ...

- a block opens with a time-gap token (``<dt:...>``, the gap since the previous block) and lists the events of that
  time grouped by category in a fixed order, each group opened by its delimiter (``<conditions>``, ``<drugs>``, ...);
- a numeric value becomes a quantile-bin token after its code (``<q1>``..``<q5>``, edges per code from the train
  split), a text value the token ``<txt:VALUE>``;
- the birth block shows gender and the age bucket at the subject's first clinical event; ``MEDS_BIRTH`` itself is
  implied by the ``<demographics>`` delimiter.

Every token is one whitespace-separated word, so block boundaries in words are block boundaries in token ids. The
tokenizer is a Hugging Face ``tokenizers`` word-level model whose vocabulary is built from the train split (never
downloaded); it is saved with ``save_pretrained`` and loads with ``PreTrainedTokenizerFast.from_pretrained``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from meds import birth_code, train_split

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]
PAD, UNK, BOS, EOS, MASK = SPECIAL_TOKENS

# event ``table`` -> category (the SMB-v1 grouping, REFERENCE.md), in serialization order
CATEGORY_TABLES = {
    "demographics": ["person"],
    "conditions": ["condition", "diagnosis", "condition_occurrence"],
    "observations": [
        "observation", "ed_out", "icu_discharge", "ed_registration", "hospital_admission",
        "icu_admission", "hospital_discharge", "visit", "visit_occurrence",
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
    (1, "<dt:0d>"), (2, "<dt:1d>"), (7, "<dt:2-6d>"), (30, "<dt:1-4w>"), (91, "<dt:1-3m>"),
    (182, "<dt:3-6m>"), (365, "<dt:6-12m>"), (730, "<dt:1-2y>"), (float("inf"), "<dt:2y+>"),
]
GAP_TOKENS = [t for _, t in GAP_BUCKETS]
AGE_TOKENS = [f"<age:{a}-{a + 4}>" for a in range(0, 100, 5)] + ["<age:100+>"]
N_BINS = 5
BIN_TOKENS = [f"<q{i}>" for i in range(1, N_BINS + 1)]
FIXED_VOCAB = SPECIAL_TOKENS + DELIMITERS + GAP_TOKENS + AGE_TOKENS + BIN_TOKENS


def category_of(table: object, code: str) -> str:
    if code == "MEDS_DEATH":
        return "death"
    if isinstance(table, str):
        return TABLE_TO_CATEGORY.get(table.lower(), "other")
    return "other"


def gap_token(days: float) -> str:
    for upper, tok in GAP_BUCKETS:
        if days < upper:
            return tok
    return GAP_TOKENS[-1]


def age_token(years: float) -> str:
    if years >= 100:
        return "<age:100+>"
    a = int(max(years, 0) // 5 * 5)
    return f"<age:{a}-{a + 4}>"


def _clean(word: str) -> str:
    return "_".join(str(word).split()) or "_"


# ------------------------------------------------------------------------------------------------------ value bins
def value_bin_edges(events: pd.DataFrame) -> dict[str, list[float]]:
    """Quantile edges (N_BINS-1 per code) of numeric values, from the given (train) events."""
    num = events.loc[events["numeric_value"].notna(), ["code", "numeric_value"]]
    qs = np.linspace(0, 1, N_BINS + 1)[1:-1]
    edges = num.groupby("code")["numeric_value"].quantile(qs).unstack()
    return {code: [float(x) for x in row] for code, row in edges.iterrows()}


def bin_token(code: str, value: float, edges: dict[str, list[float]]) -> str:
    e = edges.get(code)
    if e is None:
        return BIN_TOKENS[N_BINS // 2]
    return BIN_TOKENS[int(np.searchsorted(e, value, side="right"))]


# --------------------------------------------------------------------------------------------------- serialization
@dataclass
class Serialized:
    text: str
    block_times: list  # np.datetime64 per block (block 0 = demographics at birth)
    block_ends: list[int]  # word index one past each block's last word


def serialize_subject(ev: pd.DataFrame, edges: dict[str, list[float]]) -> Serialized:
    """Serialize one subject's events (sorted by time) in the delimited format."""
    times = ev["time"].to_numpy()
    codes = ev["code"].to_numpy()
    values = ev["numeric_value"].to_numpy()
    texts = ev["text_value"].to_numpy()
    tables = ev["table"].to_numpy()
    is_birth = codes == birth_code
    birth = times[is_birth][0] if is_birth.any() else None

    words: list[str] = [BOS]
    block_times: list = []
    block_ends: list[int] = []

    person = np.array([not b and category_of(t, c) == "demographics" for c, t, b in zip(codes, tables, is_birth)],
                      dtype=bool)
    other = np.array([not b and category_of(t, c) != "demographics" for c, t, b in zip(codes, tables, is_birth)],
                     dtype=bool)
    first_other = times[other][0] if other.any() else None
    # the demographics block holds the person rows recorded by the first clinical event; a person row dated later
    # (e.g. an ethnicity recorded years after) is an event of its own time, so no context can read it early
    in_demo = person & (np.ones(len(times), bool) if first_other is None else (times <= first_other))
    clinical = other | (person & ~in_demo)
    words.append("<demographics>")
    words.extend(_clean(c) for c in codes[in_demo])
    if birth is not None and other.any():
        words.append(age_token((first_other - birth) / np.timedelta64(1, "D") / 365.25))
    demo_times = [t for t in (([birth] if birth is not None else []) + list(times[in_demo]))]
    block_times.append(max(demo_times) if demo_times else (times[0] if len(times) else np.datetime64("NaT")))
    block_ends.append(len(words))

    prev = None
    idx = np.flatnonzero(clinical)
    if len(idx):
        # group clinical events by exact time
        t_cl = times[idx]
        starts = np.flatnonzero(np.r_[True, t_cl[1:] != t_cl[:-1]])
        ends = np.r_[starts[1:], len(idx)]
        for s, e in zip(starts, ends):
            t = t_cl[s]
            gap_days = 0.0 if prev is None else (t - prev) / np.timedelta64(1, "D")
            words.append(gap_token(gap_days) if prev is not None else "<dt:0d>")
            by_cat: dict[str, list[str]] = {}
            for k in idx[s:e]:
                c = codes[k]
                toks = [_clean(c)]
                v = values[k]
                if v == v and v is not None:  # not NaN
                    toks.append(bin_token(c, float(v), edges))
                tv = texts[k]
                if isinstance(tv, str) and tv:
                    toks.append(f"<txt:{_clean(tv)}>")
                by_cat.setdefault(category_of(tables[k], c), []).extend(toks)
            for cat in CATEGORIES:
                if cat in by_cat:
                    words.append(f"<{cat}>")
                    words.extend(by_cat[cat])
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


# ------------------------------------------------------------------------------------------------------- tokenizer
def build_vocab(train_texts: list[str], min_count: int = 1) -> list[str]:
    """Fixed tokens first, then every other word of the train texts seen at least ``min_count`` times (sorted)."""
    counts: dict[str, int] = {}
    for t in train_texts:
        for w in t.split():
            counts[w] = counts.get(w, 0) + 1
    fixed = set(FIXED_VOCAB)
    rest = sorted(w for w, c in counts.items() if c >= min_count and w not in fixed)
    return FIXED_VOCAB + rest


def build_tokenizer(vocab: list[str]):
    """A word-level fast tokenizer over ``vocab`` (no download), with the project's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS, mask_token=MASK
    )
    fast.add_special_tokens({"additional_special_tokens": [t for t in DELIMITERS]})
    return fast


def save_tokenizer(fast, edges: dict[str, list[float]], out_dir: Path) -> None:
    fast.save_pretrained(str(out_dir))
    (Path(out_dir) / "value_bins.json").write_text(json.dumps({"n_bins": N_BINS, "edges": edges}, indent=0))


def load_tokenizer(path: Path):
    """(tokenizer, value-bin edges) from a saved tokenizer folder; local files only."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    edges = json.loads((Path(path) / "value_bins.json").read_text())["edges"]
    return fast, edges


def tokenizer_from_events(events: pd.DataFrame, subjects: pd.DataFrame, min_count: int = 1):
    """Fit value bins and vocabulary on the train split's events; returns (tokenizer, edges)."""
    train_ids = subjects.loc[subjects["split"] == train_split, "subject_id"]
    train_ev = events[events["subject_id"].isin(train_ids)]
    edges = value_bin_edges(train_ev)
    texts = serialize_cohort(train_ev, edges)["text"].tolist()
    return build_tokenizer(build_vocab(texts, min_count)), edges


def encode(fast, texts: list[str]) -> list[np.ndarray]:
    enc = fast(texts, add_special_tokens=False)["input_ids"]
    out = [np.asarray(ids, dtype=np.int32) for ids in enc]
    for t, ids in zip(texts, out):
        if len(ids) != len(t.split()):  # one word must be one token, or block offsets would drift
            raise ValueError("tokenizer split a word into several tokens; the delimited format needs a word-level vocab")
    return out


# ---------------------------------------------------------------------------------------------------- node contexts
def node_contexts(sequences: pd.DataFrame, nodes: pd.DataFrame) -> pd.DataFrame:
    """For each decision node: the token index ending its context (all blocks with time <= prediction_time) and the
    time of the last block inside it. ``context_end`` tokens ``ids[:context_end]`` are what a model may read."""
    seq = sequences.set_index("subject_id")
    ends, last_times, n_tokens = [], [], []
    for sid, pt in zip(nodes["subject_id"].to_numpy(), nodes["prediction_time"].to_numpy()):
        bt = np.asarray(seq.at[sid, "block_times"], dtype="datetime64[us]")
        be = seq.at[sid, "block_ends"]
        k = int(np.searchsorted(bt, pt, side="right"))  # blocks [0, k) are at or before pt
        k = max(k, 1)  # the demographics block is always context
        ends.append(int(be[k - 1]))
        last_times.append(bt[k - 1])
        n_tokens.append(int(seq.at[sid, "n_tokens"]))
    out = nodes[["subject_id", "prediction_time", "split", "source_cohort"]].copy()
    out["context_end"] = np.asarray(ends, dtype=np.int64)
    out["context_last_time"] = np.asarray(last_times, dtype="datetime64[us]")
    out["n_tokens"] = np.asarray(n_tokens, dtype=np.int64)
    return out.reset_index(drop=True)


def context_violations(contexts: pd.DataFrame, sequences: pd.DataFrame) -> pd.DataFrame:
    """Rows whose context reads data after the prediction time: the recorded last context time is later than the
    prediction time, or a block that ends inside the context (from the stored token blocks) is later."""
    seq = sequences.set_index("subject_id")
    bad = []
    for i, (sid, pt, ce, lt) in enumerate(
        zip(contexts["subject_id"], contexts["prediction_time"], contexts["context_end"], contexts["context_last_time"])
    ):
        pt = np.datetime64(pt, "us")
        bt = np.asarray(seq.at[sid, "block_times"], dtype="datetime64[us]")
        be = np.asarray(seq.at[sid, "block_ends"])
        inside = np.searchsorted(be, ce, side="left")  # blocks whose start lies before context_end are read
        read_times = bt[: min(inside + 1, len(bt))]
        if np.datetime64(lt, "us") > pt or bool((read_times > pt).any()):
            bad.append(i)
    return contexts.iloc[bad]
