"""How a recipe's backbone trains (``finetune``), and the trained model read back from a checkpoint.

* ``finetune: lora`` (default, the paper's recipe): the base stays frozen; LoRA adapters on ``lora.target_modules``
  train, and so do the rows of the tokens the project adds to the vocabulary (:func:`added_token_ids`) in the
  modules of ``lora.trainable_tokens`` (PEFT's ``trainable_token_indices``: the input embeddings and the output
  head by default), not whole ``embed_tokens`` / ``lm_head`` matrices. On Llama-3.1-8B that is 21.4 M trainable
  parameters instead of 1.07 B (``tests/train/test_budget.py``).
* ``finetune: full``: every weight trains. For a small backbone made from a config: its random weights, frozen, are
  no encoder at all, so the demo recipes train them.

:func:`build_model` makes the trainable model, fresh or from the ``init_from`` recipe's checkpoint (after checking
that checkpoint was made with the same backbone and the same adapter settings); :func:`load_trained` reads a
finished checkpoint back (LoRA ``adapter/`` over the base, or the full ``model/``). The base model itself (built,
saved, loaded) is :mod:`.base`. Nothing here imports the training loop.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..specs import RecipeSpec
from .base import (
    TokenSpace,
    decoder_of,
    enable_checkpointing,
    from_pretrained,
    load_base,
    new_base,
    pick_device,
    quiet,
    require_safetensors,
    save_base,
)

__all__ = [
    "added_token_ids",
    "build_model",
    "decoder_of",
    "enable_checkpointing",
    "is_peft",
    "load_trained",
    "lora_config",
    "parameter_budget",
    "pick_device",
    "trainable_parameters",
]


def is_peft(model) -> bool:
    """True for a PEFT-wrapped model (``finetune: lora``), False for a plain transformers model (``full``)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def trainable_parameters(model) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter that requires grad (LoRA adapters, trained token rows,
    ``modules_to_save`` copies; every weight under ``finetune: full``)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------------------ the added tokens
def added_token_ids(recipe: RecipeSpec, data: TokenSpace, info: dict) -> list[int]:
    """Ids of the tokens the project adds to the backbone's vocabulary: the rows ``lora.trainable_tokens`` trains.

    ``data.added_token_ids`` when the data names them; else, for a backbone made from a config, every id (its whole
    vocabulary is the project's and every row is random); for a local folder, every id from its own tokenizer's
    length (or its embedding rows before resizing, if fewer) up to the vocabulary size: what
    :func:`ehr_assets.text.tokenizers.prepare_tokenizer` appended (delimiters, time-gap, age and value-bin tokens,
    ``<mask>``, ``<pad>``)."""
    given = getattr(data, "added_token_ids", None)
    V = int(data.vocab_size)
    if given is not None:
        ids = sorted({int(i) for i in given})
        if ids and not 0 <= ids[0] <= ids[-1] < V:
            raise ValueError(f"recipe {recipe.name!r}: added_token_ids outside the vocabulary [0, {V})")
        return ids
    if info.get("kind") == "config":
        return list(range(V))
    from ..text.tokenizers import load_tokenizer_folder

    own = len(load_tokenizer_folder(recipe.tokenizer_path))
    first = min(own, int(info.get("base_rows", own)))
    return list(range(first, V))


def lora_config(recipe: RecipeSpec, token_ids: list[int] | None = None):
    """The peft LoraConfig of a recipe's ``lora`` block (a causal-LM task); ``token_ids``: the rows of each module of
    ``lora.trainable_tokens`` that train (none: no token row trains)."""
    from peft import LoraConfig, TaskType

    lo = recipe.lora
    rows = {m: list(token_ids) for m in lo.trainable_tokens} if token_ids and lo.trainable_tokens else None
    return LoraConfig(
        r=lo.rank,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=list(lo.target_modules),
        modules_to_save=list(lo.modules_to_save) or None,
        trainable_token_indices=rows,
        task_type=TaskType.CAUSAL_LM,
    )


# ------------------------------------------------------------------------------------------- the init_from parent
LORA_KEYS = ("rank", "alpha", "target_modules", "modules_to_save", "trainable_tokens")


def _check_parent(recipe: RecipeSpec, init_dir: Path) -> dict:
    """The ``init_from`` checkpoint's recipe, after checking it is that recipe, with the same backbone, the same
    ``finetune`` and (LoRA) the same adapter settings."""
    init_dir = Path(init_dir)
    rpath = init_dir / "recipe.json"
    if not rpath.is_file():
        raise FileNotFoundError(f"recipe {recipe.name!r}: init_dir {init_dir} is not a checkpoint (no recipe.json)")
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
    pft = parent.get("finetune", "lora")  # checkpoints made before the key existed are LoRA
    if pft != recipe.finetune:
        raise ValueError(
            f"recipe {recipe.name!r} (finetune: {recipe.finetune}) cannot start from recipe {pname!r} "
            f"(finetune: {pft}); re-materialize {pname!r}"
        )
    weights = "model" if recipe.finetune == "full" else "adapter"
    if not (init_dir / weights).is_dir():
        raise FileNotFoundError(f"recipe {recipe.name!r}: init_dir {init_dir} has no {weights}/ (an unfinished copy?)")
    if recipe.finetune == "lora":
        plora, mlora = parent.get("lora", {}), recipe.lora.model_dump(mode="json")
        diff = {k: (mlora[k], plora.get(k)) for k in LORA_KEYS if plora.get(k) != mlora[k]}
        if diff:
            raise ValueError(
                f"recipe {recipe.name!r} cannot start from recipe {pname!r}: LoRA settings differ "
                + ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
                + f"; re-materialize {pname!r} with these settings"
            )
    return parent


def _from_parent(
    recipe: RecipeSpec, data: TokenSpace, init_dir: Path, log: Callable[[str], None], save_base_to: Path | None
):
    """(model, base_info) holding exactly the ``init_from`` checkpoint's weights, trainable."""
    from peft import PeftModel

    parent = _check_parent(recipe, init_dir)
    if recipe.finetune == "full":
        model = from_pretrained(Path(init_dir) / "model")
        info = {"kind": "full"}
    else:
        model, info = load_base(init_dir)
    v = model.get_input_embeddings().weight.shape[0]
    if v < data.vocab_size:
        raise ValueError(
            f"recipe {recipe.name!r}: the vocabulary ({data.vocab_size}) is larger than the one recipe "
            f"{parent.get('name')!r} was trained with ({v}); retrain {parent.get('name')!r} on this tokenizer"
        )
    if recipe.finetune == "full":
        return model, info
    if save_base_to is not None:
        if info["kind"] == "config":
            shutil.copytree(Path(init_dir) / "base", Path(save_base_to) / "base")
        else:
            save_base(model, info, Path(save_base_to))
    torch.manual_seed(recipe.training.seed)
    adapter = require_safetensors(Path(init_dir) / "adapter", "adapter", "adapter_model.safetensors")
    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    if recipe.lora.dropout != parent.get("lora", {}).get("dropout", recipe.lora.dropout):
        log(f"note: lora.dropout of {parent.get('name')!r}'s adapter is used")
    return model, info


# ------------------------------------------------------------------------------------------------------- building
def build_model(
    recipe: RecipeSpec,
    data: TokenSpace,
    *,
    init_dir: Path | None = None,
    log: Callable[[str], None] = print,
    save_base_to: Path | None = None,
    base_dtype: torch.dtype | None = None,
):
    """The trainable model (on CPU) and its base_info. Trainable tensors are fp32; the frozen base is fp32 too, or
    ``base_dtype`` (bf16 on GPU: half the memory; the adapters, token rows and optimizer state stay fp32).

    ``finetune: lora``: a PeftModel, LoRA on ``lora.target_modules`` plus the added tokens' rows
    (:func:`added_token_ids`); ``full``: the transformers model itself, every weight trainable. Without ``init_dir``
    a fresh backbone (seeded with ``training.seed``) and fresh adapters; with ``init_dir`` (the ``init_from``
    recipe's checkpoint) exactly that checkpoint's weights. ``save_base_to``: write the frozen base there
    (``base/`` folder or ``base.json``, LoRA only) before LoRA wraps it in place. ``data``: anything with
    ``vocab_size``, ``pad_id``, ``bos_id`` and ``eos_id`` (a ``TrainData``), optionally ``added_token_ids``.
    """
    from peft import get_peft_model

    with quiet():
        if init_dir is not None:
            model, info = _from_parent(recipe, data, init_dir, log, save_base_to)
        else:
            model, info = new_base(recipe, data, log)
            if recipe.finetune == "lora":
                if save_base_to is not None:
                    save_base(model, info, Path(save_base_to))
                model = get_peft_model(model, lora_config(recipe, added_token_ids(recipe, data, info)))
    model.to(torch.float32)
    if recipe.finetune == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if recipe.backbone.config is None:
            log(f"note: finetune: full trains every weight of {recipe.backbone.path}")
    elif recipe.backbone.config is not None:
        log(f"note: {recipe.name}: finetune: lora on a backbone made from a config: its random base stays frozen")
    if base_dtype is not None and base_dtype != torch.float32:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(base_dtype)
    return model, {**info, "finetune": recipe.finetune}


def load_trained(ckpt_dir: Path):
    """A finished checkpoint's model (CPU, eval mode, nothing trainable) and its recipe as a dict: ``model/`` (full
    fine-tuning) or the base (``base/`` / ``base.json``) with ``adapter/`` (LoRA; also checkpoints made before
    ``trainable_tokens`` existed, whose adapter holds whole embedding and head copies)."""
    from peft import PeftModel

    ckpt_dir = Path(ckpt_dir)
    rpath = ckpt_dir / "recipe.json"
    full = (ckpt_dir / "model").is_dir()
    if not rpath.is_file() or not (full or (ckpt_dir / "adapter").is_dir()):
        raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint (recipe.json and adapter/ or model/ expected)")
    recipe = json.loads(rpath.read_text())
    with quiet():
        if full:
            model = from_pretrained(ckpt_dir / "model")
        else:
            base, _ = load_base(ckpt_dir)
            adapter = require_safetensors(ckpt_dir / "adapter", "adapter", "adapter_model.safetensors")
            model = PeftModel.from_pretrained(base, str(adapter), is_trainable=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, recipe


# --------------------------------------------------------------------------------------------------------- budget
ADAMW_STATE = 2  # AdamW keeps two fp32 moments per trainable element


def parameter_budget(model, predictor: nn.Module | None = None, *, ema: bool = True) -> dict[str, int]:
    """Parameter counts and the bytes they hold while training, from shapes and dtypes only (works on the ``meta``
    device): frozen weights and buffers at their dtype; per trainable element its fp32 value, gradient and AdamW's
    two moments, plus an fp32 EMA copy (``ema``: a momentum encoder runs) for the model's trainable tensors; the
    predictor the same, without EMA. Activations are not counted."""
    trainable = [p for _, p in trainable_parameters(model)]
    frozen_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    frozen_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    n_model = sum(p.numel() for p in trainable)
    n_pred = sum(p.numel() for p in predictor.parameters()) if predictor is not None else 0
    per = 4 * (2 + ADAMW_STATE)  # value + gradient + moments, fp32
    trainable_bytes = n_model * (per + (4 if ema else 0)) + n_pred * per
    return {
        "trainable_params": n_model,
        "predictor_params": n_pred,
        "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "frozen_bytes": frozen_bytes,
        "trainable_bytes": trainable_bytes,
        "total_bytes": frozen_bytes + trainable_bytes,
    }
