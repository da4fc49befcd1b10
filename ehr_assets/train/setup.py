"""What a training run is made of, before its first step: the :class:`Objective` a recipe asks for, the check that
the data can train it (:func:`validate`), the trainable :class:`Parts` (model, predictor, momentum encoder,
optimizer) and the :class:`Batches` each step reads.

Every regime reads the same data for the same loss: its SFT term from random windows of whole train timelines (the
``sft`` stream, what the ``sft`` recipe trains on) and its JEPA term from decision-node examples cropped and masked
(the ``jepa`` stream). A run continues the streams where its ``init_from`` run left them (:class:`Batches`)."""

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
    """What every step of a recipe computes: the SFT loss (``sft``, on windows of whole timelines) and the JEPA loss
    (``jepa``, on decision-node examples, with a predictor and momentum encoder). ``jepa_mode``: objective jepa /
    hybrid (the JEPA parts exist even when a weight is zero)."""

    jepa_mode: bool
    sft: bool
    jepa: bool

    @classmethod
    def of(cls, recipe: RecipeSpec) -> Objective:
        jepa_mode = recipe.objective in ("jepa", "hybrid")
        lw = recipe.loss_weights
        return cls(jepa_mode=jepa_mode, sft=not jepa_mode or lw.sft > 0, jepa=jepa_mode and lw.jepa > 0)


# ------------------------------------------------------------------------------------------------------ validation
def _check_ids(name: str, V: int, ids: np.ndarray, what: str) -> None:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"recipe {name!r}: {what} must be a 1-d array of token ids, got shape {a.shape}")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= V):
        raise ValueError(
            f"recipe {name!r}: {what} has token ids outside [0, {V}) (min {int(a.min())}, max {int(a.max())})"
        )


def _validate_examples(recipe: RecipeSpec, data: TrainData, V: int) -> None:
    """The examples the objective reads: jepa_examples (boundaries inside) for JEPA, sft_sequences for the SFT loss."""
    name, objective = recipe.name, Objective.of(recipe)
    if objective.jepa_mode:
        if not data.jepa_examples:
            raise ValueError(
                f"recipe {name!r} (objective {recipe.objective}): no jepa_examples (decision nodes with a future) "
                "to train on"
            )
        for i, (ids, b, *_) in enumerate(data.jepa_examples):
            _check_ids(name, V, ids, f"jepa_examples[{i}]")
            n = len(ids)
            if not isinstance(b, (int, np.integer)) or not 1 <= int(b) < n:
                raise ValueError(
                    f"recipe {name!r}: jepa_examples[{i}] has boundary {b!r} out of range: it must satisfy "
                    f"1 <= boundary < len(ids) = {n} (at least one context and one future token)"
                )
    if not objective.sft:
        return
    if not data.sft_sequences:
        raise ValueError(f"recipe {name!r} (SFT loss): no sft_sequences to train on (empty train split?)")
    for i, s in enumerate(data.sft_sequences):
        _check_ids(name, V, s, f"sft_sequences[{i}]")
    if not any(len(s) >= 2 for s in data.sft_sequences):
        raise ValueError(f"recipe {name!r} (SFT loss): every sft sequence has fewer than 2 tokens")


def validate(recipe: RecipeSpec, data: TrainData) -> None:
    """A ValueError naming the recipe when ``data`` cannot train it: special ids outside the vocabulary, loss weights
    that train nothing, no usable example, token ids outside the vocabulary, a sequence longer than the backbone."""
    name = recipe.name
    V = int(data.vocab_size)
    if V <= 0:
        raise ValueError(f"recipe {name!r}: vocab_size must be positive, got {V}")
    for k in ("pad_id", "mask_id", "bos_id", "eos_id"):
        v = int(getattr(data, k))
        if not 0 <= v < V:
            raise ValueError(f"recipe {name!r}: {k}={v} is outside the vocabulary [0, {V})")
    lw = recipe.loss_weights
    if (recipe.objective == "sft" and lw.sft <= 0) or (recipe.objective != "sft" and lw.sft + lw.jepa <= 0):
        raise ValueError(f"recipe {name!r}: loss_weights give nothing to train ({lw.model_dump()})")
    _validate_examples(recipe, data, V)
    if recipe.backbone.config is not None and recipe.training.seq_len > recipe.backbone.config.max_position_embeddings:
        raise ValueError(
            f"recipe {name!r}: training.seq_len {recipe.training.seq_len} exceeds the backbone's "
            f"max_position_embeddings {recipe.backbone.config.max_position_embeddings}"
        )


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
    H = model.config.hidden_size
    predictor = momentum = None
    torch.manual_seed(tr.seed + 1)
    if objective.jepa:
        max_offset = min(jcfg.max_future_tokens or tr.seq_len // 2, tr.seq_len - 1)
        predictor = Predictor(
            H, jcfg.predictor_depth, jcfg.predictor_width, read=jcfg.predict_from, max_offset=max_offset
        ).to(device)
        momentum = MomentumEncoder(model, jcfg.target_layers, jcfg.target_norm)
    params = [p for _, p in trainable_parameters(model)]
    pred_params = list(predictor.parameters()) if predictor is not None else []
    n_trainable = sum(p.numel() for p in params + pred_params)
    n_total = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in pred_params)
    groups = [{"params": params}]
    if pred_params:  # the model's group first: the loop logs param_groups[0]'s lr
        groups.append({"params": pred_params, "lr": o.lr * jcfg.predictor_lr_scale})
    params = params + pred_params
    optim = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, o, tr.steps))
    return Parts(model, info, predictor, momentum, params, optim, sched, n_trainable, n_total)


@dataclass
class StepBatch:
    """What one micro-batch feeds the losses: the JEPA batch (``input_ids``, ``masked_ids``, ``attention_mask``,
    ``mask``) and the SFT batch (``input_ids``, ``attention_mask``), each None when its loss is off, and the real
    (non-pad) tokens of each."""

    jepa: dict[str, torch.Tensor] | None
    sft: dict[str, torch.Tensor] | None
    jepa_tokens: int
    sft_tokens: int


class Batches:
    """The micro-batches of a run: SFT windows of the train timelines with at least two tokens (``sft`` stream, when
    the SFT loss is on) and cropped, masked decision-node examples (``jepa`` stream, when the JEPA loss is on), the
    ones each stream's :class:`Sampler` picks for (step, accumulation round, process). ``starts``: each stream's
    position where the ``init_from`` run left it (:func:`ehr_assets.train.checkpoint.stream_starts`)."""

    def __init__(
        self,
        recipe: RecipeSpec,
        data: TrainData,
        objective: Objective,
        world: int,
        rank: int,
        starts: dict[str, int] | None = None,
    ):
        tr = recipe.training
        self.data, self.seq_len, self.jepa_cfg = data, tr.seq_len, recipe.jepa
        self.starts = {k: int((starts or {}).get(k, 0)) for k in Sampler.STREAMS}

        def sampler(n: int, stream: str) -> Sampler:
            return Sampler(
                n, tr.seed, tr.batch_size, tr.grad_accum, world, rank, stream=stream, start=self.starts[stream]
            )

        self.seqs = [np.asarray(s, dtype=np.int64) for s in data.sft_sequences if len(s) >= 2]
        self.sft = sampler(len(self.seqs), "sft") if objective.sft else None
        self.jepa = sampler(len(data.jepa_examples), "jepa") if objective.jepa else None

    def get(self, step: int, micro: int, device: torch.device) -> StepBatch:
        """The tensors of (step, micro) on ``device`` and their real-token counts."""
        d = self.data
        jb = sb = None
        n_j = n_s = 0
        if self.jepa is not None:
            idx, rng = self.jepa.indices(step, micro), self.jepa.rng(step, micro)
            b = make_jepa_batch(
                [d.jepa_examples[i] for i in idx], self.seq_len, self.jepa_cfg, d.mask_id, d.pad_id, rng
            )
            jb, n_j = b.tensors(device), int(b.attention_mask.sum())
        if self.sft is not None:
            idx, rng = self.sft.indices(step, micro), self.sft.rng(step, micro)
            inp, am = make_sft_batch([self.seqs[i] for i in idx], self.seq_len, d.pad_id, rng)
            sb = {"input_ids": torch.from_numpy(inp).to(device), "attention_mask": torch.from_numpy(am).to(device)}
            n_s = int(am.sum())
        return StepBatch(jb, sb, n_j, n_s)

    def ends(self, steps: int) -> dict[str, int]:
        """Each stream's position after ``steps`` optimizer steps (an unused stream stays where it started)."""
        samplers = {"sft": self.sft, "jepa": self.jepa}
        return {k: (smp.end(steps) if smp is not None else self.starts[k]) for k, smp in samplers.items()}
