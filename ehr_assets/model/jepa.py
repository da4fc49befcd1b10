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
from torch import nn

from .backbone import decoder_of, is_peft, trainable_parameters


class Predictor(nn.Module):
    """``depth`` linear layers with GELU in between: H -> W -> ... -> W -> H (depth 1: a single Linear(H, H))."""

    def __init__(self, hidden: int, depth: int = 2, width: int | None = None):
        super().__init__()
        W = width or hidden
        self.hidden, self.depth, self.width = hidden, depth, W
        dims = [hidden] + [W] * (depth - 1) + [hidden]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MomentumEncoder:
    """EMA of the trainable parameters of a PeftModel; the target pass swaps them into the shared online model.

    No second base model exists: :meth:`hidden` runs ``torch.func.functional_call`` on the online decoder stack with
    the EMA tensors in place of the trainable ones (the frozen base tensors are the online model's own).
    """

    def __init__(self, model):
        self.model = model
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
    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-layer hidden states of the momentum encoder (eval mode: no dropout), without a graph."""
        was_training = self.model.training
        self.model.eval()
        try:
            out = torch.func.functional_call(
                self.decoder,
                self.decoder_params,
                args=(),
                kwargs={"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False},
                strict=False,
            )
        finally:
            self.model.train(was_training)
        return out.last_hidden_state.detach()

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
