"""Regimes compared on equal terms: every regime's SFT term reads the windows of whole timelines the ``sft`` recipe
reads (a curriculum's phases continue one data stream, so curriculum and hybrid see the same SFT windows in the same
order), tokens seen are counted per loss and over the ``init_from`` chain, and the shipped regime recipes share
backbone, fine-tuning mode and optimizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehr_assets import keys
from ehr_assets.compute import compute_record, compute_table, forward_equivalents
from ehr_assets.specs import load_project
from ehr_assets.train import TrainData, train

from ..conftest import REPO
from .test_objective import _spy_on_training
from .test_training import MASK, make_data, quiet, recipe

S, J = 3, 2  # steps of the SFT phase and of the JEPA phase


def _sft_and_jepa_reads(calls) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(the SFT pass's (ids, mask) per step, the online JEPA pass's) from a decoder spy's calls."""
    grad = [c for c in calls if c["grad"]]
    sft = [(c["ids"], c["am"]) for c in grad if not (c["ids"] == MASK).any()]
    jepa = [(c["ids"], c["am"]) for c in grad if (c["ids"] == MASK).any()]
    return sft, jepa


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """sft (S steps) -> jepa (J steps), and hybrid (S + J steps) from the base, same seed and batch, with what each
    step's SFT and online passes read."""
    tmp = tmp_path_factory.mktemp("regimes")
    data = make_data(n=7, seed=21, min_len=40, max_len=90)  # longer than seq_len: windows are drawn at random
    mp = pytest.MonkeyPatch()
    out = {"data": data, "root": tmp}
    try:
        for name, objective, steps, init in (
            ("sft", "sft", S, None),
            ("jepa", "jepa", J, "sft"),
            ("hybrid", "hybrid", S + J, None),
        ):
            seen = _spy_on_training(mp)
            r = recipe(name, objective, init_from=init, training={"steps": steps, "batch_size": 3, "monitor_nodes": 0})
            ck = tmp / f"{name}_checkpoint" / "c"
            res = train(r, data, ck, init_dir=tmp / "sft_checkpoint" / "c" if init else None, log=quiet)
            out[name] = (res, *_sft_and_jepa_reads(seen["spy"].calls))
    finally:
        mp.undo()
    return out


def test_curriculum_and_hybrid_read_the_same_sft_windows(runs):
    _, sft_reads, _ = runs["sft"]
    _, jepa_phase_sft, _ = runs["jepa"]
    _, hybrid_sft, _ = runs["hybrid"]
    assert len(sft_reads) == S and len(jepa_phase_sft) == J and len(hybrid_sft) == S + J
    curriculum = sft_reads + jepa_phase_sft
    for step, ((a, am_a), (b, am_b)) in enumerate(zip(curriculum, hybrid_sft)):
        assert torch.equal(a, b) and torch.equal(am_a, am_b), f"step {step}: the SFT windows differ"
    # and they are windows of whole timelines, not decision-node crops
    seqs = runs["data"].sft_sequences
    for ids, am in hybrid_sft:
        for row, m in zip(ids.numpy(), am.numpy()):
            toks = row[m == 1]
            assert any(
                any(np.array_equal(s[i : i + len(toks)], toks) for i in range(len(s) - len(toks) + 1)) for s in seqs
            )
    # the JEPA phase continues the stream rather than rereading sft's first windows
    assert not torch.equal(jepa_phase_sft[0][0], sft_reads[0][0])


def test_tokens_seen_are_counted_per_loss_and_over_the_chain(runs):
    for name in ("sft", "jepa", "hybrid"):
        res, sft_reads, jepa_reads = runs[name]
        assert res.tokens_seen == {
            "sft": sum(int(am.sum()) for _, am in sft_reads),
            "jepa": sum(int(am.sum()) for _, am in jepa_reads),
        }, name
    sft, jep, hyb = runs["sft"][0], runs["jepa"][0], runs["hybrid"][0]
    assert sft.tokens_seen["jepa"] == 0 and sft.tokens_seen_total == sft.tokens_seen
    assert jep.tokens_seen_total == {k: sft.tokens_seen[k] + jep.tokens_seen[k] for k in ("sft", "jepa")}
    assert hyb.tokens_seen_total == hyb.tokens_seen
    assert hyb.tokens_seen["sft"] == jep.tokens_seen_total["sft"]  # the same SFT windows, counted the same

    table = compute_table(runs["root"]).set_index("recipe")
    assert set(table.index) == {"sft", "jepa", "hybrid"} and set(table["cohort"]) == {"c"}
    row = table.loc["jepa"]
    assert row["sft_tokens_total"] == jep.tokens_seen_total["sft"] and row["init_from"] == "sft"
    # LoRA: a pass with gradients costs 2 forward passes, the no-grad momentum pass 1
    t = jep.tokens_seen_total
    assert row["forward_token_equivalents_total"] == 2 * t["sft"] + 3 * t["jepa"]
    assert forward_equivalents(t, "full") == 3 * t["sft"] + 4 * t["jepa"]


def test_a_log_from_before_tokens_were_counted_reads_as_unknown():
    rec = compute_record({"steps": 10, "loss_curve": []})
    assert rec["steps"] == 10 and np.isnan(rec["sft_tokens"]) and np.isnan(rec["forward_token_equivalents_total"])
    # a log with one count for both losses (before they were split) is unknown per loss too, not misread
    rec = compute_record({"steps": 10, "loss_curve": [], "tokens_seen": 1234})
    assert np.isnan(rec["jepa_tokens"]) and np.isnan(rec["sft_tokens_total"])


def test_a_parent_without_stream_positions_starts_the_streams_at_zero_and_says_so(runs, tmp_path):
    import json
    import shutil

    parent = tmp_path / "sft"
    shutil.copytree(runs["root"] / "sft_checkpoint" / "c", parent)
    log = json.loads((parent / "train_log.json").read_text())
    del log["stream_ends"]
    (parent / "train_log.json").write_text(json.dumps(log))
    lines: list[str] = []
    r = recipe("jepa", "jepa", init_from="sft", training={"steps": 1, "batch_size": 3, "monitor_nodes": 0})
    train(r, runs["data"], tmp_path / "j", init_dir=parent, log=lines.append)
    assert any("does not say where it left the data streams" in m for m in lines)


@pytest.mark.parametrize("folder", [".", "study"])
def test_shipped_regime_recipes_share_backbone_finetune_and_optimizer(folder):
    """Every recipe of the demo and of the study compares regimes or ablations against ``sft``: it trains the same
    backbone, the same way, with the same optimizer and batches; steps add up (hybrid and, in the study, JEPA-only
    = both curriculum phases)."""
    recipes = load_project(REPO / folder).recipes
    sft = recipes["sft"]
    assert sft.finetune == "full" and sft.backbone.config is not None  # the tiny random backbone trains fully
    for r in recipes.values():
        assert r.backbone == sft.backbone and r.finetune == sft.finetune and r.lora == sft.lora, r.name
        assert r.optimizer == sft.optimizer, f"{r.name}: optimizer {r.optimizer} differs from sft's {sft.optimizer}"
        seed = keys.parse_replicate(r.name)[1]
        assert seed is None or r.training.seed == seed, r.name  # a replicate differs in its seed only
        own = {"steps"} if seed is None else {"steps", "seed"}
        same = {k: v for k, v in r.training.model_dump().items() if k not in own}
        assert same == {k: v for k, v in sft.training.model_dump().items() if k not in own}, r.name
    curriculum = sft.training.steps + recipes["jepa"].training.steps
    assert recipes["hybrid"].training.steps == curriculum
    assert "jepa_only" not in recipes or recipes["jepa_only"].training.steps == curriculum
    assert recipes["hybrid"].init_from is None and recipes["jepa"].init_from == "sft"


def test_bundle_carries_the_added_token_ids(tmp_path):
    d = make_data(n=3)
    d.added_token_ids = [44, 45, 46, 47]
    d.save(tmp_path / "b")
    assert TrainData.load(tmp_path / "b").added_token_ids == [44, 45, 46, 47]
    assert TrainData.load(_saved(make_data(n=3), tmp_path / "c")).added_token_ids is None


def _saved(d: TrainData, folder):
    d.save(folder)
    return folder
