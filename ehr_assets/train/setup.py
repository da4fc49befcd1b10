"""What a training run is made of, before its first step: the :class:`Objective` a recipe asks for, the trainable
:class:`Parts` (model, predictor, momentum encoder, optimizer) and the :class:`Batches` each step reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.backbone import build_model, enable_checkpointing, trainable_parameters
from ..model.batches import make_jepa_batch, make_sft_batch
from ..model.jepa import MomentumEncoder, Predictor
from ..model.schedules import lr_factor
from ..specs import RecipeSpec
from .data import Sampler, TrainData


@dataclass(frozen=True)
class Objective:
    """What every step of a recipe computes: ``jepa_mode`` (objective jepa / hybrid: decision-node examples, else
    whole timelines), the SFT loss (``sft``) and the JEPA loss (``jepa``, with a predictor and momentum encoder)."""

    jepa_mode: bool
    sft: bool
    jepa: bool

    @classmethod
    def of(cls, recipe: RecipeSpec) -> Objective:
        jepa_mode = recipe.objective in ("jepa", "hybrid")
        lw = recipe.loss_weights
        return cls(jepa_mode=jepa_mode, sft=not jepa_mode or lw.sft > 0, jepa=jepa_mode and lw.jepa > 0)


@dataclass
class Parts:
    """What a run trains: the PeftModel and its base_info, the JEPA predictor and momentum encoder (None without a
    JEPA loss), the parameters AdamW steps, the optimizer and its lr schedule."""

    model: torch.nn.Module
    info: dict
    predictor: Predictor | None
    momentum: MomentumEncoder | None
    params: list[torch.nn.Parameter]
    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    n_trainable: int  # elements of params
    n_total: int  # elements of the model and the predictor


def build_parts(
    recipe: RecipeSpec,
    data: TrainData,
    device: torch.device,
    objective: Objective,
    *,
    init_dir: Path | None,
    save_base_to: Path | None,
    use_bf16: bool,
    log: Callable[[str], None],
) -> Parts:
    """The model (its frozen base saved right away, before LoRA wraps it: it never changes), on ``device`` in train
    mode; the predictor (seeded with ``training.seed + 1``) and momentum encoder; AdamW and its lr schedule."""
    tr, jcfg, o = recipe.training, recipe.jepa, recipe.optimizer
    model, info = build_model(
        recipe,
        data,
        init_dir=init_dir,
        log=log,
        save_base_to=save_base_to,
        base_dtype=torch.bfloat16 if use_bf16 else None,
    )
    model.to(device)
    model.train()
    model.config.use_cache = False
    if tr.gradient_checkpointing:
        enable_checkpointing(model)
    H = model.get_base_model().config.hidden_size
    predictor = momentum = None
    torch.manual_seed(tr.seed + 1)
    if objective.jepa:
        predictor = Predictor(H, jcfg.predictor_depth, jcfg.predictor_width).to(device)
        momentum = MomentumEncoder(model)
    params = [p for _, p in trainable_parameters(model)]
    params += list(predictor.parameters()) if predictor is not None else []
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters()) + (
        sum(p.numel() for p in predictor.parameters()) if predictor is not None else 0
    )
    optim = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, o, tr.steps))
    return Parts(model, info, predictor, momentum, params, optim, sched, n_trainable, n_total)


class Batches:
    """The micro-batches of a run: decision-node examples (jepa / hybrid) or timelines with at least two tokens
    (sft), the ones the :class:`Sampler` picks for (step, accumulation round, process)."""

    def __init__(self, recipe: RecipeSpec, data: TrainData, objective: Objective, world: int, rank: int):
        tr = recipe.training
        self.data, self.jepa_mode, self.seq_len, self.jepa = data, objective.jepa_mode, tr.seq_len, recipe.jepa
        if self.jepa_mode:
            n_items = len(data.jepa_examples)
        else:
            self.seqs = [np.asarray(s, dtype=np.int64) for s in data.sft_sequences if len(s) >= 2]
            n_items = len(self.seqs)
        self.sampler = Sampler(n_items, tr.seed, tr.batch_size, tr.grad_accum, world, rank)

    def get(self, step: int, micro: int, device: torch.device) -> tuple[dict[str, torch.Tensor], int]:
        """The batch tensors of (step, micro) on ``device`` and its number of real (non-pad) tokens."""
        idx = self.sampler.indices(step, micro)
        rng = self.sampler.rng(step, micro)
        d = self.data
        if self.jepa_mode:
            jb = make_jepa_batch([d.jepa_examples[i] for i in idx], self.seq_len, self.jepa, d.mask_id, d.pad_id, rng)
            return jb.tensors(device), int(jb.attention_mask.sum())
        inp, am = make_sft_batch([self.seqs[i] for i in idx], self.seq_len, d.pad_id, rng)
        batch = {"input_ids": torch.from_numpy(inp).to(device), "attention_mask": torch.from_numpy(am).to(device)}
        return batch, int(am.sum())
