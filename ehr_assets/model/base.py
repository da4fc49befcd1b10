"""The backbone before any adapter: a small Llama / Qwen3 made from a config, or a local Hugging Face folder, and
how it is saved into a checkpoint and read back; plus the parts of a model the losses and the embeddings call.

A recipe's backbone is either made from a config (``backbone.config``: random weights seeded with ``training.seed``,
sized to the cohort's tokenizer) or read from a local folder (``backbone.path``, never downloaded, safetensors only:
pickle files run code when loaded). :func:`new_base` builds it, :func:`save_base` writes it into a checkpoint
(``base/`` or ``base.json``), :func:`load_base` reads it back. :mod:`.backbone` wraps it for training (LoRA or full).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..specs import RecipeSpec


class TokenSpace(Protocol):
    """What :func:`build_model` reads of the training data: the vocabulary size and the special token ids."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device; default: cuda when available, else cpu."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


# ------------------------------------------------------------------------------------------------ local folders
def require_safetensors(folder: str | Path, what: str, pattern: str = "*.safetensors") -> Path:
    """Weights are only ever read from safetensors: a folder holding only pickle-based files (``*.bin``, ``*.pt``,
    ``*.pth``, ``*.pkl``) is refused, because unpickling runs code from the file."""
    folder = Path(folder)
    if not list(folder.glob(pattern)):
        pickled = sorted(p.name for ext in ("*.bin", "*.pt", "*.pth", "*.pkl") for p in folder.glob(ext))
        hint = f" (it has {pickled[:3]}: pickle files are not loaded; convert them to safetensors)" if pickled else ""
        raise FileNotFoundError(f"{folder}: no {pattern} {what} weights{hint}")
    return folder


def from_pretrained(path: str | Path):
    """The fp32 causal LM of a local Hugging Face folder (``config.json`` + safetensors weights); nothing is
    downloaded."""
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: not a local Hugging Face model folder (no config.json); nothing is downloaded")
    require_safetensors(p, "model")
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(p), local_files_only=True, dtype=torch.float32, use_safetensors=True
        )
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        return AutoModelForCausalLM.from_pretrained(
            str(p), local_files_only=True, torch_dtype=torch.float32, use_safetensors=True
        )


# ------------------------------------------------------------------------------------------------------ the base
def backbone_config(recipe: RecipeSpec, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    """The transformers config of a recipe's ``backbone.config`` (Llama or Qwen3), sized to the vocabulary."""
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


def set_special_ids(model, pad_id: int, bos_id: int, eos_id: int) -> None:
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = int(pad_id), int(bos_id), int(eos_id)


def new_base(recipe: RecipeSpec, data: TokenSpace, log: Callable[[str], None]):
    """The recipe's backbone, before any adapter. Returns (model, base_info); base_info says how to save/reload it
    (a local folder's ``base_rows``: its embedding rows before the added tokens resized it)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(recipe.training.seed)
    if recipe.backbone.config is not None:
        cfg = backbone_config(recipe, data.vocab_size, data.pad_id, data.bos_id, data.eos_id)
        model = AutoModelForCausalLM.from_config(cfg)
        model.to(torch.float32)
        return model, {"kind": "config"}
    model = from_pretrained(recipe.backbone.path)
    v0 = model.get_input_embeddings().weight.shape[0]
    resized = False
    if data.vocab_size > v0:
        log(f"resizing the token embeddings of {recipe.backbone.path} from {v0} to {data.vocab_size}")
        model.resize_token_embeddings(int(data.vocab_size), mean_resizing=False)
        resized = True
    set_special_ids(model, data.pad_id, data.bos_id, data.eos_id)
    vocab = model.get_input_embeddings().weight.shape[0]
    info = {
        "path": str(Path(recipe.backbone.path).resolve()),
        "vocab_size": int(vocab),
        "architecture": recipe.backbone.architecture,
        "resized": resized,
        "base_rows": int(v0),  # embedding rows before resizing: every row from here on is new
    }
    return model, {"kind": "path", **info}


def save_base(base, info: dict, dest: Path) -> None:
    """``dest/base/`` (config-built backbone, safetensors) or ``dest/base.json`` (local-folder backbone)."""
    if info["kind"] == "config":
        base.save_pretrained(str(dest / "base"), safe_serialization=True)
    else:
        (dest / "base.json").write_text(json.dumps({k: v for k, v in info.items() if k != "kind"}, indent=2))


def load_base(ckpt_dir: Path):
    """The frozen base model of a checkpoint folder (``base/`` or ``base.json``), and its base_info."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / "base").is_dir():
        model = from_pretrained(ckpt_dir / "base")
        return model, {"kind": "config"}
    if (ckpt_dir / "base.json").is_file():
        info = json.loads((ckpt_dir / "base.json").read_text())
        model = from_pretrained(info["path"])
        v = int(info.get("vocab_size", 0))
        if v and model.get_input_embeddings().weight.shape[0] != v:
            # the new rows are overwritten by the adapter's trained token rows (or its saved embedding layers)
            model.resize_token_embeddings(v, mean_resizing=False)
        return model, {"kind": "path", **info}
    raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint (neither base/ nor base.json)")


# ------------------------------------------------------------------------------------------- parts of the model
def decoder_of(model) -> tuple[nn.Module, str]:
    """The inner decoder stack (``model.model`` of the CausalLM, no lm_head) and its name prefix in ``model``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    for name, mod in model.named_modules():
        if mod is dec:
            return dec, (name + ".") if name else ""
    raise RuntimeError("decoder stack not found in the model")


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing on the base model, non-reentrant, with inputs that require grad so the
    frozen embeddings still pass gradients to the adapters."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with quiet():
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable({"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()
