"""Local backbones with their own tokenizer: added tokens, block offsets, recipe rules, frozen embedding of a model
folder. (Training from a local folder is exercised by tests/test_real_data_pipeline.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from ehr_assets.embed import embed_frozen
from ehr_assets.specs import RecipeSpec, SpecError, load_project
from ehr_assets.text import tokenizers as tk
from ehr_assets.text.delimited import FIXED_VOCAB

from ..real_data import save_tiny_llama


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny_llama")


def test_added_tokens_per_format(llama_dir):
    base = tk.load_tokenizer_folder(llama_dir)
    n = len(base)
    tok, info = tk.prepare_tokenizer(llama_dir, "delimited", trainable=True)
    assert info["added_tokens"] == [t for t in FIXED_VOCAB if t not in base.get_vocab()]
    assert len(tok) == n + len(info["added_tokens"]) and len(info["added_tokens"]) > 40
    ids = tok("<bos> <conditions> ICD10/C34.90 <dt:1-3m> <q2>", add_special_tokens=False)["input_ids"]
    toks = tok.convert_ids_to_tokens(ids)
    assert {"<bos>", "<conditions>", "<dt:1-3m>", "<q2>"} <= set(toks)  # never split
    assert sum(t not in FIXED_VOCAB for t in toks) >= 3  # the code is split by the model's own vocabulary
    sp = tk.special_ids(tok)
    assert sp["pad_id"] == tok.convert_tokens_to_ids("<pad>") and sp["mask_id"] == tok.convert_tokens_to_ids("<mask>")
    assert sp["bos_id"] == base.bos_token_id  # the model's own BOS wins over the added word
    tok, info = tk.prepare_tokenizer(llama_dir, "smb_v1", trainable=True)
    assert info["added_tokens"] == ["<mask>", "<pad>"] and tok.pad_token == "<pad>"
    tok, info = tk.prepare_tokenizer(llama_dir, "smb_v1", trainable=False)
    assert info["added_tokens"] == [] and len(tok) == n  # a frozen model reads the text exactly as released
    with pytest.raises(tk.TokenizerError, match="tokenizer folder not found"):
        tk.load_tokenizer_folder(llama_dir / "missing")


def test_block_offsets_map_to_whole_tokens(llama_dir):
    tok, _ = tk.prepare_tokenizer(llama_dir, "smb_v1", trainable=False)
    blocks = [
        "Birth: 1960-01-01\nGENDER/F",
        "\n\n\n[2015-01-01]\nLOINC/2160-0 (mg/dL): 0.85, 1.12",
        "\n\n[2015-02-03]\nCPT4/71275",
    ]
    text = "".join(blocks)
    ends = np.cumsum([len(b) for b in blocks]).tolist()
    [(ids, tok_ends, starts)] = tk.encode_with_offsets(tok, [text], "smb_v1")
    assert ids[0] == tok.bos_token_id  # smb_v1 keeps the tokenizer's own specials
    te = tk.token_ends(ends, tok_ends)
    assert te[-1] == len(ids)
    for c, k in zip(ends, te):
        # the tokens up to the block end are what the context text alone tokenizes to
        assert ids[:k].tolist() == tk.encode(tok, [text[:c]], "smb_v1")[0].tolist()
        assert tk.first_token_at(starts, c) == k


def test_recipe_rules_for_formats_frozen_and_chains(tmp_path):
    def recipe(**kw):
        return RecipeSpec.model_validate({"name": "r", "objective": "sft", "backbone": {"config": {}}, **kw})

    assert recipe().default_tokenization and recipe().tokenization == ("delimited", None)
    with pytest.raises(ValueError, match="format: smb_v1 is plain text for a subword tokenizer"):
        recipe(format="smb_v1")
    r = recipe(format="smb_v1", backbone={"config": {}, "tokenizer": "tok"})
    assert r.tokenization == ("smb_v1", "tok") and not r.default_tokenization
    with pytest.raises(ValueError, match="objective: frozen embeds with a given model; set backbone.path"):
        recipe(objective="frozen")

    root = tmp_path / "p"
    for d in ("cohorts", "models", "probes"):
        (root / d).mkdir(parents=True)
    (root / "cohorts" / "a.yaml").write_text(
        "source: {kind: synthetic, profile: pe, subjects: 5}\ndecision_nodes: {codes: [X]}\n"
    )
    w = lambda n, d: (root / "models" / f"{n}.yaml").write_text(yaml.safe_dump(d))  # noqa: E731
    w("base", {"objective": "sft", "backbone": {"path": "hf/llama"}})
    w("cont", {"objective": "jepa", "init_from": "base", "backbone": {"path": "hf/llama"}})
    w("released", {"objective": "frozen", "format": "smb_v1", "backbone": {"path": "hf/smb"}})
    p = load_project(root)
    assert p.recipes["base"].backbone.path == str((root / "hf" / "llama").resolve())
    # one tokens asset per init_from chain, named after its root; frozen recipes get their own
    assert p.tokens_asset("base") == p.tokens_asset("cont") == "base_tokens"
    assert p.tokens_asset("released") == "released_tokens"
    w("cont", {"objective": "jepa", "init_from": "base", "format": "smb_v1", "backbone": {"path": "hf/llama"}})
    with pytest.raises(SpecError, match=r"cont\.yaml: format/backbone\.tokenizer: must equal those of init_from"):
        load_project(root)
    w("cont", {"objective": "jepa", "init_from": "released", "format": "smb_v1", "backbone": {"path": "hf/smb"}})
    with pytest.raises(SpecError, match=r"cont\.yaml: init_from: 'released' is a frozen recipe"):
        load_project(root)


def test_embed_frozen_is_the_model_folder_as_it_is(llama_dir):
    from transformers import AutoModelForCausalLM

    tok = tk.load_tokenizer_folder(llama_dir)
    texts = ["Birth: 1960-01-01\nGENDER/F\n\n\n[2015-01-01]\nCPT4/71275", "\n[2016-03-04]\nPROGRESSION/Y"]
    ctxs = tk.encode(tok, texts, "smb_v1")
    got = embed_frozen(llama_dir, ctxs, vocab_size=len(tok), pool="last", batch_size=2, pad_id=tok.eos_token_id)
    model = AutoModelForCausalLM.from_pretrained(str(llama_dir), local_files_only=True)
    with torch.no_grad():
        for i, c in enumerate(ctxs):
            h = model(input_ids=torch.from_numpy(c.astype(np.int64))[None], output_hidden_states=True).hidden_states[-1]
            np.testing.assert_allclose(got[i], h[0, -1].numpy(), atol=1e-5, rtol=0)
    # a grown vocabulary resizes deterministically (seeded new rows); the old rows are untouched
    a = embed_frozen(llama_dir, ctxs, vocab_size=len(tok) + 3, seed=1)
    b = embed_frozen(llama_dir, ctxs, vocab_size=len(tok) + 3, seed=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[:, :], embed_frozen(llama_dir, ctxs), atol=1e-5, rtol=0)
