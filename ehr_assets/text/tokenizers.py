"""Tokenizers, both kinds: the word-level tokenizer of the ``delimited`` format and a recipe's own Hugging Face
tokenizer. No Dagster and no torch (``transformers`` and ``tokenizers`` are imported inside the functions): the
sequence and ``<recipe>_tokens`` assets call it, and so can a GPU job.

Word-level (the project's own vocabulary)
-----------------------------------------
A Hugging Face ``tokenizers`` word-level model whose vocabulary is built from the train split's ``delimited`` texts
(never downloaded): the fixed tokens of :data:`ehr_assets.text.delimited.FIXED_VOCAB` first, then the train words
sorted. It is saved with ``save_pretrained`` next to the value-bin edges (``value_bins.json``) and loads with
``PreTrainedTokenizerFast.from_pretrained``. :func:`encode_words` checks that one word is one token, so word offsets
are token offsets.

A recipe's tokenizer (a backbone's own, from a local folder)
------------------------------------------------------------
A backbone's own Hugging Face tokenizer (a local folder, never downloaded) plus the tokens the project adds, and the
mapping from a text's time blocks (character offsets) to token offsets.

Added tokens (special, never split, matched before the model's own vocabulary):

* ``delimited`` text: every fixed token of :data:`ehr_assets.text.delimited.FIXED_VOCAB` the tokenizer lacks
  (category delimiters, time-gap, age and value-bin tokens, ``<bos>``, ``<mask>``, ``<pad>`` ...); codes are split by
  the model's own subword vocabulary.
* ``smb_v1`` text for a trained recipe: ``<mask>`` (JEPA) and ``<pad>`` when the tokenizer has no pad token.
* ``smb_v1`` for a frozen recipe: nothing; the text is tokenized exactly as the released model reads it.

A model whose embedding matrix is smaller than the tokenizer is resized when it is loaded (training: when the base
model is built; frozen embedding: :func:`ehr_assets.embed.embed_frozen`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from meds import train_split

from .delimited import BOS, DELIMITERS, EOS, FIXED_VOCAB, MASK, N_BINS, PAD, UNK, value_bin_edges
from .timelines import vocabulary_counts

MASK_TOKEN, PAD_TOKEN = MASK, PAD  # the words the delimited format uses, added to a recipe's tokenizer too


# ------------------------------------------------------------------------------------------ word-level (delimited)
def build_vocab(counts: dict[str, int], min_count: int = 1) -> list[str]:
    """Fixed tokens first, then every other word of the train serialization seen at least ``min_count`` times
    (``counts``: :func:`ehr_assets.text.timelines.vocabulary_counts`), sorted."""
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
    """Save the tokenizer (``save_pretrained``) and the value-bin edges (``value_bins.json``) into ``out_dir``."""
    fast.save_pretrained(str(out_dir))
    (Path(out_dir) / "value_bins.json").write_text(json.dumps({"n_bins": N_BINS, "edges": edges}, indent=0))


def load_tokenizer(path: Path):
    """(tokenizer, value-bin edges) from a saved tokenizer folder; local files only."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    edges = json.loads((Path(path) / "value_bins.json").read_text())["edges"]
    return fast, edges


def tokenizer_from_events(events: pd.DataFrame, subjects: pd.DataFrame, min_count: int = 1):
    """Fit value bins and vocabulary on the train split's events; returns (tokenizer, edges). The vocabulary is
    counted from the event columns (the words the serialization writes), without serializing."""
    train_ids = subjects.loc[subjects["split"] == train_split, "subject_id"]
    train_ev = events[events["subject_id"].isin(train_ids)]
    edges = value_bin_edges(train_ev)
    return build_tokenizer(build_vocab(vocabulary_counts(train_ev), min_count)), edges


def encode_words(fast, texts: list[str]) -> list[np.ndarray]:
    """Token ids of ``delimited`` texts under the word-level tokenizer; a ValueError if a word became several tokens."""
    enc = fast(texts, add_special_tokens=False)["input_ids"]
    out = [np.asarray(ids, dtype=np.int32) for ids in enc]
    for t, ids in zip(texts, out):
        if len(ids) != len(t.split()):  # one word must be one token, or block offsets would drift
            raise ValueError(
                "tokenizer split a word into several tokens; the delimited format needs a word-level vocab"
            )
    return out


# ------------------------------------------------------------------------------------- a recipe's own HF tokenizer
class TokenizerError(ValueError):
    """A tokenizer folder is missing or unusable; the message names the folder."""


def load_tokenizer_folder(path: str | Path):
    """``AutoTokenizer.from_pretrained(path, local_files_only=True)``; a fast tokenizer is required (offsets)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise TokenizerError(f"{p}: tokenizer folder not found (local folders only; nothing is downloaded)")
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # missing files, unknown class ...
        raise TokenizerError(f"{p}: cannot load a tokenizer ({type(e).__name__}: {e})") from None
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"{p}: a fast tokenizer (tokenizer.json) is needed for character offsets")
    return tok


def tokens_to_add(fmt: str, trainable: bool, tok) -> list[str]:
    """The tokens :func:`prepare_tokenizer` adds for ``fmt`` (module docstring), those the tokenizer lacks."""
    vocab = tok.get_vocab()
    if fmt == "delimited":
        want = list(FIXED_VOCAB)
    elif fmt == "smb_v1":
        want = [MASK_TOKEN] + ([PAD_TOKEN] if tok.pad_token_id is None else []) if trainable else []
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return [t for t in want if t not in vocab]


def prepare_tokenizer(path: str | Path, fmt: str, trainable: bool):
    """(tokenizer, info): the folder's tokenizer with the added tokens and a pad token when training."""
    from transformers import AddedToken

    tok = load_tokenizer_folder(path)
    base = len(tok)
    add = tokens_to_add(fmt, trainable, tok)
    if add:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in add], special_tokens=True)
    if tok.pad_token_id is None and PAD_TOKEN in tok.get_vocab():
        tok.pad_token = PAD_TOKEN
    if fmt == "delimited" and MASK_TOKEN in tok.get_vocab() and tok.mask_token_id is None:
        tok.mask_token = MASK_TOKEN
    return tok, {"base_vocab": base, "vocab": len(tok), "added_tokens": add, "path": str(Path(path).resolve())}


def add_special_tokens(fmt: str) -> bool:
    """smb_v1: the tokenizer's own specials (e.g. Llama's BOS), as the released inference reads; delimited: none
    (its text starts with the ``<bos>`` word)."""
    return fmt == "smb_v1"


def special_ids(tok) -> dict[str, int]:
    """pad / mask / bos / eos ids for training and batching; missing ones fall back to an existing special."""
    vocab = tok.get_vocab()

    def first(*cands):
        for c in cands:
            if isinstance(c, (int, np.integer)):
                return int(c)
            if isinstance(c, str) and c in vocab:
                return int(vocab[c])
        return None

    eos = first(tok.eos_token_id, EOS)
    pad = first(tok.pad_token_id, PAD_TOKEN, eos, 0)
    bos = first(tok.bos_token_id, BOS, eos, pad)
    eos = eos if eos is not None else pad
    mask = first(tok.mask_token_id, MASK_TOKEN, pad)
    return {"pad_id": pad, "mask_id": mask, "bos_id": bos, "eos_id": eos}


def _monotone(a: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(a) if len(a) else a


def encode_with_offsets(tok, texts: Sequence[str], fmt: str):
    """Per text: (ids int32, token end offsets, token start offsets), both made non-decreasing (special tokens
    carry (0, 0))."""
    enc = tok(list(texts), add_special_tokens=add_special_tokens(fmt), return_offsets_mapping=True)
    out = []
    for ids, offs in zip(enc["input_ids"], enc["offset_mapping"]):
        o = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        out.append((np.asarray(ids, dtype=np.int32), _monotone(o[:, 1]), _monotone(o[:, 0])))
    return out


def token_ends(char_ends: Sequence[int], ends: np.ndarray) -> list[int]:
    """Token index one past the last token that lies wholly inside ``text[:c]``, for each character offset c."""
    return [int(np.searchsorted(ends, c, side="right")) for c in char_ends]


def first_token_at(starts: np.ndarray, c: int) -> int:
    """Index of the first token that starts at or after character ``c`` (the future after a context ``text[:c]``)."""
    return int(np.searchsorted(starts, c, side="left"))


def encode(tok, texts: Sequence[str], fmt: str) -> list[np.ndarray]:
    """Token ids of ``texts`` (e.g. node contexts), tokenized on their own."""
    enc = tok(list(texts), add_special_tokens=add_special_tokens(fmt))["input_ids"]
    return [np.asarray(x, dtype=np.int32) for x in enc]
