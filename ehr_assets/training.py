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
from collections.abc import Callable
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

    SPECIAL = ("vocab_size", "pad_id", "mask_id", "bos_id", "eos_id")

    def save(self, folder: Path) -> None:
        """A self-contained bundle a training process on another machine can read (parquet + JSON, no pickle):
        ``sequences.parquet`` (input_ids), ``examples.parquet`` (sequence row, boundary), ``special.json``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        seqs = [np.asarray(s, dtype=np.int64) for s in self.sft_sequences]
        row = {id(s): i for i, s in enumerate(self.sft_sequences)}
        extra, ex_rows = [], []
        for ids, b in self.jepa_examples:  # examples normally point at a timeline of sft_sequences
            i = row.get(id(ids))
            if i is None:
                i = len(seqs) + len(extra)
                extra.append(np.asarray(ids, dtype=np.int64))
                row[id(ids)] = i
            ex_rows.append((i, int(b)))
        all_seqs = seqs + extra
        pq.write_table(pa.table({"input_ids": pa.array([s.tolist() for s in all_seqs], pa.list_(pa.int64())),
                                 "is_sft": pa.array([True] * len(seqs) + [False] * len(extra))}),
                       folder / "sequences.parquet")
        pq.write_table(pa.table({"sequence": pa.array([r[0] for r in ex_rows], pa.int64()),
                                 "boundary": pa.array([r[1] for r in ex_rows], pa.int64())}),
                       folder / "examples.parquet")
        (folder / "special.json").write_text(json.dumps({k: int(getattr(self, k)) for k in self.SPECIAL}))

    @classmethod
    def load(cls, folder: Path) -> "TrainData":
        import pyarrow.parquet as pq

        folder = Path(folder)
        missing = [f for f in ("sequences.parquet", "examples.parquet", "special.json") if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: not a training-data bundle (missing {missing})")
        st = pq.read_table(folder / "sequences.parquet")
        seqs = [np.asarray(x, dtype=np.int64) for x in st.column("input_ids").to_pylist()]
        is_sft = st.column("is_sft").to_pylist()
        ex = pq.read_table(folder / "examples.parquet")
        examples = [(seqs[i], int(b)) for i, b in zip(ex.column("sequence").to_pylist(), ex.column("boundary").to_pylist())]
        special = json.loads((folder / "special.json").read_text())
        return cls([s for s, f in zip(seqs, is_sft) if f], examples, **{k: int(special[k]) for k in cls.SPECIAL})


def train_data_from_warehouse(conn, cohort: str, tokenizer_dir: Path) -> TrainData:
    """The train split's timelines and decision-node (context, future) examples of ``cohort`` from the warehouse
    (tables ``token_sequences`` and ``node_contexts``) and its tokenizer folder."""
    from meds import train_split

    from .sequences import load_tokenizer
    from .warehouse import read_partition

    fast, _ = load_tokenizer(tokenizer_dir)
    seq = read_partition(conn, "token_sequences", {"cohort": cohort}, columns=["subject_id", "split", "input_ids"])
    seq = seq[seq["split"] == train_split]
    ctx = read_partition(conn, "node_contexts", {"cohort": cohort}, order_by=["subject_id", "prediction_time"])
    ctx = ctx[ctx["split"] == train_split]
    ids = {s: np.asarray(x, dtype=np.int64) for s, x in zip(seq["subject_id"], seq["input_ids"])}
    examples = [
        (ids[s], int(e)) for s, e, n in zip(ctx["subject_id"], ctx["context_end"], ctx["n_tokens"]) if e < n
    ]  # a node with no future token teaches JEPA nothing
    return TrainData(
        sft_sequences=list(ids.values()),
        jepa_examples=examples,
        vocab_size=len(fast),
        pad_id=fast.pad_token_id,
        mask_id=fast.mask_token_id,
        bos_id=fast.bos_token_id,
        eos_id=fast.eos_token_id,
    )


def recipe_train_data_from_warehouse(conn, cohort: str, tokens_key: str, tokens_dir: Path) -> TrainData:
    """:class:`TrainData` from a ``<recipe>_tokens`` asset (tables ``recipe_token_sequences`` and
    ``recipe_node_contexts``, a local HF tokenizer): whole train timelines for SFT; per train node, its context tokens
    (tokenized on their own) followed by the timeline's tokens after the context for JEPA."""
    from meds import train_split

    from .tokenization import load_tokenizer_folder, special_ids
    from .warehouse import read_recipe_tokens

    tok = load_tokenizer_folder(tokens_dir)
    sp = {**special_ids(tok), "vocab_size": len(tok)}

    def read(table: str, **kw):
        return read_recipe_tokens(conn, table, cohort, tokens_key, **kw)

    seq = read("recipe_token_sequences", columns=["subject_id", "split", "input_ids"])
    seq = seq[seq["split"] == train_split]
    ids = {s: np.asarray(x, dtype=np.int64) for s, x in zip(seq["subject_id"], seq["input_ids"])}
    ctx = read("recipe_node_contexts", columns=["subject_id", "split", "context_ids", "future_start"],
               order_by=["subject_id", "prediction_time"])
    ctx = ctx[ctx["split"] == train_split]
    examples = []
    for s, c, fs in zip(ctx["subject_id"], ctx["context_ids"], ctx["future_start"]):
        c = np.asarray(c, dtype=np.int64)
        future = ids[s][int(fs):]
        if len(c) and len(future):  # a node with no future token teaches JEPA nothing
            examples.append((np.concatenate([c, future]), len(c)))
    return TrainData(sft_sequences=list(ids.values()), jepa_examples=examples, vocab_size=sp["vocab_size"],
                     pad_id=sp["pad_id"], mask_id=sp["mask_id"], bos_id=sp["bos_id"], eos_id=sp["eos_id"])


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


def require_safetensors(folder: str | Path, what: str, pattern: str = "*.safetensors") -> Path:
    """Weights are only ever read from safetensors: a folder holding only pickle-based files (``*.bin``, ``*.pt``,
    ``*.pth``, ``*.pkl``) is refused, because unpickling runs code from the file."""
    folder = Path(folder)
    if not list(folder.glob(pattern)):
        pickled = sorted(p.name for ext in ("*.bin", "*.pt", "*.pth", "*.pkl") for p in folder.glob(ext))
        hint = (f" (it has {pickled[:3]}: pickle files are not loaded; convert them to safetensors)" if pickled
                else "")
        raise FileNotFoundError(f"{folder}: no {pattern} {what} weights{hint}")
    return folder


def _from_pretrained(path: str | Path):
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: not a local Hugging Face model folder (no config.json); nothing is downloaded")
    require_safetensors(p, "model")
    try:
        return AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=torch.float32,
                                                    use_safetensors=True)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        return AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, torch_dtype=torch.float32,
                                                    use_safetensors=True)


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
                log: Callable[[str], None] = print, save_base_to: Path | None = None,
                base_dtype: torch.dtype | None = None):
    """The trainable PeftModel (on CPU) and its base_info. Trainable tensors are fp32; the frozen base is fp32 too,
    or ``base_dtype`` (bf16 on GPU: half the memory, the adapters and their optimizer state stay fp32).

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
            adapter = require_safetensors(Path(init_dir) / "adapter", "adapter", "adapter_model.safetensors")
            model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
            if recipe.lora.dropout != parent.get("lora", {}).get("dropout", recipe.lora.dropout):
                log(f"note: lora.dropout of {parent.get('name')!r}'s adapter is used")
    model.to(torch.float32)
    if base_dtype is not None and base_dtype != torch.float32:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(base_dtype)
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


class Sampler:
    """Which examples a micro-batch reads, and its random stream, as pure functions of (seed, step).

    Example ``g`` of the run (counted over steps, accumulation rounds and the global batch) is
    ``perm(g // n)[g % n]``, where ``perm(e)`` is epoch ``e``'s permutation drawn from ``default_rng([seed, 1, e])``;
    masks and windows of (step, accumulation round, process) come from ``default_rng([seed, 2, step, round, rank])``.
    A run resumed at step ``k`` therefore reads exactly what the uninterrupted run read, with no sampler state to save.
    """

    def __init__(self, n: int, seed: int, batch_size: int, grad_accum: int, world: int = 1, rank: int = 0):
        if n <= 0:
            raise ValueError("no training examples")
        self.n, self.seed, self.B, self.A, self.world, self.rank = n, seed, batch_size, grad_accum, world, rank
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, 1, epoch]).permutation(self.n)
        return self._perms[epoch]

    def indices(self, step: int, micro: int) -> list[int]:
        first = ((step * self.A + micro) * self.world + self.rank) * self.B
        return [int(self._perm(g // self.n)[g % self.n]) for g in range(first, first + self.B)]

    def rng(self, step: int, micro: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 2, step, micro, self.rank])


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


# ---------------------------------------------------------------------------------------- the optimized step
class _LinearCrossEntropy(torch.autograd.Function):
    """mean CE(h @ w.T, labels) without materializing the [N, V] logits: forward and backward walk ``chunk`` rows
    at a time in fp32 (backward recomputes each chunk's logits). Same value and gradients as
    ``F.cross_entropy((h @ w.T).float(), labels)`` up to float summation order."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, w, labels, chunk: int):
        n = h.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk):
            logits = (h[s: s + chunk] @ w.t()).float()
            total = total + F.cross_entropy(logits, labels[s: s + chunk], reduction="sum")
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
            hs = h[s: s + chunk]
            p = (hs @ w.t()).float().softmax(-1)
            p[torch.arange(hs.shape[0], device=p.device), labels[s: s + chunk]] -= 1.0
            p = (p * scale).to(h.dtype)
            if gh is not None:
                gh[s: s + chunk] = p @ w.to(h.dtype)
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


def next_token_loss(model, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    chunk: int = 4096, fused: bool | None = None) -> torch.Tensor:
    """The SFT loss from final hidden states: lm_head only at positions whose next token is real (no pad rows).
    ``fused`` (default: when rows x vocabulary > :data:`FUSED_CE_MIN_ELEMENTS`) computes it with
    :class:`_LinearCrossEntropy`, without full-vocabulary fp32 logits in memory."""
    valid = attention_mask[:, 1:] == 1
    h = hidden[:, :-1][valid]
    labels = input_ids[:, 1:][valid]
    w = _output_weight(model)
    if fused is None:
        fused = w is not None and h.shape[0] * w.shape[0] > FUSED_CE_MIN_ELEMENTS
    if not fused or w is None:
        return F.cross_entropy(model.get_output_embeddings()(h).float(), labels)
    return _LinearCrossEntropy.apply(h, w, labels, chunk)


def step_losses(model, predictor: Predictor | None, momentum: MomentumEncoder | None, batch: dict[str, torch.Tensor],
                *, sft: bool, jepa: bool, chunk: int = 4096, stack: bool | None = None,
                fused: bool | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
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
        h = dec(input_ids=torch.cat([ids, batch["masked_ids"]]), attention_mask=torch.cat([am, am]),
                use_cache=False).last_hidden_state
        h_sft, h_on = h[:B], h[B:]
    else:
        h_sft = dec(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state if sft else None
        h_on = (dec(input_ids=batch["masked_ids"], attention_mask=am, use_cache=False).last_hidden_state
                if jepa else None)
    ls = next_token_loss(model, h_sft, ids, am, chunk, fused) if sft else None
    lj = None
    if jepa:
        with torch.no_grad():
            target = momentum.hidden(ids, am)
        m = batch["mask"]
        lj = F.mse_loss(predictor(h_on[m]).float(), target[m].float())
    return ls, lj


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


# ------------------------------------------------------------------------------------------- step checkpoints
def data_fingerprint(data: TrainData) -> str:
    """sha256 over every token id, boundary and special id the run reads (what a resumed run must also read)."""
    import hashlib

    h = hashlib.sha256()
    h.update(np.asarray([data.vocab_size, data.pad_id, data.mask_id, data.bos_id, data.eos_id], np.int64).tobytes())
    for s in data.sft_sequences:
        a = np.ascontiguousarray(s, dtype=np.int64)
        h.update(np.int64(a.size).tobytes())
        h.update(a.tobytes())
    for ids, b in data.jepa_examples:
        a = np.ascontiguousarray(ids, dtype=np.int64)
        h.update(np.asarray([a.size, int(b)], np.int64).tobytes())
        h.update(a.tobytes())
    return h.hexdigest()


def _run_fingerprint(recipe: RecipeSpec, data: TrainData, init_dir: Path | None) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode())
    h.update(data_fingerprint(data).encode())
    if init_dir is not None:
        for f in sorted((Path(init_dir) / "adapter").glob("*.safetensors")):
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _save_step(dest: Path, step: int, fingerprint: str, model, predictor, momentum, optim, sched, info: dict,
               curve: list[dict], tokens: int, device: torch.device) -> None:
    """A resumable step checkpoint (all safetensors + JSON, no pickle): ``adapter/`` and friends as in the final
    checkpoint, plus ``trainer_state.safetensors`` (trainable tensors, EMA, predictor, AdamW moments, RNG states)
    and ``trainer_state.json`` (step, fingerprint, optimizer hyper-parameters, scheduler, loss curve so far)."""
    from safetensors.torch import save_file

    tmp = dest.parent / f".{dest.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _save_state(model, predictor, momentum, info, tmp)
    t: dict[str, torch.Tensor] = {}
    for n, p in _trainable(model):
        t[f"param/{n}"] = p.detach().cpu().contiguous()
    if momentum is not None:
        for n, e in momentum.ema.items():
            t[f"ema/{n}"] = e.detach().cpu().contiguous()
    if predictor is not None:
        for n, v in predictor.state_dict().items():
            t[f"predictor/{n}"] = v.detach().cpu().contiguous()
    osd = optim.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            t[f"optim/{i}/{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    t["rng/torch"] = torch.get_rng_state()
    if device.type == "cuda":
        t["rng/cuda"] = torch.cuda.get_rng_state(device)
    save_file(t, str(tmp / "trainer_state.safetensors"))
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    meta = {"step": step, "fingerprint": fingerprint, "param_groups": osd["param_groups"], "scheduler": sched_state,
            "curve": curve, "tokens": tokens}
    (tmp / "trainer_state.json").write_text(json.dumps(meta, allow_nan=True))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def _latest_step(folder: Path, fingerprint: str, log: Callable[[str], None]) -> Path | None:
    """The newest complete step checkpoint in ``folder`` made by the same recipe, data and parent, or None."""
    if not folder.is_dir():
        return None
    for d in sorted(folder.glob("step_*"), reverse=True):
        meta = d / "trainer_state.json"
        if not meta.is_file() or not (d / "trainer_state.safetensors").is_file():
            continue
        try:
            fp = json.loads(meta.read_text()).get("fingerprint")
        except json.JSONDecodeError:
            continue
        if fp == fingerprint:
            return d
        log(f"ignoring step checkpoint {d}: it was made by another recipe, data or parent checkpoint")
    return None


def _load_step(src: Path, model, predictor, momentum, optim, sched, device: torch.device) -> tuple[int, list, int]:
    from safetensors.torch import load_file

    t = load_file(str(src / "trainer_state.safetensors"))
    meta = json.loads((src / "trainer_state.json").read_text())
    with torch.no_grad():
        for n, p in _trainable(model):
            p.copy_(t[f"param/{n}"].to(p.device, p.dtype))
        if momentum is not None:
            for n, e in momentum.ema.items():
                e.copy_(t[f"ema/{n}"].to(e.device, e.dtype))
    if predictor is not None:
        predictor.load_state_dict({n: t[f"predictor/{n}"] for n in predictor.state_dict()})
    state: dict[int, dict] = {}
    for k, v in t.items():
        if k.startswith("optim/"):
            _, i, name = k.split("/", 2)
            state.setdefault(int(i), {})[name] = v.to(device) if name != "step" else v
    optim.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict({**sched.state_dict(), **meta["scheduler"]})
    torch.set_rng_state(t["rng/torch"])
    if device.type == "cuda" and "rng/cuda" in t:
        torch.cuda.set_rng_state(t["rng/cuda"], device)
    return int(meta["step"]), list(meta["curve"]), int(meta["tokens"])


def _prune_steps(folder: Path, keep: int) -> None:
    steps = sorted(folder.glob("step_*"))
    for d in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- collapse monitor
def monitor_contexts(data: TrainData, seq_len: int, n: int) -> list[np.ndarray]:
    """A fixed set of up to ``n`` contexts the collapse monitor embeds: decision-node contexts (the last ``seq_len``
    tokens up to each node), evenly spread over the examples; SFT-only data: the first ``seq_len`` tokens."""
    if n <= 0:
        return []
    if data.jepa_examples:
        pick = np.unique(np.linspace(0, len(data.jepa_examples) - 1, min(n, len(data.jepa_examples))).astype(int))
        return [np.asarray(data.jepa_examples[i][0][max(0, data.jepa_examples[i][1] - seq_len): data.jepa_examples[i][1]],
                           dtype=np.int64) for i in pick]
    seqs = [s for s in data.sft_sequences if len(s)]
    pick = np.unique(np.linspace(0, len(seqs) - 1, min(n, len(seqs))).astype(int)) if seqs else []
    return [np.asarray(seqs[i][:seq_len], dtype=np.int64) for i in pick]


@torch.no_grad()
def _monitor(model, contexts: list[np.ndarray], pad_id: int, device: torch.device, autocast) -> dict[str, float]:
    """Last-token hidden states of the online encoder on the monitor contexts -> std and effective rank."""
    from .stats import embedding_stats

    if len(contexts) < 2:
        return {}
    dec, _ = decoder_of(model)
    was = model.training
    model.eval()
    try:
        L = max(len(c) for c in contexts)
        inp = torch.full((len(contexts), L), pad_id, dtype=torch.long)
        am = torch.zeros((len(contexts), L), dtype=torch.long)
        for i, c in enumerate(contexts):
            inp[i, : len(c)] = torch.from_numpy(c)
            am[i, : len(c)] = 1
        inp, am = inp.to(device), am.to(device)
        with autocast():
            h = dec(input_ids=inp, attention_mask=am, use_cache=False).last_hidden_state
        last = am.sum(1) - 1
        emb = h[torch.arange(len(contexts), device=device), last].float().cpu().numpy()
    finally:
        model.train(was)
    return embedding_stats(emb)


# -------------------------------------------------------------------------------------------------- distributed
def _dist():
    """(device, rank, world): one process on cuda/cpu, or one of several started by ``accelerate launch`` or torchrun
    (both set RANK / WORLD_SIZE / LOCAL_RANK); the process group is NCCL on GPUs, gloo on CPUs."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return pick_device(), 0, 1
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def _all_reduce_grads(params: list[torch.Tensor], world: int) -> None:
    """Average gradients over processes (data parallel without wrapping the model: the JEPA passes call the decoder
    stack and the momentum encoder directly, which a DDP wrapper would not see)."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for g in grads:
        g.copy_(flat[off: off + g.numel()].view_as(g))
        off += g.numel()


def _mean_over_processes(values: list[float], device, world: int) -> list[float]:
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()


def train(recipe: RecipeSpec, data: TrainData, out_dir: Path, *, init_dir: Path | None = None,
          tokenizer_dir: Path | None = None, resume_dir: Path | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train ``recipe`` on ``data`` and write the checkpoint into ``out_dir`` (missing or empty).

    Step checkpoints (every ``training.checkpoint_every`` steps) go to ``resume_dir`` (default
    ``out_dir/checkpoints``); when ``training.resume`` is on and ``resume_dir`` holds a step checkpoint of the same
    recipe, data and parent checkpoint (a killed run), training continues from it and ends with the same weights as
    an uninterrupted run (CPU, same seeds: bit for bit; the sampler is a pure function of seed and step).
    Under ``accelerate launch`` / torchrun each process trains on its own share of every global batch
    (``batch_size`` per process) and gradients are averaged; only process 0 writes.
    """
    t_start = time.perf_counter()
    _validate(recipe, data)
    if recipe.init_from is not None and init_dir is None:
        raise ValueError(f"recipe {recipe.name!r} has init_from {recipe.init_from!r}: pass init_dir (its checkpoint)")
    out_dir = Path(out_dir)
    device, rank, world = _dist()
    main = rank == 0
    if not main:
        log = lambda _m: None  # noqa: E731
    if main:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ValueError(f"{out_dir}: output folder is not empty")
        out_dir.mkdir(parents=True, exist_ok=True)
    resume_dir = Path(resume_dir) if resume_dir is not None else out_dir / "checkpoints"

    tr, jcfg, lw = recipe.training, recipe.jepa, recipe.loss_weights
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    use_bf16 = tr.precision == "bf16" and device.type == "cuda"
    if tr.precision == "bf16" and not use_bf16:
        log("note: precision bf16 requested but no CUDA device; training in fp32 on CPU")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    # ---- model; its frozen base is saved right away (before LoRA wraps it), it never changes
    model, info = build_model(recipe, data, init_dir=init_dir, log=log, save_base_to=out_dir if main else None,
                              base_dtype=torch.bfloat16 if use_bf16 else None)
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

    if jepa_mode:
        n_items = len(data.jepa_examples)
    else:
        seqs = [np.asarray(s, dtype=np.int64) for s in data.sft_sequences if len(s) >= 2]
        n_items = len(seqs)
    sampler = Sampler(n_items, tr.seed, tr.batch_size, tr.grad_accum, world, rank)
    monitor_every = tr.monitor_every or tr.log_every
    mon_ctx = monitor_contexts(data, tr.seq_len, tr.monitor_nodes) if main else []

    fingerprint = _run_fingerprint(recipe, data, init_dir)
    start, curve, tokens = 0, [], 0
    if tr.resume and tr.checkpoint_every:
        found = _latest_step(resume_dir, fingerprint, log)
        if found is not None:
            start, curve, tokens = _load_step(found, model, predictor, momentum, optim, sched, device)
            log(f"{recipe.name}: resuming from {found} (step {start}/{tr.steps})")
    log(
        f"{recipe.name}: {recipe.objective} on {device.type}" + (f" x {world} processes" if world > 1 else "")
        + (f" from {init_dir}" if init_dir is not None else "")
        + f", {n_trainable:,} trainable / {n_total:,} params, {tr.steps} steps x {tr.batch_size}"
        + (f" x {tr.grad_accum}" if tr.grad_accum > 1 else "")
        + f" x <= {tr.seq_len} tokens"
    )

    t_loop = time.perf_counter()
    tokens0 = tokens
    nan = float("nan")
    for step in range(start, tr.steps):
        lr_now = optim.param_groups[0]["lr"]
        tot = s_tot = j_tot = 0.0
        for micro in range(tr.grad_accum):
            idx = sampler.indices(step, micro)
            rng = sampler.rng(step, micro)
            if jepa_mode:
                jb = make_jepa_batch([data.jepa_examples[i] for i in idx], tr.seq_len, jcfg, data.mask_id,
                                     data.pad_id, rng)
                b = jb.tensors(device)
                tokens += int(jb.attention_mask.sum()) * world
            else:
                inp, am = make_sft_batch([seqs[i] for i in idx], tr.seq_len, data.pad_id, rng)
                b = {"input_ids": torch.from_numpy(inp).to(device), "attention_mask": torch.from_numpy(am).to(device)}
                tokens += int(am.sum()) * world
            with autocast():
                ls, lj = step_losses(model, predictor, momentum, b, sft=not jepa_mode or use_sft_aux,
                                     jepa=use_jepa)
            loss = torch.zeros((), device=device)
            if ls is not None:
                loss = loss + lw.sft * ls
                s_tot += float(ls.detach())
            if lj is not None:
                loss = loss + lw.jepa * lj
                j_tot += float(lj.detach())
            (loss / tr.grad_accum).backward()
            tot += float(loss.detach())
        if world > 1:
            _all_reduce_grads(params, world)
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
            tot, s_tot, j_tot = _mean_over_processes([tot, s_tot, j_tot], device, world)
            rec = {
                "step": n,
                "loss": tot / ga,
                "sft_loss": s_tot / ga if (not jepa_mode or use_sft_aux) else nan,
                "jepa_loss": j_tot / ga if use_jepa else nan,
                "lr": lr_now,
                "tau": tau,
            }
            if main and (n == 1 or n % monitor_every == 0 or n == tr.steps):
                rec.update(_monitor(model, mon_ctx, data.pad_id, device, autocast))
            curve.append(rec)
            el = time.perf_counter() - t_loop
            mon = f" | emb std {rec['emb_mean_std']:.3g} eff.rank {rec['emb_eff_rank']:.1f}" if "emb_eff_rank" in rec else ""
            log(
                f"{recipe.name} step {n}/{tr.steps} loss {rec['loss']:.4f}"
                + (f" (sft {rec['sft_loss']:.4f}, jepa {rec['jepa_loss']:.4f})" if jepa_mode else "")
                + f" lr {lr_now:.2e}" + (f" tau {tau:.4f}" if momentum is not None else "")
                + f" | {(tokens - tokens0) / max(el, 1e-9):,.0f} tok/s" + mon
            )
        if main and tr.checkpoint_every and n % tr.checkpoint_every == 0 and n < tr.steps:
            dest = resume_dir / f"step_{n:06d}"
            _save_step(dest, n, fingerprint, model, predictor, momentum, optim, sched, info, curve, tokens, device)
            _prune_steps(resume_dir, tr.keep_checkpoints)
            log(f"{recipe.name}: step checkpoint {dest}")
    loop_s = time.perf_counter() - t_loop

    res = TrainResult(
        steps=tr.steps,
        wall_s=time.perf_counter() - t_start,
        tokens_per_s=(tokens - tokens0) / max(loop_s, 1e-9),
        peak_mem_mb=_peak_mem_mb(device),
        loss_curve=curve,
        trainable_params=int(n_trainable),
        total_params=int(n_total),
    )
    if not main:
        return res
    # ---- save
    _save_state(model, predictor, momentum, info, out_dir)
    if tokenizer_dir is not None:
        shutil.copytree(Path(tokenizer_dir), out_dir / "tokenizer")
    (out_dir / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=2))
    (out_dir / "train_log.json").write_text(json.dumps(res.to_dict(), indent=2, allow_nan=True))
    log(f"{recipe.name}: done in {res.wall_s:.1f}s, {res.tokens_per_s:,.0f} tok/s, peak {res.peak_mem_mb:,.0f} MiB"
        + (f" (resumed at step {start})" if start else ""))
    return res


# ========================================================================================================= CLI
def _pipes():
    """The Dagster Pipes context when this process was launched by the ``<recipe>_checkpoint`` asset in subprocess
    mode (logs then stream to the Dagster run), else None. ``dagster-pipes`` is a small standalone package; a GPU
    machine without it simply logs to stdout."""
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return None
    try:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    except ImportError:
        return None
    return open_dagster_pipes() if PipesEnvVarParamsLoader().is_dagster_pipes_process() else None


def main(argv: list[str] | None = None) -> int:
    """``python -m ehr_assets.training --recipe NAME --cohort KEY``: train one recipe on one cohort, no Dagster.

    Reads the cohort's ``token_sequences`` / ``node_contexts`` from the DuckDB warehouse (read-only) and its
    tokenizer from the artifact root, or a training-data bundle (``--data``, written by :meth:`TrainData.save`), and
    writes ``<artifacts>/<recipe>_checkpoint/<cohort>/`` atomically. A killed run resumes from its last step
    checkpoint when started again. Runs under ``accelerate launch`` / torchrun for several GPUs.
    """
    import argparse
    import os
    import sys

    from .specs import RecipeSpec, SpecError, default_project_dir, load_project, load_spec
    from .warehouse import atomic_dir, default_artifact_root, default_warehouse
    from .warehouse import resume_dir as default_resume_dir

    ap = argparse.ArgumentParser(prog="python -m ehr_assets.training", description=main.__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True, help="a recipe name in <project>/models/, or a recipe YAML file")
    ap.add_argument("--cohort", help="cohort partition (reads the warehouse; names the default output folder)")
    ap.add_argument("--data", type=Path, help="training-data bundle folder instead of the warehouse")
    ap.add_argument("--project", type=Path, default=None, help="project folder (default: this repository)")
    ap.add_argument("--warehouse", type=Path, help="DuckDB file (default: $EHR_WAREHOUSE or <home>/warehouse.duckdb)")
    ap.add_argument("--artifacts", type=Path, help="artifact root (default: $EHR_ARTIFACT_ROOT or <home>/artifacts)")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: <artifacts>/tokenizer/<cohort>)")
    ap.add_argument("--init-dir", type=Path, help="checkpoint of init_from (default: <artifacts>/<parent>_checkpoint/<cohort>)")
    ap.add_argument("--resume-dir", type=Path, help="step checkpoints (default: <artifacts>/.resume/<asset>/<cohort>)")
    ap.add_argument("--out", type=Path, help="output checkpoint folder (default: <artifacts>/<recipe>_checkpoint/<cohort>)")
    args = ap.parse_args(argv)

    pipes = _pipes()
    log = pipes.log.info if pipes is not None else (lambda m: print(m, flush=True))
    try:
        project_dir = Path(args.project or default_project_dir())
        rpath = Path(args.recipe)
        tokens_key = None
        if rpath.suffix in (".yaml", ".yml"):
            # a recipe file: relative backbone paths resolve against its project (the folder holding models/)
            from .specs import resolve_backbone_paths

            root = rpath.resolve().parent.parent if rpath.resolve().parent.name == "models" else project_dir
            recipe = resolve_backbone_paths(load_spec(rpath, RecipeSpec), root)
            if not recipe.default_tokenization and args.data is None:
                raise SystemExit(f"error: recipe {recipe.name!r} reads its own tokens asset; name it by its name in "
                                 "the project (--recipe NAME) or give --data")
        else:
            project = load_project(project_dir)
            if args.recipe not in project.recipes:
                raise SpecError(f"{project_dir / 'models'}: no recipe {args.recipe!r} (known: {sorted(project.recipes)})")
            recipe = project.recipes[args.recipe]
            tokens_key = project.tokens_asset(recipe.name)
        if recipe.is_frozen:
            raise SystemExit(f"error: recipe {recipe.name!r} is frozen: it embeds a model folder as it is, no training")
        if args.data is None and args.cohort is None:
            raise SystemExit("error: give --cohort (read the warehouse) or --data (a training-data bundle)")
        if args.cohort is None and args.out is None:
            raise SystemExit("error: --out is required with --data and no --cohort")
        artifacts = Path(args.artifacts or default_artifact_root(project_dir))
        asset = f"{recipe.name}_checkpoint"
        tok = args.tokenizer or (artifacts / (tokens_key or "tokenizer") / args.cohort if args.cohort else None)
        if args.data is not None:
            data = TrainData.load(args.data)
        else:
            import duckdb

            wh = Path(args.warehouse or default_warehouse(project_dir))
            if not wh.is_file():
                raise FileNotFoundError(f"{wh}: no warehouse; materialize the cohort's token_sequences first")
            with duckdb.connect(str(wh), read_only=True) as conn:
                if tokens_key:
                    data = recipe_train_data_from_warehouse(conn, args.cohort, tokens_key, tok)
                else:
                    data = train_data_from_warehouse(conn, args.cohort, tok)
        init_dir = args.init_dir
        if recipe.init_from and init_dir is None:
            if args.cohort is None:
                raise SystemExit(f"error: recipe {recipe.name!r} starts from {recipe.init_from!r}: give --init-dir")
            init_dir = artifacts / f"{recipe.init_from}_checkpoint" / args.cohort
        out = Path(args.out or artifacts / asset / args.cohort)
        rdir = args.resume_dir or (default_resume_dir(artifacts, asset, args.cohort) if args.cohort else out.parent /
                                   f".{out.name}.resume")
        main_rank = int(os.environ.get("RANK", "0")) == 0
        if main_rank:
            with atomic_dir(out) as tmp:
                train(recipe, data, tmp, init_dir=init_dir, tokenizer_dir=tok, resume_dir=rdir, log=log)
            shutil.rmtree(rdir, ignore_errors=True)  # done: nothing left to resume
            log(f"wrote {out}")
        else:
            train(recipe, data, out, init_dir=init_dir, resume_dir=rdir, log=log)  # rank > 0 writes nothing
    except (SpecError, FileNotFoundError, LookupError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if pipes is not None:
            pipes.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
