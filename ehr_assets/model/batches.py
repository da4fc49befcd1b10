"""Masking and batching: decision-node examples cropped and masked for JEPA, random windows of timelines for SFT.

Kept apart from the model (as I-JEPA keeps its masks apart): these are numpy functions of token ids and a random
generator, so a batch is a pure function of (examples, settings, rng). Per decision node ``(ids, boundary)``:
``ids[:boundary]`` is the context (up to and including the node), ``ids[boundary:]`` the future. The example is
cropped to ``seq_len`` (:func:`crop_example`: the first ``F`` future tokens, ``F = min(len(future), max_future_tokens
or seq_len // 2)``, and ``seq_len - F`` context tokens: the header, then the most recent ones); ``round(mask_ratio *
F)`` future positions (:func:`n_masked`) are replaced by the mask token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..specs import Jepa
from ..text.contexts import crop_context


def crop_example(ids: np.ndarray, boundary: int, seq_len: int, max_future: int | None = None, header_len: int = 0):
    """(tokens, C, F): C context tokens and the first F future tokens, C + F <= seq_len.

    ``F = min(len(future), max_future or seq_len // 2, seq_len - 1)`` (at least one context token stays),
    ``C = min(boundary, seq_len - F)``: the context cropped as every reader crops it
    (:func:`ehr_assets.text.contexts.crop_context`: the ``header_len`` header tokens, then the most recent ones).
    """
    ids = np.asarray(ids, dtype=np.int64)
    Fn = min(len(ids) - boundary, max_future or seq_len // 2, seq_len - 1)
    ctx = crop_context(ids, boundary, seq_len - Fn, header_len)
    return np.concatenate([ctx, ids[boundary : boundary + Fn]]), len(ctx), Fn


def n_masked(n_future: int, mask_ratio: float) -> int:
    """Masked positions for ``n_future`` future tokens: round(mask_ratio * F), half up, at least 1 when F >= 1."""
    if n_future <= 0:
        return 0
    return min(n_future, max(1, int(math.floor(mask_ratio * n_future + 0.5))))


def masked_positions(n_future: int, jepa: Jepa, rng: np.random.Generator) -> np.ndarray:
    """The ``n_masked`` future offsets (0-based) to mask: drawn singly (``mask_span`` 1), or as whole aligned spans
    ``[s, s + mask_span)`` in a random order, the last one cut so exactly ``n_masked`` positions are masked."""
    k = n_masked(n_future, jepa.mask_ratio)
    span = jepa.mask_span
    if span <= 1:
        return rng.choice(n_future, size=k, replace=False)
    starts = np.arange(0, n_future, span)[rng.permutation(-(-n_future // span))]
    return np.concatenate([np.arange(s, min(s + span, n_future)) for s in starts])[:k]


@dataclass
class JepaBatch:
    input_ids: np.ndarray  # [B, L] int64 unmasked, right-padded with pad_id
    masked_ids: np.ndarray  # [B, L] int64, masked positions replaced by mask_id
    attention_mask: np.ndarray  # [B, L] int64, 1 = real token
    mask: np.ndarray  # [B, L] bool, the masked (future) positions
    context_len: np.ndarray  # [B] C per row
    future_len: np.ndarray  # [B] F per row

    def tensors(self, device) -> dict[str, torch.Tensor]:
        return {
            k: torch.from_numpy(getattr(self, k)).to(device)
            for k in ("input_ids", "masked_ids", "attention_mask", "mask", "context_len")
        }


def make_jepa_batch(
    examples: list[tuple[np.ndarray, int]],
    seq_len: int,
    jepa: Jepa,
    mask_id: int,
    pad_id: int,
    rng: np.random.Generator,
) -> JepaBatch:
    """The cropped, right-padded examples with ``n_masked`` future positions per row drawn from ``rng``."""
    rows, Cs, Fs = [], [], []
    for ids, b, *h in examples:  # (ids, boundary[, header_len])
        toks, C, Fn = crop_example(ids, int(b), seq_len, jepa.max_future_tokens, *h[:1])
        rows.append(toks)
        Cs.append(C)
        Fs.append(Fn)
    B, L = len(rows), max(len(r) for r in rows)
    inp = np.full((B, L), pad_id, dtype=np.int64)
    am = np.zeros((B, L), dtype=np.int64)
    mask = np.zeros((B, L), dtype=bool)
    for i, (r, C, Fn) in enumerate(zip(rows, Cs, Fs)):
        inp[i, : len(r)] = r
        am[i, : len(r)] = 1
        mask[i, C + masked_positions(Fn, jepa, rng)] = True
    masked = np.where(mask, np.int64(mask_id), inp)
    return JepaBatch(inp, masked, am, mask, np.asarray(Cs), np.asarray(Fs))


def make_sft_batch(sequences: list[np.ndarray], seq_len: int, pad_id: int, rng: np.random.Generator):
    """(input_ids, attention_mask): a random ``seq_len`` window of each sequence (whole if shorter), right-padded."""
    rows = []
    for s in sequences:
        s = np.asarray(s, dtype=np.int64)
        if len(s) > seq_len:
            st = int(rng.integers(0, len(s) - seq_len + 1))
            s = s[st : st + seq_len]
        rows.append(s)
    B, L = len(rows), max(len(r) for r in rows)
    inp = np.full((B, L), pad_id, dtype=np.int64)
    am = np.zeros((B, L), dtype=np.int64)
    for i, r in enumerate(rows):
        inp[i, : len(r)] = r
        am[i, : len(r)] = 1
    return inp, am
