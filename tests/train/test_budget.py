"""The default LoRA recipe on the Llama-3.1-8B shape, built by the project's own ``build_model`` on the ``meta`` device
(shapes only, no memory): what trains and the memory that implies, beside the whole-matrix ``modules_to_save`` default
it replaces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ehr_assets.model.backbone import build_model, parameter_budget
from ehr_assets.model.jepa import Predictor
from ehr_assets.specs import RecipeSpec
from ehr_assets.text.delimited import FIXED_VOCAB
from ehr_assets.train import TrainData

# meta-llama/Llama-3.1-8B config.json
LLAMA_31_8B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
}
LLAMA3_VOCAB = 128256
N_ADDED = len(FIXED_VOCAB)  # the delimited format's tokens (delimiters, time gaps, ages, value bins, <mask> ...)
GB = 1e9
REPO = Path(__file__).resolve().parents[2]


def _build(lora: dict | None = None):
    recipe = RecipeSpec.model_validate(
        {
            "name": "llama8b",
            "backbone": {"architecture": "llama", "config": LLAMA_31_8B},
            "objective": "hybrid",
            "training": {"precision": "bf16"},
            **({"lora": lora} if lora else {}),
        }
    )
    V = LLAMA3_VOCAB + N_ADDED  # Llama-3's own vocabulary, resized for the added tokens
    data = TrainData([], [], V, 0, V - 1, 1, 2, added_token_ids=list(range(LLAMA3_VOCAB, V)))
    with torch.device("meta"):
        model, _ = build_model(recipe, data, log=lambda m: None, base_dtype=torch.bfloat16)
        predictor = Predictor(LLAMA_31_8B["hidden_size"], recipe.jepa.predictor_depth)
    return recipe, model, predictor


def test_default_lora_trains_adapters_and_the_added_rows_on_the_8b_shape():
    recipe, model, predictor = _build()
    assert recipe.lora.rank == 8 and recipe.lora.modules_to_save == []  # the defaults, nothing declared
    H, mlp, kv = 4096, 14336, 1024  # hidden, MLP width, key/value width (8 heads x 128)
    per_layer = (H + H) + (H + kv) + (H + kv) + (H + H) + 2 * (H + mlp) + (mlp + H)  # q k v o gate up down: in + out
    lora = 32 * recipe.lora.rank * per_layer
    rows = 2 * N_ADDED * H  # embed_tokens and lm_head rows of the added tokens
    b = parameter_budget(model, predictor)
    assert lora == 20_971_520
    assert b["trainable_params"] == lora + rows == 20_971_520 + N_ADDED * 8192
    assert b["predictor_params"] == 2 * (H * H + H) == 33_562_624
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sum("trainable_tokens_delta" in n for n in names) == 2 and not any("modules_to_save" in n for n in names)
    base = 8_030_261_248 + 2 * N_ADDED * H  # Llama-3.1-8B, resized
    assert b["frozen_params"] == base
    # bf16 base (+ fp32 rotary and row-original buffers); per trainable element fp32 value, grad, 2 Adam moments, EMA
    assert 2 * base <= b["frozen_bytes"] < 2 * base + 2e6
    assert b["trainable_bytes"] == 20 * b["trainable_params"] + 16 * b["predictor_params"]
    assert b["total_bytes"] / GB == pytest.approx(17.03, abs=0.02)  # fits an 80 GB card with room for activations
    print(
        f"\nLlama-3.1-8B default LoRA: {b['trainable_params']:,} trainable (LoRA {lora:,} + {N_ADDED} added tokens x 2 "
        f"x {H}), predictor {b['predictor_params']:,}; {b['frozen_bytes'] / GB:.2f} GB frozen bf16 + "
        f"{b['trainable_bytes'] / GB:.2f} GB trainable state = {b['total_bytes'] / GB:.2f} GB"
    )


def test_whole_matrices_would_train_a_billion_parameters():
    """The former default (``modules_to_save: [embed_tokens, lm_head]``) on the same shape: every row of both
    matrices trains, with its Adam moments and EMA copy."""
    _, model, predictor = _build({"modules_to_save": ["embed_tokens", "lm_head"], "trainable_tokens": []})
    b = parameter_budget(model, predictor)
    V, H = LLAMA3_VOCAB + N_ADDED, 4096
    assert b["trainable_params"] == 20_971_520 + 2 * V * H == 1_072_046_080
    assert b["total_bytes"] / GB == pytest.approx(38.04, abs=0.02)  # 21 GB more than the added-rows default
    total = b["total_bytes"] / GB
    print(f"\nLlama-3.1-8B whole embed_tokens + lm_head: {b['trainable_params']:,} trainable, {total:.1f} GB")


def test_the_gpu_bench_trains_as_many_added_rows():
    """bench/gpu_step.py states the added-token count (it cannot import text/ on a GPU image): the same number."""
    spec = importlib.util.spec_from_file_location("gpu_step_budget", REPO / "bench" / "gpu_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.N_ADDED_TOKENS == N_ADDED
