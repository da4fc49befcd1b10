"""The two parts JEPA adds to the backbone: the predictor MLP and the momentum (EMA) encoder.

* :class:`Predictor` maps the online encoder's final-layer hidden states at the masked positions onto the target's:
  ``predictor_depth`` linear layers with GELU in between, width ``predictor_width`` (default: the hidden size).
* :class:`MomentumEncoder` keeps EMA copies of the *trainable* parameters only (LoRA adapters, the added tokens'
  rows, ``modules_to_save`` copies; every weight under ``finetune: full``); the frozen base is shared, and the target
  pass is a ``torch.func.functional_call`` of the online decoder with the EMA tensors swapped in.
  ``ema = tau * ema + (1 - tau) * online`` after every optimizer step (the schedule of ``tau`` is
  :func:`ehr_assets.model.schedules.tau_at`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import decoder_of, is_peft, trainable_parameters


class Predictor(nn.Module):
    """``depth`` linear layers with GELU in between: H -> W -> ... -> W -> H (depth 1: a single Linear(H, H)).

    ``read`` (:meth:`predict`): ``masked`` maps the online hidden state at each masked position; ``previous`` the
    one at the position before it (a causal LM's prediction of the token there); ``context`` the hidden state at the
    last context position plus a learned embedding of the masked position's offset into the future (``max_offset``
    rows), so every target is predicted from what the node embedding holds."""

    def __init__(self, hidden: int, depth: int = 2, width: int | None = None, read: str = "masked", max_offset=0):
        super().__init__()
        W = width or hidden
        self.hidden, self.depth, self.width, self.read = hidden, depth, W, read
        dims = [hidden] + [W] * (depth - 1) + [hidden]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)
        if read == "context":
            if max_offset < 1:
                raise ValueError("read='context' needs max_offset >= 1 (the longest future)")
            self.offset = nn.Embedding(max_offset, hidden)
            nn.init.normal_(self.offset.weight, std=0.02)
        elif read not in ("masked", "previous"):
            raise ValueError(f"read must be 'masked', 'previous' or 'context', not {read!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def predict(self, h: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predictions for the rows ``batch["mask"]`` selects (row-major, the order of ``target[mask]``) from the
        online hidden states ``h`` [B, L, H]; ``context`` reads ``batch["context_len"]``."""
        m = batch["mask"]
        if self.read == "masked":
            return self(h[m])
        b, pos = m.nonzero(as_tuple=True)
        if self.read == "previous":  # a masked position is a future one: its previous position exists
            return self(h[b, pos - 1])
        c = batch["context_len"].to(pos.device)[b]
        off = (pos - c).clamp(0, self.offset.num_embeddings - 1)
        return self(h[b, c - 1] + self.offset(off).to(h.dtype))


class MomentumEncoder:
    """EMA of the trainable parameters of a PeftModel; the target pass swaps them into the shared online model.

    No second base model exists: :meth:`hidden` runs ``torch.func.functional_call`` on the online decoder stack with
    the EMA tensors in place of the trainable ones (the frozen base tensors are the online model's own).
    """

    def __init__(self, model, target_layers: int = 1, target_norm: str = "none"):
        self.model = model
        self.target_layers, self.target_norm = int(target_layers), target_norm
        self.decoder, self.prefix = decoder_of(model)
        self.names = [n for n, _ in trainable_parameters(model)]
        self.ema: dict[str, torch.Tensor] = {n: p.detach().clone() for n, p in trainable_parameters(model)}
        k = len(self.prefix)
        # same tensor objects, named relative to the decoder (lm_head's EMA copy is kept but unused by the pass)
        self.decoder_params = {n[k:]: t for n, t in self.ema.items() if n.startswith(self.prefix)}

    @torch.no_grad()
    def update(self, tau: float) -> None:
        """``ema = tau * ema + (1 - tau) * online`` on every trainable tensor; nothing else is touched."""
        params = dict(self.model.named_parameters())
        ema = [self.ema[n] for n in self.names]
        online = [params[n].detach() for n in self.names]
        torch._foreach_mul_(ema, float(tau))
        torch._foreach_add_(ema, online, alpha=1.0 - float(tau))

    @torch.no_grad()
    def hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, layers: int = 1
    ) -> torch.Tensor:
        """Final-layer hidden states of the momentum encoder (eval mode: no dropout), without a graph; ``layers``
        K > 1: the outputs of the top K layers stacked on a new first dimension [K, B, L, H] (the final one normed,
        as the decoder returns it)."""
        was_training = self.model.training
        self.model.eval()
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if layers > 1:
            kwargs["output_hidden_states"] = True
        try:
            out = torch.func.functional_call(self.decoder, self.decoder_params, args=(), kwargs=kwargs, strict=False)
        finally:
            self.model.train(was_training)
        if layers > 1:
            return torch.stack(out.hidden_states[-layers:]).detach()
        return out.last_hidden_state.detach()

    @torch.no_grad()
    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The JEPA targets [B, L, H]: the final hidden states (``target_layers`` 1), or the mean of the top K
        layers' outputs; ``target_norm: layer`` layer-norms each layer's vectors (no affine) before the mean and
        the mean again (data2vec's recipe; I-JEPA layer-norms its targets)."""
        h = self.hidden(input_ids, attention_mask, layers=self.target_layers).float()
        layer_norm = self.target_norm == "layer"
        if self.target_layers > 1:
            h = (F.layer_norm(h, h.shape[-1:]) if layer_norm else h).mean(0)
        return F.layer_norm(h, h.shape[-1:]) if layer_norm else h

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The EMA weights, fp32 on CPU, with the keys of the checkpoint's weights file: those of
        ``adapter/adapter_model.safetensors`` (LoRA: loadable as an adapter), else the model's own parameter names
        (``finetune: full``)."""
        if is_peft(self.model):
            from peft import get_peft_model_state_dict

            sd = dict(self.model.state_dict())
            sd.update(self.ema)
            out = get_peft_model_state_dict(self.model, state_dict=sd, save_embedding_layers=False)
        else:
            out = self.ema
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}
