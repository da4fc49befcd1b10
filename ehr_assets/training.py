"""LoRA fine-tuning of an LLM backbone on serialized EHR timelines: SFT (next token) and JEPA (masked future latents).

Standalone module (torch / transformers / peft / safetensors / numpy only, no Dagster), so it runs as-is on GPU
machines. The entry point is :func:`train`; the pieces it is made of are public so the tests can check them one by one.

Method (SMB-Structure, arXiv 2601.22128)
----------------------------------------
* **SFT**: next-token cross-entropy over the non-pad positions of a sequence.
* **JEPA**, per decision node ``(ids, boundary)``: ``ids[:boundary]`` is the context (up to and including the node),
  ``ids[boundary:]`` the future. The example is cropped to ``seq_len`` (:func:`crop_example`: the first ``F`` future
  tokens, ``F = min(len(future), max_future_tokens or seq_len // 2)``, and the last ``seq_len - F`` context tokens);
  ``round(mask_ratio * F)`` future positions (:func:`n_masked`) are replaced by the mask token. The online encoder
  reads the masked sequence, the momentum encoder the full one (``torch.no_grad``); a predictor MLP maps the online
  final-layer hidden states at the masked positions onto the target's (MSE, targets detached). Both passes use the
  inner decoder stack (no ``lm_head``).
* **Momentum encoder** (:class:`MomentumEncoder`): EMA copies of the *trainable* parameters only (LoRA adapters and
  ``modules_to_save`` copies); the frozen base is shared, and the target pass is a ``torch.func.functional_call`` of
  the online decoder with the EMA tensors swapped in. ``ema = tau * ema + (1 - tau) * online`` after every optimizer
  step, ``tau`` cosine-scheduled from ``ema_tau`` to ``ema_tau_end`` when that is set (:func:`tau_at`).
* Objectives: ``sft`` -> SFT on random windows of whole timelines; ``jepa`` / ``hybrid`` ->
  ``loss_weights.sft * SFT(unmasked example) + loss_weights.jepa * JEPA`` on decision-node examples.

Checkpoint layout (``out_dir``)
-------------------------------
``adapter/`` (peft, safetensors), ``base/`` (config-built backbone, safetensors) or ``base.json`` (``{"path",
"vocab_size", "architecture"}`` for a local-folder backbone), ``predictor.safetensors`` and ``ema_adapter.safetensors``
(JEPA objectives; the EMA file has the same keys as ``adapter/adapter_model.safetensors``), ``tokenizer/``,
``recipe.json``, ``train_log.json``; ``checkpoints/step_NNNNNN/`` when ``training.checkpoint_every`` > 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .specs import Jepa, Optimizer, RecipeSpec

__all__ = [
    "TrainData",
    "TrainResult",
    "train",
    "build_model",
    "load_base",
    "decoder_of",
    "Predictor",
    "MomentumEncoder",
    "crop_example",
    "n_masked",
    "make_jepa_batch",
    "make_sft_batch",
    "sft_loss",
    "jepa_loss",
    "tau_at",
    "lr_factor",
    "pick_device",
]


# ================================================================================================== data classes
@dataclass
class TrainData:
    sft_sequences: list[np.ndarray]  # int64 ids of whole train timelines (each starts with bos)
    jepa_examples: list[tuple[np.ndarray, int]]  # (ids, boundary): boundary = index of the first future token
    vocab_size: int
    pad_id: int
    mask_id: int
    bos_id: int
    eos_id: int


@dataclass
class TrainResult:
    steps: int
    wall_s: float  # the whole call: model build, training loop, saving
    tokens_per_s: float  # non-pad input tokens of the training examples per second of the training loop
    peak_mem_mb: float  # peak RSS on CPU, torch.cuda.max_memory_allocated on GPU
    loss_curve: list[dict] = field(default_factory=list)  # step, loss, sft_loss, jepa_loss, lr, tau (NaN if unused)
    trainable_params: int = 0
    total_params: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ================================================================================================ validation
def _validate(recipe: RecipeSpec, data: TrainData) -> None:
    name = recipe.name
    V = int(data.vocab_size)
    if V <= 0:
        raise ValueError(f"recipe {name!r}: vocab_size must be positive, got {V}")
    for k in ("pad_id", "mask_id", "bos_id", "eos_id"):
        v = int(getattr(data, k))
        if not 0 <= v < V:
            raise ValueError(f"recipe {name!r}: {k}={v} is outside the vocabulary [0, {V})")

    def check_ids(ids: np.ndarray, what: str) -> None:
        a = np.asarray(ids)
        if a.ndim != 1:
            raise ValueError(f"recipe {name!r}: {what} must be a 1-d array of token ids, got shape {a.shape}")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= V):
            raise ValueError(
                f"recipe {name!r}: {what} has token ids outside [0, {V}) (min {int(a.min())}, max {int(a.max())})"
            )

    lw = recipe.loss_weights
    if (recipe.objective == "sft" and lw.sft <= 0) or (recipe.objective != "sft" and lw.sft + lw.jepa <= 0):
        raise ValueError(f"recipe {name!r}: loss_weights give nothing to train ({lw.model_dump()})")
    if recipe.objective == "sft":
        if not data.sft_sequences:
            raise ValueError(f"recipe {name!r} (objective sft): no sft_sequences to train on (empty train split?)")
        for i, s in enumerate(data.sft_sequences):
            check_ids(s, f"sft_sequences[{i}]")
        if not any(len(s) >= 2 for s in data.sft_sequences):
            raise ValueError(f"recipe {name!r} (objective sft): every sft sequence has fewer than 2 tokens")
    else:
        if not data.jepa_examples:
            raise ValueError(
                f"recipe {name!r} (objective {recipe.objective}): no jepa_examples (decision nodes with a future) "
                "to train on"
            )
        for i, (ids, b) in enumerate(data.jepa_examples):
            check_ids(ids, f"jepa_examples[{i}]")
            n = len(ids)
            if not isinstance(b, (int, np.integer)) or not 1 <= int(b) < n:
                raise ValueError(
                    f"recipe {name!r}: jepa_examples[{i}] has boundary {b!r} out of range: it must satisfy "
                    f"1 <= boundary < len(ids) = {n} (at least one context and one future token)"
                )
    if recipe.backbone.config is not None and recipe.training.seq_len > recipe.backbone.config.max_position_embeddings:
        raise ValueError(
            f"recipe {name!r}: training.seq_len {recipe.training.seq_len} exceeds the backbone's "
            f"max_position_embeddings {recipe.backbone.config.max_position_embeddings}"
        )


# ===================================================================================================== model
def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _backbone_config(recipe: RecipeSpec, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    from transformers import LlamaConfig, Qwen3Config

    c = recipe.backbone.config
    cls = {"llama": LlamaConfig, "qwen3": Qwen3Config}[recipe.backbone.architecture]
    return cls(
        vocab_size=int(vocab_size),
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings,
        head_dim=c.head_dim or c.hidden_size // c.num_attention_heads,  # Qwen3's default (128) is not derived
        pad_token_id=int(pad_id),
        bos_token_id=int(bos_id),
        eos_token_id=int(eos_id),
        tie_word_embeddings=False,
        use_cache=False,
    )


def _from_pretrained(path: str | Path):
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: not a local Hugging Face model folder (no config.json); nothing is downloaded")
    try:
        return AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=torch.float32)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        return AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, torch_dtype=torch.float32)


def _set_special_ids(model, pad_id: int, bos_id: int, eos_id: int) -> None:
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = int(pad_id), int(bos_id), int(eos_id)


def _new_base(recipe: RecipeSpec, data: TrainData, log: Callable[[str], None]):
    """The recipe's backbone, before LoRA. Returns (model, base_info); base_info says how to save/reload it."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(recipe.training.seed)
    if recipe.backbone.config is not None:
        cfg = _backbone_config(recipe, data.vocab_size, data.pad_id, data.bos_id, data.eos_id)
        model = AutoModelForCausalLM.from_config(cfg)
        model.to(torch.float32)
        return model, {"kind": "config"}
    model = _from_pretrained(recipe.backbone.path)
    v0 = model.get_input_embeddings().weight.shape[0]
    resized = False
    if data.vocab_size > v0:
        log(f"resizing the token embeddings of {recipe.backbone.path} from {v0} to {data.vocab_size}")
        model.resize_token_embeddings(int(data.vocab_size), mean_resizing=False)
        resized = True
    _set_special_ids(model, data.pad_id, data.bos_id, data.eos_id)
    vocab = model.get_input_embeddings().weight.shape[0]
    info = {"path": str(Path(recipe.backbone.path).resolve()), "vocab_size": int(vocab),
            "architecture": recipe.backbone.architecture, "resized": resized}
    return model, {"kind": "path", **info}


def load_base(ckpt_dir: Path):
    """The frozen base model of a checkpoint folder (``base/`` or ``base.json``), and its base_info."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / "base").is_dir():
        model = _from_pretrained(ckpt_dir / "base")
        return model, {"kind": "config"}
    if (ckpt_dir / "base.json").is_file():
        info = json.loads((ckpt_dir / "base.json").read_text())
        model = _from_pretrained(info["path"])
        v = int(info.get("vocab_size", 0))
        if v and model.get_input_embeddings().weight.shape[0] != v:
            # the resized rows are overwritten by the adapter's saved embedding layers
            model.resize_token_embeddings(v, mean_resizing=False)
        return model, {"kind": "path", **info}
    raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint (neither base/ nor base.json)")


def _lora_config(recipe: RecipeSpec):
    from peft import LoraConfig, TaskType

    lo = recipe.lora
    return LoraConfig(
        r=lo.rank,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=list(lo.target_modules),
        modules_to_save=list(lo.modules_to_save) or None,
        task_type=TaskType.CAUSAL_LM,
    )


@contextlib.contextmanager
def _quiet():
    """Silence transformers/peft deprecation chatter and per-file progress bars (tiny models, noisy logs)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if bars:
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _check_parent(recipe: RecipeSpec, init_dir: Path) -> dict:
    init_dir = Path(init_dir)
    rpath = init_dir / "recipe.json"
    if not rpath.is_file() or not (init_dir / "adapter").is_dir():
        raise FileNotFoundError(
            f"recipe {recipe.name!r}: init_dir {init_dir} is not a checkpoint (no recipe.json or adapter/)"
        )
    parent = json.loads(rpath.read_text())
    pname = parent.get("name", "?")
    if recipe.init_from is not None and pname != recipe.init_from:
        raise ValueError(f"recipe {recipe.name!r}: init_from is {recipe.init_from!r} but {init_dir} holds {pname!r}")
    mine = recipe.backbone.model_dump(mode="json")
    if parent.get("backbone") != mine:
        raise ValueError(
            f"recipe {recipe.name!r} cannot start from recipe {pname!r}: backbones differ "
            f"({recipe.name}: {mine}; {pname}: {parent.get('backbone')})"
        )
    keys = ("rank", "alpha", "target_modules", "modules_to_save")
    plora = parent.get("lora", {})
    mlora = recipe.lora.model_dump(mode="json")
    diff = {k: (mlora[k], plora.get(k)) for k in keys if plora.get(k) != mlora[k]}
    if diff:
        raise ValueError(
            f"recipe {recipe.name!r} cannot start from recipe {pname!r}: LoRA settings differ "
            + ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
        )
    return parent


def build_model(recipe: RecipeSpec, data: TrainData, *, init_dir: Path | None = None,
                log: Callable[[str], None] = print, save_base_to: Path | None = None):
    """The trainable PeftModel (fp32, on CPU) and its base_info.

    Without ``init_dir``: a fresh backbone (seeded with ``training.seed``) plus a fresh LoRA adapter. With ``init_dir``
    (the ``init_from`` recipe's checkpoint): exactly that checkpoint's base and adapter weights, trainable.
    ``save_base_to``: write the frozen base there (``base/`` folder or ``base.json``) before LoRA wraps it in place.
    """
    from peft import PeftModel, get_peft_model

    with _quiet():
        if init_dir is None:
            base, info = _new_base(recipe, data, log)
            if save_base_to is not None:
                _save_base(base, info, Path(save_base_to))
            model = get_peft_model(base, _lora_config(recipe))
        else:
            parent = _check_parent(recipe, init_dir)
            base, info = load_base(init_dir)
            v = base.get_input_embeddings().weight.shape[0]
            if v < data.vocab_size:
                raise ValueError(
                    f"recipe {recipe.name!r}: the vocabulary ({data.vocab_size}) is larger than the one recipe "
                    f"{parent.get('name')!r} was trained with ({v}); retrain {parent.get('name')!r} on this tokenizer"
                )
            if save_base_to is not None:
                if info["kind"] == "config":
                    shutil.copytree(Path(init_dir) / "base", Path(save_base_to) / "base")
                else:
                    _save_base(base, info, Path(save_base_to))
            torch.manual_seed(recipe.training.seed)
            model = PeftModel.from_pretrained(base, str(Path(init_dir) / "adapter"), is_trainable=True)
            if recipe.lora.dropout != parent.get("lora", {}).get("dropout", recipe.lora.dropout):
                log(f"note: lora.dropout of {parent.get('name')!r}'s adapter is used")
    model.to(torch.float32)
    return model, info


def _save_base(base, info: dict, dest: Path) -> None:
    """``dest/base/`` (config-built backbone, safetensors) or ``dest/base.json`` (local-folder backbone)."""
    if info["kind"] == "config":
        base.save_pretrained(str(dest / "base"), safe_serialization=True)
    else:
        (dest / "base.json").write_text(json.dumps({k: v for k, v in info.items() if k != "kind"}, indent=2))


def decoder_of(model) -> tuple[nn.Module, str]:
    """The inner decoder stack (``model.model`` of the CausalLM, no lm_head) and its name prefix in ``model``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    for name, mod in model.named_modules():
        if mod is dec:
            return dec, (name + ".") if name else ""
    raise RuntimeError("decoder stack not found in the model")


def _trainable(model) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# ================================================================================================= predictor
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


# ========================================================================================== momentum encoder
class MomentumEncoder:
    """EMA of the trainable parameters of a PeftModel; the target pass swaps them into the shared online model.

    No second base model exists: :meth:`hidden` runs ``torch.func.functional_call`` on the online decoder stack with
    the EMA tensors in place of the trainable ones (the frozen base tensors are the online model's own).
    """

    def __init__(self, model):
        self.model = model
        self.decoder, self.prefix = decoder_of(model)
        self.names = [n for n, _ in _trainable(model)]
        self.ema: dict[str, torch.Tensor] = {n: p.detach().clone() for n, p in _trainable(model)}
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

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights with the keys of ``adapter/adapter_model.safetensors`` (loadable as an adapter)."""
        from peft import get_peft_model_state_dict

        sd = dict(self.model.state_dict())
        sd.update(self.ema)
        out = get_peft_model_state_dict(self.model, state_dict=sd, save_embedding_layers=False)
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}


# ===================================================================================================== batches
def crop_example(ids: np.ndarray, boundary: int, seq_len: int, max_future: int | None = None):
    """(tokens, C, F): the last C context tokens and the first F future tokens, C + F <= seq_len.

    ``F = min(len(future), max_future or seq_len // 2, seq_len - 1)`` (at least one context token stays),
    ``C = min(boundary, seq_len - F)``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    Fn = min(len(ids) - boundary, max_future or seq_len // 2, seq_len - 1)
    C = min(boundary, seq_len - Fn)
    return ids[boundary - C : boundary + Fn], C, Fn


def n_masked(n_future: int, mask_ratio: float) -> int:
    """Masked positions for ``n_future`` future tokens: round(mask_ratio * F), half up, at least 1 when F >= 1."""
    if n_future <= 0:
        return 0
    return min(n_future, max(1, int(math.floor(mask_ratio * n_future + 0.5))))


@dataclass
class JepaBatch:
    input_ids: np.ndarray  # [B, L] int64 unmasked, right-padded with pad_id
    masked_ids: np.ndarray  # [B, L] int64, masked positions replaced by mask_id
    attention_mask: np.ndarray  # [B, L] int64, 1 = real token
    mask: np.ndarray  # [B, L] bool, the masked (future) positions
    context_len: np.ndarray  # [B] C per row
    future_len: np.ndarray  # [B] F per row

    def tensors(self, device) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(getattr(self, k)).to(device)
                for k in ("input_ids", "masked_ids", "attention_mask", "mask")}


def make_jepa_batch(examples: list[tuple[np.ndarray, int]], seq_len: int, jepa: Jepa, mask_id: int, pad_id: int,
                    rng: np.random.Generator) -> JepaBatch:
    rows, Cs, Fs = [], [], []
    for ids, b in examples:
        toks, C, Fn = crop_example(ids, int(b), seq_len, jepa.max_future_tokens)
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
        k = n_masked(Fn, jepa.mask_ratio)
        pos = C + rng.choice(Fn, size=k, replace=False)
        mask[i, pos] = True
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


def _cycle(n: int, rng: np.random.Generator) -> Iterator[int]:
    """Indices 0..n-1 in a fresh random order every epoch."""
    while True:
        yield from (int(i) for i in rng.permutation(n))


# ====================================================================================================== losses
def sft_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose target is a real (non-pad) token."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def jepa_loss(model, predictor: Predictor, momentum: MomentumEncoder, batch: dict[str, torch.Tensor],
              *, return_parts: bool = False):
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


# =================================================================================================== schedules
def tau_at(step: int, steps: int, jepa: Jepa) -> float:
    """EMA momentum after optimizer step ``step`` (0-based): cosine from ema_tau to ema_tau_end, else constant."""
    if jepa.ema_tau_end is None:
        return float(jepa.ema_tau)
    k = min(max(step / max(1, steps - 1), 0.0), 1.0)
    return float(jepa.ema_tau_end - (jepa.ema_tau_end - jepa.ema_tau) * (1 + math.cos(math.pi * k)) / 2)


def lr_factor(step: int, opt: Optimizer, steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based): linear warmup, then constant/cosine/linear."""
    w = opt.warmup_steps
    if step < w:
        return (step + 1) / w
    if opt.schedule == "constant":
        return 1.0
    p = (step - w) / max(1, steps - w)
    if opt.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    return 1.0 - p


# ======================================================================================================= train
def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _enable_checkpointing(model) -> None:
    base = model.get_base_model()
    with _quiet():
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable({"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()


def _save_state(model, predictor, momentum, info: dict, dest: Path) -> None:
    from safetensors.torch import save_file

    with _quiet():
        model.save_pretrained(str(dest / "adapter"), safe_serialization=True,
                              save_embedding_layers=bool(info.get("resized", False)))
    if predictor is not None:
        sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in predictor.state_dict().items()}
        meta = {"hidden": str(predictor.hidden), "depth": str(predictor.depth), "width": str(predictor.width)}
        save_file(sd, str(dest / "predictor.safetensors"), metadata=meta)
    if momentum is not None:
        save_file(momentum.adapter_state_dict(), str(dest / "ema_adapter.safetensors"))


def train(recipe: RecipeSpec, data: TrainData, out_dir: Path, *, init_dir: Path | None = None,
          tokenizer_dir: Path | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``recipe`` on ``data`` and write the checkpoint into ``out_dir`` (missing or empty)."""
    t_start = time.perf_counter()
    _validate(recipe, data)
    if recipe.init_from is not None and init_dir is None:
        raise ValueError(f"recipe {recipe.name!r} has init_from {recipe.init_from!r}: pass init_dir (its checkpoint)")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir}: output folder is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)

    tr, jcfg, lw = recipe.training, recipe.jepa, recipe.loss_weights
    device = pick_device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    use_bf16 = tr.precision == "bf16" and device.type == "cuda"
    if tr.precision == "bf16" and not use_bf16:
        log("note: precision bf16 requested but no CUDA device; training in fp32 on CPU")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    # ---- model; its frozen base is saved right away (before LoRA wraps it), it never changes
    model, info = build_model(recipe, data, init_dir=init_dir, log=log, save_base_to=out_dir)
    model.to(device)
    model.train()
    model.config.use_cache = False
    if tr.gradient_checkpointing:
        _enable_checkpointing(model)

    jepa_mode = recipe.objective in ("jepa", "hybrid")
    use_jepa = jepa_mode and lw.jepa > 0
    use_sft_aux = jepa_mode and lw.sft > 0
    H = model.get_base_model().config.hidden_size
    predictor = momentum = None
    torch.manual_seed(tr.seed + 1)
    if use_jepa:
        predictor = Predictor(H, jcfg.predictor_depth, jcfg.predictor_width).to(device)
        momentum = MomentumEncoder(model)
    params = [p for _, p in _trainable(model)] + (list(predictor.parameters()) if predictor is not None else [])
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters()) + (
        sum(p.numel() for p in predictor.parameters()) if predictor is not None else 0
    )
    o = recipe.optimizer
    optim = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, o, tr.steps))

    rng = np.random.default_rng(tr.seed)
    if jepa_mode:
        order = _cycle(len(data.jepa_examples), rng)
    else:
        seqs = [np.asarray(s, dtype=np.int64) for s in data.sft_sequences if len(s) >= 2]
        order = _cycle(len(seqs), rng)
    log(
        f"{recipe.name}: {recipe.objective} on {device.type}"
        + (f" from {init_dir}" if init_dir is not None else "")
        + f", {n_trainable:,} trainable / {n_total:,} params, {tr.steps} steps x {tr.batch_size}"
        + (f" x {tr.grad_accum}" if tr.grad_accum > 1 else "")
        + f" x <= {tr.seq_len} tokens"
    )

    curve: list[dict] = []
    tokens = 0
    t_loop = time.perf_counter()
    nan = float("nan")
    for step in range(tr.steps):
        lr_now = optim.param_groups[0]["lr"]
        tot = s_tot = j_tot = 0.0
        for _ in range(tr.grad_accum):
            idx = [next(order) for _ in range(tr.batch_size)]
            if jepa_mode:
                jb = make_jepa_batch([data.jepa_examples[i] for i in idx], tr.seq_len, jcfg, data.mask_id,
                                     data.pad_id, rng)
                b = jb.tensors(device)
                tokens += int(jb.attention_mask.sum())
                loss = torch.zeros((), device=device)
                with autocast():
                    if use_sft_aux:
                        ls = sft_loss(model, b["input_ids"], b["attention_mask"])
                        loss = loss + lw.sft * ls
                        s_tot += float(ls.detach())
                    if use_jepa:
                        lj = jepa_loss(model, predictor, momentum, b)
                        loss = loss + lw.jepa * lj
                        j_tot += float(lj.detach())
            else:
                inp, am = make_sft_batch([seqs[i] for i in idx], tr.seq_len, data.pad_id, rng)
                tokens += int(am.sum())
                with autocast():
                    loss = sft_loss(model, torch.from_numpy(inp).to(device), torch.from_numpy(am).to(device))
                s_tot += float(loss.detach())
                loss = lw.sft * loss
            (loss / tr.grad_accum).backward()
            tot += float(loss.detach())
        if o.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        tau = nan
        if momentum is not None:
            tau = tau_at(step, tr.steps, jcfg)
            momentum.update(tau)

        n = step + 1
        if n == 1 or n % tr.log_every == 0 or n == tr.steps:
            ga = tr.grad_accum
            rec = {
                "step": n,
                "loss": tot / ga,
                "sft_loss": s_tot / ga if (not jepa_mode or use_sft_aux) else nan,
                "jepa_loss": j_tot / ga if use_jepa else nan,
                "lr": lr_now,
                "tau": tau,
            }
            curve.append(rec)
            el = time.perf_counter() - t_loop
            log(
                f"{recipe.name} step {n}/{tr.steps} loss {rec['loss']:.4f}"
                + (f" (sft {rec['sft_loss']:.4f}, jepa {rec['jepa_loss']:.4f})" if jepa_mode else "")
                + f" lr {lr_now:.2e}" + (f" tau {tau:.4f}" if momentum is not None else "")
                + f" | {tokens / max(el, 1e-9):,.0f} tok/s"
            )
        if tr.checkpoint_every and n % tr.checkpoint_every == 0 and n < tr.steps:
            dest = out_dir / "checkpoints" / f"step_{n:06d}"
            dest.mkdir(parents=True)
            _save_state(model, predictor, momentum, info, dest)
            log(f"{recipe.name}: step checkpoint {dest}")
    loop_s = time.perf_counter() - t_loop

    # ---- save
    _save_state(model, predictor, momentum, info, out_dir)
    if tokenizer_dir is not None:
        shutil.copytree(Path(tokenizer_dir), out_dir / "tokenizer")
    (out_dir / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=2))
    res = TrainResult(
        steps=tr.steps,
        wall_s=time.perf_counter() - t_start,
        tokens_per_s=tokens / max(loop_s, 1e-9),
        peak_mem_mb=_peak_mem_mb(device),
        loss_curve=curve,
        trainable_params=int(n_trainable),
        total_params=int(n_total),
    )
    (out_dir / "train_log.json").write_text(json.dumps(res.to_dict(), indent=2, allow_nan=True))
    log(f"{recipe.name}: done in {res.wall_s:.1f}s, {res.tokens_per_s:,.0f} tok/s, peak {res.peak_mem_mb:,.0f} MiB")
    return res
