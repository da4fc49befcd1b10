"""Frozen embeddings from a trained checkpoint (see :mod:`ehr_assets.train.checkpoint` for the folder layout), or
from a model folder used as it is (:func:`embed_frozen`: a base model or a released SMB-v1 checkpoint, ``objective:
frozen``).

Standalone (torch / transformers / peft / numpy, no Dagster; the model parts come from :mod:`ehr_assets.model`).
An embedding is the final-layer hidden state of the decoder stack (after the final norm, no lm_head) at the last
non-pad token (``pool='last'``) or its mean over the non-pad tokens (``pool='mean'``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .model.backbone import decoder_of, from_pretrained, load_base, pick_device, quiet, require_safetensors
from .model.precision import autocast, bf16_for

__all__ = ["load_encoder", "embed", "embed_frozen", "load_frozen", "pool_hidden"]


def load_encoder(ckpt_dir: Path, device=None) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's PeftModel (base + adapter) in eval mode on ``device`` (default: cuda if available), and the
    recipe as a dict."""
    from peft import PeftModel

    ckpt_dir = Path(ckpt_dir)
    rpath = ckpt_dir / "recipe.json"
    if not rpath.is_file() or not (ckpt_dir / "adapter").is_dir():
        raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint (recipe.json and adapter/ expected)")
    recipe = json.loads(rpath.read_text())
    with quiet():
        base, _ = load_base(ckpt_dir)
        adapter = require_safetensors(ckpt_dir / "adapter", "adapter", "adapter_model.safetensors")
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=False)
    model.to(pick_device(device))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
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
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """float32 ``[N, H]`` embeddings of ``contexts`` (token id arrays, already cropped), rows in input order.

    Batches are formed by length (longest first) and right-padded with an attention mask, so a row's embedding does
    not depend on its batch. A bf16 recipe runs under bf16 autocast where :func:`ehr_assets.model.precision.bf16_for`
    says so (CUDA).
    """
    ctxs = _checked_contexts(contexts, pool, batch_size)
    model, recipe = load_encoder(ckpt_dir)
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
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Like :func:`embed`, with a model folder used as it is (a base model or a released SMB-v1 checkpoint); ``bf16``:
    the recipe asks for bf16 (applied under the device policy of :func:`~ehr_assets.model.precision.bf16_for`)."""
    ctxs = _checked_contexts(contexts, pool, batch_size)
    model = load_frozen(model_dir, vocab_size, seed=seed)
    bf16 = bf16_for("bf16" if bf16 else "fp32", next(model.parameters()).device)
    return embed_with(model, ctxs, pool=pool, batch_size=batch_size, pad_id=pad_id, bf16=bf16, log=log)


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
    whichever device the model is (the callers decide with the device policy)."""
    dec, _ = decoder_of(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    H = base.config.hidden_size
    V = base.get_input_embeddings().weight.shape[0]
    out = np.zeros((len(ctxs), H), dtype=np.float32)
    if not ctxs:
        return out
    bad = [i for i, c in enumerate(ctxs) if int(c.min()) < 0 or int(c.max()) >= V]
    if bad:
        raise ValueError(f"contexts {bad[:5]} have token ids outside the model's vocabulary [0, {V})")
    device = next(model.parameters()).device

    lengths = np.array([len(c) for c in ctxs])
    order = np.argsort(-lengths, kind="stable")
    n_batches = (len(ctxs) + batch_size - 1) // batch_size
    for bi in range(n_batches):
        idx = order[bi * batch_size : (bi + 1) * batch_size]
        L = int(lengths[idx].max())
        inp = np.full((len(idx), L), pad_id, dtype=np.int64)
        am = np.zeros((len(idx), L), dtype=np.int64)
        for r, i in enumerate(idx):
            inp[r, : lengths[i]] = ctxs[i]
            am[r, : lengths[i]] = 1
        inp_t, am_t = torch.from_numpy(inp).to(device), torch.from_numpy(am).to(device)
        with autocast(device, bf16):
            h = dec(input_ids=inp_t, attention_mask=am_t, use_cache=False).last_hidden_state
        out[idx] = pool_hidden(h.float(), am_t, pool).cpu().numpy()
        if log is not None and ((bi + 1) % 10 == 0 or bi + 1 == n_batches):
            log(f"embedded {min((bi + 1) * batch_size, len(ctxs))}/{len(ctxs)} contexts ({bi + 1}/{n_batches} batches)")
    return out
