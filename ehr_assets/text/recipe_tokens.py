"""Token tables of a recipe tokenizer (``<root>_tokens`` assets): each subject's text tokenized with a local Hugging
Face tokenizer, its time blocks mapped from characters to tokens, and per decision node the context tokenized on its
own (exactly what the model reads), how many of its first tokens are the subject's header (block 0, what
:func:`ehr_assets.text.contexts.crop_context` keeps) and where the future starts in the subject's tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .contexts import node_contexts
from .delimited import delimited_char_ends
from .tokenizers import encode_with_offsets, first_token_at, token_ends


def recipe_token_tables(texts: pd.DataFrame, nodes: pd.DataFrame, tok, fmt: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sequences, contexts) of a ``<root>_tokens`` asset: each subject's text (``texts``: subject_id, text,
    block_times, block_ends, split, source_cohort) tokenized with ``tok``, its blocks in characters and tokens; per
    decision node the context text's end, its tokens tokenized on their own and where the future starts."""
    char_ends = [list(map(int, e)) for e in texts["block_ends"]]
    if fmt == "delimited":  # token_sequences holds word offsets
        char_ends = [delimited_char_ends(t, e) for t, e in zip(texts["text"], char_ends)]
    enc = encode_with_offsets(tok, texts["text"].tolist(), fmt)
    seq = texts[["subject_id", "split", "source_cohort"]].copy()
    seq["input_ids"] = [ids.tolist() for ids, _, _ in enc]
    seq["n_tokens"] = np.asarray([len(ids) for ids, _, _ in enc], dtype=np.int64)
    seq["block_times"] = [list(np.asarray(b, dtype="datetime64[us]")) for b in texts["block_times"]]
    seq["block_char_ends"] = char_ends
    seq["block_ends"] = [token_ends(ce, ends) for ce, (_, ends, _) in zip(char_ends, enc)]

    by_chars = pd.DataFrame(
        {
            "subject_id": texts["subject_id"],
            "block_times": seq["block_times"],
            "block_ends": char_ends,
            "n_tokens": texts["text"].str.len(),
        }
    )
    ctx = node_contexts(by_chars, nodes).drop(columns="header_end")  # in characters; n_header_tokens below
    ctx = ctx.rename(columns={"context_end": "context_char_end", "n_tokens": "n_chars"})
    text_of = dict(zip(texts["subject_id"], texts["text"]))
    starts_of = {s: st for s, (_, _, st) in zip(texts["subject_id"], enc)}
    n_of = dict(zip(seq["subject_id"], seq["n_tokens"]))
    cuts = list(zip(ctx["subject_id"], ctx["context_char_end"]))
    ctx_enc = encode_with_offsets(tok, [text_of[s][:c] for s, c in cuts], fmt)
    header_of = {s: int(e[0]) for s, e in zip(texts["subject_id"], char_ends)}
    ctx["context_ids"] = [ids.tolist() for ids, _, _ in ctx_enc]
    ctx["n_context_tokens"] = np.asarray([len(ids) for ids, _, _ in ctx_enc], dtype=np.int64)
    ctx["n_header_tokens"] = np.asarray(
        [token_ends([header_of[s]], ends)[0] for (s, _), (_, ends, _) in zip(cuts, ctx_enc)], dtype=np.int64
    )
    ctx["future_start"] = np.asarray([first_token_at(starts_of[s], c) for s, c in cuts], dtype=np.int64)
    ctx["n_tokens"] = np.asarray([n_of[s] for s, _ in cuts], dtype=np.int64)
    return seq, ctx


def contexts_at(texts: pd.DataFrame, seq: pd.DataFrame, nodes: pd.DataFrame, tok, fmt: str) -> pd.DataFrame:
    """Per node of ``nodes`` (e.g. an ACES task's prediction times): the context text's end in characters and its
    tokens tokenized on their own, from a ``<root>_tokens`` asset's stored blocks (``seq``: subject_id, block_times,
    block_char_ends) and the subjects' ``texts`` (subject_id, text); nothing is re-tokenized but the contexts. Like
    :func:`recipe_token_tables`, it records how many of each context's first tokens are the subject's header."""
    text_of = dict(zip(texts["subject_id"], texts["text"]))
    by_chars = pd.DataFrame(
        {
            "subject_id": seq["subject_id"],
            "block_times": seq["block_times"],
            "block_ends": seq["block_char_ends"],
            "n_tokens": [len(text_of[s]) for s in seq["subject_id"]],
        }
    )
    ctx = node_contexts(by_chars, nodes).drop(columns="header_end")  # in characters; n_header_tokens below
    ctx = ctx.rename(columns={"context_end": "context_char_end", "n_tokens": "n_chars"})
    cuts = list(zip(ctx["subject_id"], ctx["context_char_end"]))
    enc = encode_with_offsets(tok, [text_of[s][:c] for s, c in cuts], fmt)
    header_of = {s: int(e[0]) for s, e in zip(seq["subject_id"], seq["block_char_ends"])}
    ctx["context_ids"] = [ids.tolist() for ids, _, _ in enc]
    ctx["n_context_tokens"] = np.asarray([len(ids) for ids, _, _ in enc], dtype=np.int64)
    ctx["n_header_tokens"] = np.asarray(
        [token_ends([header_of[s]], ends)[0] for (s, _), (_, ends, _) in zip(cuts, enc)], dtype=np.int64
    )
    return ctx
