"""``finetune: lora`` trains LoRA plus the rows of the tokens the project adds (not whole embedding matrices), on a
real local backbone folder with its own tokenizer; ``finetune: full`` trains every weight; checkpoints made before
either existed still embed, and refuse to be continued with a message that says why."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ehr_assets.embed import embed
from ehr_assets.model.backbone import load_trained, trainable_parameters
from ehr_assets.model.base import from_pretrained
from ehr_assets.specs import RecipeSpec
from ehr_assets.text.tokenizers import load_tokenizer_folder, prepare_tokenizer, special_ids
from ehr_assets.train import TrainData, train

from ..real_data import save_tiny_llama
from .test_training import TINY, make_data, quiet, recipe


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A tiny Llama folder with its own BPE tokenizer, the delimited tokenizer prepared from it, and train data
    whose ids use both the folder's own tokens and the added ones."""
    root = tmp_path_factory.mktemp("local")
    folder = save_tiny_llama(root / "tiny_llama")
    tok, info = prepare_tokenizer(folder, "delimited", trainable=True)
    own = len(load_tokenizer_folder(folder))
    V = len(tok)
    sp = special_ids(tok)
    rng = np.random.default_rng(0)
    seqs = [
        np.concatenate([[sp["bos_id"]], rng.integers(0, V, size=int(rng.integers(20, 50)))]).astype(np.int64)
        for _ in range(10)
    ]
    data = TrainData(seqs, [(s, len(s) // 2) for s in seqs], V, sp["pad_id"], sp["mask_id"], sp["bos_id"], sp["eos_id"])
    return folder, own, V, data, info


def _local_recipe(folder, **kw) -> RecipeSpec:
    return RecipeSpec.model_validate(
        {
            "name": "loc",
            "backbone": {"architecture": "llama", "path": str(folder)},
            "objective": "hybrid",
            "lora": {"rank": 4, "alpha": 8},
            "optimizer": {"lr": 1e-2, "schedule": "constant", "warmup_steps": 0},
            "training": {"steps": 3, "batch_size": 4, "seq_len": 32, "log_every": 1, "monitor_nodes": 0},
            **kw,
        }
    )


def test_lora_trains_only_the_added_tokens_rows_of_a_local_backbone(local, tmp_path):
    folder, own, V, data, info = local
    assert V - own == len(info["added_tokens"]) > 40  # delimiters, time-gap, age, value-bin tokens ...
    ck = tmp_path / "ck"
    res = train(_local_recipe(folder), data, ck, log=quiet)
    H = 32
    lora = sum(p.numel() for n, p in _trainable(folder, data) if "lora_" in n)
    assert res.trainable_params == lora + 2 * (V - own) * H + _predictor_params(H)  # rows of embed_tokens + lm_head

    adapter = load_file(str(ck / "adapter" / "adapter_model.safetensors"))
    assert not any(k.endswith("embed_tokens.weight") or k.endswith("lm_head.weight") for k in adapter)  # no matrices
    rows = [v for k, v in adapter.items() if "trainable_tokens_delta" in k]
    assert len(rows) == 2 and all(tuple(v.shape) == (V - own, H) for v in rows)

    model, _ = load_trained(ck)
    trained = model.get_input_embeddings().weight.detach()  # the merged matrix the model reads with
    base = from_pretrained(folder).get_input_embeddings().weight.detach()
    assert torch.equal(trained[:own], base)  # the folder's own tokens are untouched
    emb_rows = next(v for k, v in adapter.items() if "embed_tokens" in k and "trainable_tokens_delta" in k)
    assert torch.equal(trained[own:], emb_rows)  # the added rows are the adapter's, whatever the resize drew

    # the reloaded model reads the added rows from the adapter, not from the random rows the resize draws
    ctx = [s[:12] for s in data.sft_sequences]
    torch.manual_seed(1)
    a = embed(ck, ctx)
    torch.manual_seed(2)
    b = embed(ck, ctx)
    np.testing.assert_array_equal(a, b)


def _trainable(folder, data):
    from ehr_assets.model.backbone import build_model

    model, _ = build_model(_local_recipe(folder), data, log=quiet)
    return trainable_parameters(model)


def _predictor_params(H: int) -> int:
    return 2 * (H * H + H)


def test_added_token_ids_of_each_kind_of_backbone(local):
    from ehr_assets.model.backbone import added_token_ids

    folder, own, V, data, _ = local
    r = _local_recipe(folder)
    assert added_token_ids(r, data, {"kind": "path", "base_rows": own}) == list(range(own, V))
    assert added_token_ids(r, data, {"kind": "path", "base_rows": own - 5}) == list(range(own - 5, V))
    tiny = recipe()
    d = make_data()
    assert added_token_ids(tiny, d, {"kind": "config"}) == list(range(d.vocab_size))  # every row is random
    d.added_token_ids = [40, 41, 47]
    assert added_token_ids(tiny, d, {"kind": "config"}) == [40, 41, 47]
    d.added_token_ids = [48]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        added_token_ids(tiny, d, {"kind": "config"})


def test_full_finetuning_trains_every_weight_and_continues(tmp_path):
    data = make_data(n=8, seed=3)
    res = train(recipe(finetune="full", training={"steps": 2}), data, tmp_path / "sft", log=quiet)
    assert res.trainable_params == res.total_params and res.finetune == "full"
    assert (tmp_path / "sft" / "model" / "model.safetensors").is_file() and not (tmp_path / "sft" / "adapter").exists()
    before = load_file(str(tmp_path / "sft" / "model" / "model.safetensors"))
    init = from_pretrained(tmp_path / "sft" / "model")  # what a fresh seeded model would be is not this
    assert set(before) == {k for k, _ in init.named_parameters()}
    j = recipe("jepa", "jepa", finetune="full", init_from="sft", training={"steps": 2})
    train(j, data, tmp_path / "jepa", init_dir=tmp_path / "sft", log=quiet)
    after = load_file(str(tmp_path / "jepa" / "model" / "model.safetensors"))
    ema = load_file(str(tmp_path / "jepa" / "ema_model.safetensors"))
    assert ema.keys() == after.keys() == before.keys()
    moved = [k for k in after if not torch.equal(after[k], before[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in moved and "model.embed_tokens.weight" in moved
    with pytest.raises(ValueError, match=r"finetune: lora.*'sft'.*finetune: full"):
        train(recipe("jepa", "jepa", init_from="sft"), data, tmp_path / "x", init_dir=tmp_path / "sft", log=quiet)


def test_a_checkpoint_from_before_trainable_tokens_still_embeds_and_says_why_it_cannot_continue(tmp_path):
    """The layout today's main wrote: LoRA with whole embed_tokens / lm_head copies, a recipe.json without the new
    keys. It embeds as before; a recipe continuing it with today's defaults is refused with a message."""
    data = make_data(n=8, seed=4)
    old = recipe(lora={"rank": 4, "alpha": 8, "modules_to_save": ["embed_tokens", "lm_head"], "trainable_tokens": []})
    train(old, data, tmp_path / "sft", log=quiet)
    rj = json.loads((tmp_path / "sft" / "recipe.json").read_text())
    del rj["finetune"], rj["lora"]["trainable_tokens"]
    rj["embedding"].pop("min_effective_rank")
    (tmp_path / "sft" / "recipe.json").write_text(json.dumps(rj))
    adapter = load_file(str(tmp_path / "sft" / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("embed_tokens.weight") for k in adapter)  # whole matrices, as before

    ctx = [s[:10] for s in data.sft_sequences]
    emb = embed(tmp_path / "sft", ctx)
    model, _ = load_trained(tmp_path / "sft")
    w = model.get_input_embeddings().weight
    key = next(k for k in adapter if k.endswith("embed_tokens.weight"))
    assert torch.equal(w.detach(), adapter[key]) and np.isfinite(emb).all()

    with pytest.raises(ValueError, match=r"LoRA settings differ.*modules_to_save.*re-materialize 'sft'"):
        train(recipe("jepa", "jepa", init_from="sft"), data, tmp_path / "j", init_dir=tmp_path / "sft", log=quiet)


def test_spec_rules_for_finetune_and_token_rows(tmp_path):
    from ehr_assets.specs import SpecError, load_project

    with pytest.raises(ValueError, match="both modules_to_save"):
        recipe(lora={"modules_to_save": ["lm_head"]})
    with pytest.raises(ValueError, match="frozen recipe trains nothing"):
        RecipeSpec.model_validate({"name": "f", "objective": "frozen", "finetune": "full", "backbone": {"path": "/x"}})
    for d in ("cohorts", "models", "probes"):
        (tmp_path / d).mkdir()
    (tmp_path / "cohorts" / "c.yaml").write_text(
        "source: {kind: synthetic, profile: pe, subjects: 10}\ndecision_nodes: {codes: [CPT4/71275]}\n"
    )
    (tmp_path / "models" / "a.yaml").write_text(f"objective: sft\nfinetune: full\nbackbone: {json.dumps(TINY)}\n")
    (tmp_path / "models" / "b.yaml").write_text("extends: a\nobjective: jepa\ninit_from: a\nfinetune: lora\n")
    with pytest.raises(SpecError, match=r"models/b.yaml: finetune: 'lora' cannot continue init_from 'a' \('full'\)"):
        load_project(tmp_path)


def test_a_full_checkpoint_exports_as_the_trained_model(tmp_path):
    """``python -m ehr_assets.export`` on a ``finetune: full`` checkpoint: no adapter to merge, the trained model as it
    is, giving the checkpoint's own embeddings."""
    from ehr_assets.export import merged_model

    data = make_data(n=8, seed=4)
    train(recipe(finetune="full", training={"steps": 2}), data, tmp_path / "sft", log=quiet)
    model = merged_model(tmp_path / "sft")
    assert not hasattr(model, "peft_config")
    saved = load_file(str(tmp_path / "sft" / "model" / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    ctx = data.sft_sequences[0][:20]
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor(np.asarray([ctx]))).last_hidden_state[0, -1].numpy()
    np.testing.assert_allclose(h, embed(tmp_path / "sft", [ctx])[0], rtol=1e-5, atol=1e-5)
