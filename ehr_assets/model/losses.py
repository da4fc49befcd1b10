"""The two objectives of SMB-Structure (arXiv 2601.22128) and the optimized step that computes them together.

* **SFT** (:func:`sft_loss`): next-token cross-entropy over the non-pad positions of a sequence.
* **JEPA** (:func:`jepa_loss`): the online encoder reads the masked sequence, the momentum encoder the full one
  (``torch.no_grad``); the predictor maps the online final-layer hidden states at the masked positions onto the
  target's (MSE, targets detached). Both passes use the inner decoder stack (no ``lm_head``).

:func:`step_losses` computes both as the plain three-pass step does, without the work it wastes (see its docstring);
:class:`LinearCrossEntropy` is the chunked cross-entropy it uses when the full-vocabulary logits would be large.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backbone import decoder_of
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
        target = momentum.hidden(batch["input_ids"], batch["attention_mask"])
    m = batch["mask"]
    pred = predictor(h[m])
    tgt = target[m].float().detach()
    loss = F.mse_loss(pred.float(), tgt)
    return (loss, pred, tgt) if return_parts else loss


# ---------------------------------------------------------------------------------------- the optimized step
class LinearCrossEntropy(torch.autograd.Function):
    """mean CE(h @ w.T, labels) without materializing the [N, V] logits: forward and backward walk ``chunk`` rows
    at a time in fp32 (backward recomputes each chunk's logits). Same value and gradients as
    ``F.cross_entropy((h @ w.T).float(), labels)`` up to float summation order."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, w, labels, chunk: int):
        n = h.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk):
            logits = (h[s : s + chunk] @ w.t()).float()
            total = total + F.cross_entropy(logits, labels[s : s + chunk], reduction="sum")
        ctx.save_for_backward(h, w, labels)
        ctx.chunk = chunk
        return total / max(n, 1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        h, w, labels = ctx.saved_tensors
        n, chunk = h.shape[0], ctx.chunk
        gh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        gw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        scale = grad.float() / max(n, 1)
        for s in range(0, n, chunk):
            hs = h[s : s + chunk]
            p = (hs @ w.t()).float().softmax(-1)
            p[torch.arange(hs.shape[0], device=p.device), labels[s : s + chunk]] -= 1.0
            p = (p * scale).to(h.dtype)
            if gh is not None:
                gh[s : s + chunk] = p @ w.to(h.dtype)
            if gw is not None:
                gw += (p.t() @ hs).float()
        return gh, (gw.to(w.dtype) if gw is not None else None), None, None


def _output_weight(model) -> torch.Tensor | None:
    """The lm_head weight the fused cross-entropy can use (plain or modules_to_save head, no bias, no softcap), or
    None when the head must run as a module (a LoRA-wrapped head, a bias, logit soft-capping)."""
    head = model.get_output_embeddings()
    cfg = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    if head is None or hasattr(head, "lora_A") or getattr(head, "bias", None) is not None:
        return None
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    w = getattr(head, "weight", None)
    return w if isinstance(w, torch.Tensor) and w.dim() == 2 else None


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
    w = _output_weight(model)
    if fused is None:
        fused = w is not None and h.shape[0] * w.shape[0] > FUSED_CE_MIN_ELEMENTS
    if not fused or w is None:
        return F.cross_entropy(model.get_output_embeddings()(h).float(), labels)
    return LinearCrossEntropy.apply(h, w, labels, chunk)


def step_losses(
    model,
    predictor: Predictor | None,
    momentum: MomentumEncoder | None,
    batch: dict[str, torch.Tensor],
    *,
    sft: bool,
    jepa: bool,
    chunk: int = 4096,
    stack: bool | None = None,
    fused: bool | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(SFT loss, JEPA loss) of one batch, as computed by :func:`sft_loss` and :func:`jepa_loss` (the plain
    three-pass step) without the work they waste: no lm_head in the JEPA rows, lm_head only at positions with a
    real next token, the cross-entropy chunked when the logits would be large (``fused``, see
    :func:`next_token_loss`), and on a GPU (``stack``, default: CUDA) one decoder call over the SFT rows and the
    masked online rows stacked together (bigger matrix products; on the CPU it measured slower). The momentum pass
    stays a separate no-grad call (other weights). ``tests/test_training.py`` checks losses and gradients match."""
    dec = decoder_of(model)[0]
    ids, am = batch["input_ids"], batch["attention_mask"]
    B = ids.shape[0]
    if stack is None:
        stack = ids.is_cuda
    if sft and jepa and stack:
        h = dec(
            input_ids=torch.cat([ids, batch["masked_ids"]]), attention_mask=torch.cat([am, am]), use_cache=False
        ).last_hidden_state
        h_sft, h_on = h[:B], h[B:]
    else:
        h_sft = dec(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state if sft else None
        h_on = (
            dec(input_ids=batch["masked_ids"], attention_mask=am, use_cache=False).last_hidden_state if jepa else None
        )
    ls = next_token_loss(model, h_sft, ids, am, chunk, fused) if sft else None
    lj = None
    if jepa:
        with torch.no_grad():
            target = momentum.hidden(ids, am)
        m = batch["mask"]
        lj = F.mse_loss(predictor(h_on[m]).float(), target[m].float())
    return ls, lj
