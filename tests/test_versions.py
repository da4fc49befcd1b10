"""ehr_assets.versions: declaration digests, stage code fingerprints and the data versions of what assets wrote."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_assets import versions
from ehr_assets.specs import load_project

from .conftest import REPO


def test_every_stage_code_fingerprint_is_recorded():
    """A stage's code changed without a decision about its version: bump ``version`` in
    ehr_assets/stage_versions.json if the stage's output can change, then ``python -m ehr_assets.versions --lock``."""
    assert versions.stale_fingerprints() == []
    assert set(versions.read_lock()) == set(versions.STAGE_CODE)


def test_a_fingerprint_ignores_comments_docstrings_and_formatting_but_not_code():
    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    same = '# a comment\ndef f( x ):\n    """Another doc."""\n\n    return (x + 1)  # why\n'
    other = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert versions.source_fingerprint(base) == versions.source_fingerprint(same)
    assert versions.source_fingerprint(base) != versions.source_fingerprint(other)


def test_the_stage_code_covers_every_module_an_asset_stage_runs():
    """Every module of the data, text, model, train and eval packages belongs to some stage: a change to one
    cannot go unversioned."""
    covered = {f for paths in versions.STAGE_CODE.values() for f in versions.code_files(paths)}
    for pkg in ("data", "text", "model", "train"):
        for f in (versions.PACKAGE / pkg).rglob("*.py"):
            assert f in covered or f.name == "__init__.py", f
    stage_eval = {"model_card.py", "exports.py"}  # model_card: the export command, not an asset
    for f in (versions.PACKAGE / "eval").glob("*.py"):
        assert f in covered or f.name in stage_eval or f.name == "__init__.py", f


def test_frame_version_is_content_not_order_or_write_time():
    a = pd.DataFrame({"x": [1, 2, 3], "ids": [[1, 2], [3], []], "materialized_at": ["t1", "t2", "t3"]})
    b = a.iloc[::-1].assign(materialized_at=["u", "v", "w"])
    assert versions.frame_version(a) == versions.frame_version(b)
    assert versions.frame_version(a) != versions.frame_version(a.assign(x=[1, 2, 4]))
    assert versions.frame_version(a) != versions.frame_version(a.assign(ids=[[1, 2], [3], [0]]))
    assert versions.frame_version(a) != versions.frame_version(a.astype({"x": "float64"}))  # types count


def test_files_version_reads_contents_and_skips_named_files(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(np.arange(10, dtype=np.float32).tobytes())
    (tmp_path / "train_log.json").write_text('{"wall_s": 1.0}')
    v = versions.files_version(tmp_path, exclude=("train_log.json",))
    (tmp_path / "train_log.json").write_text('{"wall_s": 2.0}')
    assert versions.files_version(tmp_path, exclude=("train_log.json",)) == v
    (tmp_path / "w.safetensors").write_bytes(np.arange(1, 11, dtype=np.float32).tobytes())
    assert versions.files_version(tmp_path, exclude=("train_log.json",)) != v


def test_path_digest_of_a_large_file_reads_its_size_and_both_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(versions, "WHOLE_FILE_BYTES", 64)
    monkeypatch.setattr(versions, "EDGE_BYTES", 16)
    f = tmp_path / "shard.parquet"
    data = bytearray(range(200))
    f.write_bytes(bytes(data))
    v = versions.path_digest(f)
    data[-1] ^= 1  # the footer
    f.write_bytes(bytes(data))
    assert versions.path_digest(f) != v
    assert versions.path_digest(tmp_path / "nope") == "missing"


@pytest.fixture(scope="module")
def shipped():
    return load_project(REPO)


def test_partition_declarations_are_per_cohort_and_a_union_carries_its_members(shipped):
    d = versions.partition_declarations(shipped)
    assert set(d) == set(versions.PARTITION_DECLARATIONS)
    for part in d.values():
        assert set(part) == {"msk", "inspect", "combined"}
        assert len({part["msk"], part["inspect"], part["combined"]}) == 3 or part is d["cohort_aces_tasks"]


def test_a_recipe_declaration_resolves_its_init_from_chain_and_leaves_out_bookkeeping(shipped):
    jepa = versions.recipe_declaration(shipped, "jepa", "checkpoint")
    assert jepa["init_from"] == versions.recipe_declaration(shipped, "sft", "checkpoint")
    for key in versions.RECIPE_KEYS_NOT_IN_OUTPUT:
        assert key not in jepa
    assert "embedding" not in jepa and "embedding" in versions.recipe_declaration(shipped, "jepa", "embeddings")
    assert "jepa" not in versions.recipe_declaration(shipped, "sft", "checkpoint")  # sft trains no JEPA loss
    study = load_project(REPO / "study")  # the shipped recipes declare no seeds; the study's do
    seed1 = versions.recipe_declaration(study, "jepa_seed1", "checkpoint")
    assert seed1["training"]["seed"] == 1 and seed1["init_from"]["training"]["seed"] == 1  # sft_seed1
