"""The two objectives of SMB-Structure (arXiv 2601.22128) and the optimized step that computes them together.

* **SFT** (:func:`sft_loss`): next-token cross-entropy over the non-pad positions of a sequence.
* **JEPA** (:func:`jepa_loss`): the online encoder reads the masked sequence, the momentum encoder the full one
  (``torch.no_grad``); the predictor maps the online final-layer hidden states at the masked positions onto the
  target's (MSE, targets detached). Both passes use the inner decoder stack (no ``lm_head``). The MSE divided by the
  targets' variance at the masked positions (:func:`target_variance`) is the *normalized* JEPA loss: 1 is what a
  predictor that outputs the targets' mean scores, so a run whose normalized loss stays near 1 learned nothing about
  the future beyond its average.

:func:`step_losses` computes both as the plain three-pass step does, without the work it wastes (see its docstring);
:class:`LinearCrossEntropy` is the chunked cross-entropy it uses when the full-vocabulary logits would be large.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import decoder_of
from .jepa import MomentumEncoder, Predictor


def sft_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose target is a real (non-pad) token."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def jepa_loss(
    model,
    predictor: Predictor,
    momentum: MomentumEncoder,
    batch: dict[str, torch.Tensor],
    *,
    return_parts: bool = False,
):
    """MSE between predictor(online hidden at masked positions) and the momentum encoder's hidden there.

    ``batch``: tensors ``input_ids`` (unmasked), ``masked_ids``, ``attention_mask``, ``mask`` (bool). With
    ``return_parts`` also returns ``(prediction, target)``.
    """
    dec = momentum.decoder
    h = dec(input_ids=batch["masked_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    with torch.no_grad():
        target = momentum.targets(batch["input_ids"], batch["attention_mask"])
    pred = predictor.predict(h, batch)
    tgt = target[batch["mask"]].float().detach()
    loss = F.mse_loss(pred.float(), tgt)
    return (loss, pred, tgt) if return_parts else loss


def target_variance(target: torch.Tensor) -> torch.Tensor:
    """The mean over hidden dimensions of the targets' variance across the masked positions (rows), i.e. the MSE of
    a predictor that always outputs the targets' mean: the denominator of the normalized JEPA loss."""
    t = target.detach().float()
    return (t - t.mean(0, keepdim=True)).pow(2).mean()


# ---------------------------------------------------------------------------------------- the optimized step
class LinearCrossEntropy(torch.autograd.Function):
    """mean CE(h @ w.T, labels) without materializing the [N, V] logits: forward and backward walk ``chunk`` rows
    at a time in fp32 (backward recomputes each chunk's logits). Same value and gradients as
    ``F.cross_entropy((h @ w.T).float(), labels)`` up to float summation order.

    ``idx`` / ``rows`` (optional): the output rows ``w[idx]`` replaced by ``rows`` (PEFT's trained token rows of the
    head), without the full-vocabulary copy of ``w`` that merging them would make; ``rows`` gets its gradient."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, w, labels, chunk: int, idx=None, rows=None):
        n = h.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk):
            total = total + F.cross_entropy(
                _chunk_logits(h[s : s + chunk], w, idx, rows), labels[s : s + chunk], reduction="sum"
            )
        ctx.save_for_backward(h, w, labels, idx, rows)
        ctx.chunk = chunk
        return total / max(n, 1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        h, w, labels, idx, rows = ctx.saved_tensors
        n, chunk = h.shape[0], ctx.chunk
        gh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        gw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        needs = tuple(ctx.needs_input_grad) + (False,) * (6 - len(ctx.needs_input_grad))  # idx / rows optional
        grows = torch.zeros(rows.shape, dtype=torch.float32, device=rows.device) if needs[5] else None
        scale = grad.float() / max(n, 1)
        for s in range(0, n, chunk):
            hs = h[s : s + chunk]
            p = _chunk_logits(hs, w, idx, rows).softmax(-1)
            p[torch.arange(hs.shape[0], device=p.device), labels[s : s + chunk]] -= 1.0
            p = (p * scale).to(h.dtype)
            p_rows = p[:, idx] if idx is not None else None
            if gh is not None:
                gh[s : s + chunk] = p @ w.to(h.dtype)
                if idx is not None:  # the replaced rows contribute rows[j] instead of w[idx[j]]
                    gh[s : s + chunk] += p_rows @ (rows.to(h.dtype) - w[idx].to(h.dtype))
            if gw is not None:
                gw += (p.t() @ hs).float()
            if grows is not None:
                grows += (p_rows.t() @ hs).float()
        if gw is not None and idx is not None:
            gw[idx] = 0.0  # w's replaced rows are not used
        gw = gw.to(w.dtype) if gw is not None else None
        grows = grows.to(rows.dtype) if grows is not None else None
        return (gh, gw, None, None, None, grows)[: len(ctx.needs_input_grad)]


def _chunk_logits(hs, w, idx, rows) -> torch.Tensor:
    """fp32 logits of rows ``hs`` against ``w``, with the columns ``idx`` computed from ``rows`` when given."""
    logits = (hs @ w.t()).float()
    if idx is not None:
        logits[:, idx] = (hs @ rows.to(hs.dtype).t()).float()
    return logits


def output_rows(model) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None:
    """(w, idx, rows) of the output head the fused cross-entropy can use: a plain, ``modules_to_save`` or
    trainable-tokens head (base weight ``w``, the trained rows ``rows`` that replace ``w[idx]``; else None, None),
    no bias, no softcap; None when the head must run as a module (a LoRA-wrapped head, a bias, logit soft-capping)."""
    head = model.get_output_embeddings()
    cfg = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    if head is None or hasattr(head, "lora_A") or getattr(head, "bias", None) is not None:
        return None
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    tokens = getattr(head, "token_adapter", None)
    if tokens is not None:
        active = tokens.active_adapters
        if len(active) != 1 or tokens.merged:
            return None
        a = active[0]
        w = tokens.get_base_layer().weight
        idx = torch.as_tensor(tokens.token_indices[a], device=w.device)
        return w, idx, tokens.trainable_tokens_delta[a]
    w = getattr(head, "weight", None)
    return (w, None, None) if isinstance(w, torch.Tensor) and w.dim() == 2 else None


# logits up to this many elements (rows x vocabulary) are materialized in one piece; beyond, the chunked linear
# cross-entropy bounds memory. Measured on the CPU demo shape (4k rows x 2k vocab): the plain path is faster there.
FUSED_CE_MIN_ELEMENTS = 2**26


def next_token_loss(
    model,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    chunk: int = 4096,
    fused: bool | None = None,
) -> torch.Tensor:
    """The SFT loss from final hidden states: lm_head only at positions whose next token is real (no pad rows).
    ``fused`` (default: when rows x vocabulary > :data:`FUSED_CE_MIN_ELEMENTS`) computes it with
    :class:`LinearCrossEntropy`, without full-vocabulary fp32 logits in memory."""
    valid = attention_mask[:, 1:] == 1
    h = hidden[:, :-1][valid]
    labels = input_ids[:, 1:][valid]
    out = output_rows(model)
    if fused is None:
        fused = out is not None and h.shape[0] * out[0].shape[0] > FUSED_CE_MIN_ELEMENTS
    if not fused or out is None:
        return F.cross_entropy(model.get_output_embeddings()(h).float(), labels)
    w, idx, rows = out
    return LinearCrossEntropy.apply(h, w, labels, chunk, idx, rows)


def _stacked(dec, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]):
    """One decoder call over the rows of ``a`` and ``b`` ((ids, attention mask) each, right-padded; the shorter
    padded further): the final hidden states of each, at their own lengths (causal, so padding changes nothing)."""
    L = max(a[0].shape[1], b[0].shape[1])

    def pad(t):
        return F.pad(t, (0, L - t.shape[1]))

    ids = torch.cat([pad(a[0]), pad(b[0])])
    am = torch.cat([pad(a[1]), pad(b[1])])
    h = dec(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state
    n = a[0].shape[0]
    return h[:n, : a[0].shape[1]], h[n:, : b[0].shape[1]]


def step_losses(
    model,
    predictor: Predictor | None,
    momentum: MomentumEncoder | None,
    batch: dict[str, torch.Tensor],
    *,
    sft: bool,
    jepa: bool,
    sft_batch: dict[str, torch.Tensor] | None = None,
    chunk: int = 4096,
    stack: bool | None = None,
    fused: bool | None = None,
    stats: dict[str, float] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(SFT loss, JEPA loss) of one step, as computed by :func:`sft_loss` and :func:`jepa_loss` (the plain
    three-pass step) without the work they waste: no lm_head in the JEPA rows, lm_head only at positions with a
    real next token, the cross-entropy chunked when the logits would be large (``fused``, see
    :func:`next_token_loss`), and on a GPU (``stack``, default: CUDA) one decoder call over the SFT rows and the
    masked online rows stacked together (bigger matrix products; on the CPU it measured slower). The momentum pass
    stays a separate no-grad call (other weights). ``tests/train/test_training.py`` checks losses and gradients
    match.

    ``batch``: the JEPA batch (``input_ids``, ``masked_ids``, ``attention_mask``, ``mask``). The SFT loss reads
    ``sft_batch`` (``input_ids``, ``attention_mask``: windows of whole timelines, what the training loop passes),
    or ``batch``'s unmasked rows when it is None. ``stats``: receives ``jepa_target_var``, the
    :func:`target_variance` of the JEPA targets (normalized JEPA loss = JEPA loss / it)."""
    dec = decoder_of(model)[0]
    sb = sft_batch if sft_batch is not None else batch
    ids, am = batch.get("input_ids"), batch.get("attention_mask")
    s_ids, s_am = sb["input_ids"], sb["attention_mask"]
    if stack is None:
        stack = s_ids.is_cuda
    if sft and jepa and stack:
        h_sft, h_on = _stacked(dec, (s_ids, s_am), (batch["masked_ids"], am))
    else:
        h_sft = dec(input_ids=s_ids, attention_mask=s_am, use_cache=False).last_hidden_state if sft else None
        h_on = (
            dec(input_ids=batch["masked_ids"], attention_mask=am, use_cache=False).last_hidden_state if jepa else None
        )
    ls = next_token_loss(model, h_sft, s_ids, s_am, chunk, fused) if sft else None
    lj = None
    if jepa:
        with torch.no_grad():
            target = momentum.targets(ids, am)
        tgt = target[batch["mask"]].float()
        lj = F.mse_loss(predictor.predict(h_on, batch).float(), tgt)
        if stats is not None:
            stats["jepa_target_var"] = float(target_variance(tgt))
    return ls, lj
