"""Frozen embeddings from a trained checkpoint (see :mod:`ehr_assets.train.checkpoint` for the folder layout: LoRA or
full fine-tuning, and LoRA checkpoints made before ``trainable_tokens`` existed), or
from a model folder used as it is (:func:`embed_frozen`: a base model or a released SMB-v1 checkpoint, ``objective:
frozen``).

Standalone (torch / transformers / peft / numpy, no Dagster; the model parts come from :mod:`ehr_assets.model`).
An embedding is the final-layer hidden state of the decoder stack (after the final norm, no lm_head) at the last
non-pad token (``pool='last'``) or its mean over the non-pad tokens (``pool='mean'``). Speed at real size (89k decision
nodes): contexts that are prefixes of other contexts share their forward pass, batches hold a token budget rather
than a row count, and the causal mask alone replaces the padding mask (see :func:`embed_with`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .model.backbone import is_peft, load_trained
from .model.base import decoder_of, from_pretrained, pick_device, quiet
from .model.precision import autocast, bf16_for
from .progress import Progress
from .threads import limited

__all__ = ["load_encoder", "embed", "embed_frozen", "load_frozen", "pool_hidden", "shared_prefixes", "token_batches"]


def load_encoder(ckpt_dir: Path, device=None) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's trained model (LoRA: base + adapter; full fine-tuning: the whole model) in eval mode on
    ``device`` (default: cuda if available), and the recipe as a dict."""
    model, recipe = load_trained(ckpt_dir)
    model.to(pick_device(device))
    return model, recipe


def pool_hidden(h: torch.Tensor, attention_mask: torch.Tensor, pool: str) -> torch.Tensor:
    """[B, L, H] hidden states, [B, L] right-padded mask -> [B, H]."""
    m = attention_mask.to(h.dtype)
    if pool == "last":
        last = attention_mask.long().sum(1) - 1
        return h[torch.arange(h.shape[0], device=h.device), last]
    if pool == "mean":
        return (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)
    raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")


def _checked_contexts(contexts: list[np.ndarray], pool: str, batch_size: int) -> list[np.ndarray]:
    """The contexts as 1-d int64 arrays, after checking the pooling, the batch size and that none is empty."""
    if pool not in ("last", "mean"):
        raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ctxs = [np.asarray(c, dtype=np.int64).reshape(-1) for c in contexts]
    for i, c in enumerate(ctxs):
        if c.size == 0:
            raise ValueError(f"contexts[{i}] is empty: every context needs at least one token")
    return ctxs


@torch.no_grad()
def embed(
    ckpt_dir: Path,
    contexts: list[np.ndarray],
    *,
    pool: str = "last",
    batch_size: int = 32,
    pad_id: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """float32 ``[N, H]`` embeddings of ``contexts`` (token id arrays, already cropped), rows in input order.

    A context that is a prefix of another is read off that one's forward pass; the rest are batched by length
    (longest first, at most ``batch_size`` x the longest length tokens a batch) and right-padded, so a row's embedding
    does not depend on its batch. ``threads``: torch / BLAS threads for the pass (:func:`ehr_assets.threads.limited`;
    None: as the process is set). A bf16 recipe runs under bf16 autocast where
    :func:`ehr_assets.model.precision.bf16_for` says so (CUDA). ``log`` gets a progress line at least every 15 s while
    batches finish.
    """
    ctxs = _checked_contexts(contexts, pool, batch_size)
    with limited(threads):
        model, recipe = load_encoder(ckpt_dir)
        if is_peft(model):  # LoRA: W + BA once, a third of the matmuls and none of the adapter overhead
            with quiet():
                model = model.merge_and_unload()
        bf16 = bf16_for(recipe.get("training", {}).get("precision", "fp32"), next(model.parameters()).device)
        return embed_with(model, ctxs, pool=pool, batch_size=batch_size, pad_id=pad_id, bf16=bf16, log=log)


def load_frozen(model_dir: Path, vocab_size: int | None = None, *, seed: int = 0, device=None):
    """A local HF model folder as a frozen encoder (eval mode, no grad). When the tokenizer gained tokens
    (``vocab_size`` > the embedding rows) the embeddings are resized; the new rows are initialised with
    ``seed`` so that repeated runs embed identically."""
    with quiet():
        model = from_pretrained(model_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size is not None and vocab_size > rows:
        torch.manual_seed(seed)
        model.resize_token_embeddings(int(vocab_size), mean_resizing=False)
    model.to(pick_device(device))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def embed_frozen(
    model_dir: Path,
    contexts: list[np.ndarray],
    *,
    vocab_size: int | None = None,
    pool: str = "last",
    batch_size: int = 32,
    pad_id: int = 0,
    bf16: bool = False,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Like :func:`embed`, with a model folder used as it is (a base model or a released SMB-v1 checkpoint); ``bf16``:
    the recipe asks for bf16 (applied under the device policy of :func:`~ehr_assets.model.precision.bf16_for`)."""
    ctxs = _checked_contexts(contexts, pool, batch_size)
    with limited(threads):
        model = load_frozen(model_dir, vocab_size, seed=seed)
        bf16 = bf16_for("bf16" if bf16 else "fp32", next(model.parameters()).device)
        return embed_with(model, ctxs, pool=pool, batch_size=batch_size, pad_id=pad_id, bf16=bf16, log=log)


def shared_prefixes(ctxs: list[np.ndarray]) -> np.ndarray:
    """For each context, the context whose forward pass also gives its embedding: the index of a context it is a
    prefix of (itself when it is a prefix of none).

    A decoder is causal, so the hidden state at position ``p`` of a sequence depends on its first ``p + 1`` tokens only:
    a decision node's context that is a prefix of a later node's context (same subject, both uncropped) is read off the
    later one's forward pass at its own length. Found in one sort: in lexicographic order a context is a prefix of some
    other one exactly when it is a prefix of the next one.
    """
    keys = [c.astype(np.int64).tobytes() for c in ctxs]  # fixed width: a byte prefix is a token prefix
    order = sorted(range(len(ctxs)), key=keys.__getitem__)
    root = np.arange(len(ctxs))
    for k in range(len(order) - 2, -1, -1):
        a, b = order[k], order[k + 1]
        if keys[b].startswith(keys[a]):
            root[a] = root[b]
    return root


def token_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices of ``lengths`` in batches, longest first, each holding at most ``batch_size x the longest length``
    tokens (padded): short sequences go many to a batch, and no batch is larger than the first."""
    order = np.argsort(-lengths, kind="stable")
    budget = batch_size * int(lengths.max()) if len(lengths) else 0
    out, i = [], 0
    while i < len(order):
        rows = max(1, budget // int(lengths[order[i]]))
        out.append(order[i : i + rows])
        i += rows
    return out


def _pooled_rows(h: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor, pool: str) -> torch.Tensor:
    """Embeddings of sequences that are prefixes of batch rows: row ``rows[j]``'s hidden states ``h`` pooled over its
    first ``lengths[j]`` positions (the last one, or their mean through a cumulative sum)."""
    if pool == "last":
        return h[rows, lengths - 1]
    return h.cumsum(1)[rows, lengths - 1] / lengths.to(h.dtype).unsqueeze(1)


@torch.no_grad()
def embed_with(
    model,
    ctxs: list[np.ndarray],
    *,
    pool: str,
    batch_size: int,
    pad_id: int,
    bf16: bool,
    log: Callable[[str], None] | None,
) -> np.ndarray:
    """Embeddings of checked ``ctxs`` with a loaded ``model`` (on its device); under bf16 autocast when ``bf16``, on
    whichever device the model is (the callers decide with the device policy). One forward pass per shared prefix
    (:func:`shared_prefixes`), batched by tokens (:func:`token_batches`), right-padded and without an attention mask:
    under the causal mask no real position attends to the padding after it, so the rows are exact and attention takes
    the fused causal kernel."""
    dec, _ = decoder_of(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    V = base.get_input_embeddings().weight.shape[0]
    out = np.zeros((len(ctxs), base.config.hidden_size), dtype=np.float32)
    if not ctxs:
        return out
    bad = [i for i, c in enumerate(ctxs) if int(c.min()) < 0 or int(c.max()) >= V]
    if bad:
        raise ValueError(f"contexts {bad[:5]} have token ids outside the model's vocabulary [0, {V})")
    device = next(model.parameters()).device

    lengths = np.array([len(c) for c in ctxs])
    root = shared_prefixes(ctxs)
    roots = np.unique(root)
    members: dict[int, list[int]] = {r: [] for r in roots.tolist()}
    for i, r in enumerate(root.tolist()):
        members[r].append(i)
    total = int(lengths[roots].sum())  # the tokens through the model: the unit of progress (batches shrink)
    progress = Progress("embedding", total, log, unit="tokens")
    done = 0

    def note() -> str:
        t = torch.get_num_threads()
        return f"{done:,}/{len(ctxs):,} contexts, {t} thread{'s' if t != 1 else ''}"

    for idx in token_batches(lengths[roots], batch_size):
        batch = roots[idx]
        inp = np.full((len(batch), int(lengths[batch].max())), pad_id, dtype=np.int64)
        for r, i in enumerate(batch):
            inp[r, : lengths[i]] = ctxs[i]
        mem = [(m, r) for r, i in enumerate(batch.tolist()) for m in members[i]]
        m_idx = np.array([m for m, _ in mem])
        with torch.inference_mode(), autocast(device, bf16):
            h = dec(input_ids=torch.from_numpy(inp).to(device), use_cache=False).last_hidden_state.float()
            rows = torch.tensor([r for _, r in mem], device=device)
            out[m_idx] = _pooled_rows(h, rows, torch.from_numpy(lengths[m_idx]).to(device), pool).cpu().numpy()
        done += len(mem)
        progress.advance(int(lengths[batch].sum()), note=note())
    progress.finish(f"{note()}; {int(lengths.sum()):,} context tokens (prefixes shared)")
    return out
