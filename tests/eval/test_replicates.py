"""Training-seed replicates: declared in a recipe's YAML, expanded into recipes <name>_seed<k> (the curriculum
replicated as a whole), visible as Dagster assets, and summarized across seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from ehr_assets import keys
from ehr_assets.eval.replicates import seed_groups, seed_spread, seed_summary
from ehr_assets.specs import SpecError, load_project

from ..conftest import make_tiny_project


def project_with(tmp_path, seeds: dict[str, list[int]], extra: dict | None = None):
    root = make_tiny_project(tmp_path / "project", {"msk": 20, "inspect": 20}, recipes=("sft", "jepa", "hybrid"))
    for name, s in seeds.items():
        p = root / "models" / f"{name}.yaml"
        p.write_text(yaml.safe_dump({**yaml.safe_load(p.read_text()), "replicate_seeds": s, **(extra or {})}))
    return root


def test_replicates_are_recipes_with_their_seed_and_the_curriculum_replicated(tmp_path):
    project = load_project(project_with(tmp_path, {"sft": [1, 2], "jepa": [1]}))
    rec = project.recipes
    assert {"sft_seed1", "sft_seed2", "jepa_seed1"} <= set(rec) and "jepa_seed2" not in rec
    assert rec["sft_seed2"].training.seed == 2 and rec["sft_seed2"].init_from is None
    assert rec["jepa_seed1"].init_from == "sft_seed1" and rec["jepa_seed1"].training.seed == 1
    assert rec["sft_seed1"].replicate_seeds == [] and rec["sft_seed1"].training.steps == rec["sft"].training.steps
    names = list(rec)
    assert names.index("sft_seed1") < names.index("jepa_seed1")  # dependency order holds for replicates
    # hybrid extends jepa but does not inherit its replicates (an ablation does not multiply its compute)
    assert rec["hybrid"].replicate_seeds == [] and not any(n.startswith("hybrid_seed") for n in rec)
    assert project.tokens_asset("jepa_seed1") == project.tokens_asset("jepa")  # same ids as the recipe


def test_seed_0_of_jepa_starts_from_sft_itself(tmp_path):
    root = project_with(tmp_path, {"sft": [1]})
    p = root / "models" / "jepa.yaml"
    spec = yaml.safe_load(p.read_text())
    spec["training"]["seed"] = 1
    p.write_text(yaml.safe_dump({**spec, "replicate_seeds": [0]}))
    rec = load_project(root).recipes
    assert rec["jepa_seed0"].init_from == "sft" and rec["jepa_seed0"].training.seed == 0
    assert rec["jepa"].init_from == "sft"  # the declared recipe is unchanged


@pytest.mark.parametrize(
    "seeds, extra, message",
    [
        ({"jepa": [3]}, None, "jepa.yaml: replicate_seeds: seed 3 starts from init_from 'sft', which has no replicate"),
        ({"sft": [0]}, None, "sft.yaml: replicate_seeds: 0 is the recipe's own training.seed"),
        ({"sft": [1, 1]}, None, "sft.yaml: replicate_seeds: Value error, each seed once"),
        ({"sft": [-1]}, None, "sft.yaml: replicate_seeds: Value error, seeds must be >= 0"),
    ],
)
def test_bad_replicate_declarations_name_file_and_key(tmp_path, seeds, extra, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_project(project_with(tmp_path, seeds, extra))


def test_a_declared_name_that_looks_like_a_replicate_is_refused(tmp_path):
    root = project_with(tmp_path, {})
    spec = yaml.safe_load((root / "models" / "hybrid.yaml").read_text())
    (root / "models" / "hybrid.yaml").unlink()
    (root / "models" / "hybrid_seed7.yaml").write_text(yaml.safe_dump({**spec, "name": "hybrid_seed7"}))
    with pytest.raises(SpecError, match="hybrid_seed7.yaml: name: 'hybrid_seed7' ends like a seed replicate"):
        load_project(root)


def test_replicate_names_round_trip():
    assert keys.replicate("jepa", 2) == "jepa_seed2"
    assert keys.parse_replicate("jepa_seed2") == ("jepa", 2)
    assert keys.parse_replicate("jepa_mask025") == ("jepa_mask025", None)
    assert keys.parse_replicate("a_seed1_seed3") == ("a_seed1", 3)


def test_replicate_assets_are_tagged_in_dagster(tmp_path):
    import dagster as dg

    from ehr_assets.definitions import build_definitions

    root = project_with(tmp_path, {"sft": [1]})
    defs = build_definitions(root, warehouse_path=tmp_path / "w.duckdb", artifact_root=tmp_path / "a")
    graph = defs.resolve_asset_graph()
    for kind in ("checkpoint", "embeddings", "probe_metrics"):
        tags = graph.get(dg.AssetKey(f"sft_seed1_{kind}")).tags
        assert tags["seed"] == "1" and tags["replicate_of"] == "sft"
        assert graph.get(dg.AssetKey(f"sft_{kind}")).tags["seed"] == "0"
        assert "replicate_of" not in graph.get(dg.AssetKey(f"sft_{kind}")).tags
    selected = dg.AssetSelection.tag("replicate_of", "sft").resolve(graph)
    assert {k.to_user_string() for k in selected} == {
        f"sft_seed1_{k}" for k in ("checkpoint", "embeddings", "probe_metrics")
    }


# ------------------------------------------------------------------------------------------------ the summaries
def test_seed_groups_and_spread():
    assert seed_groups(["sft", "sft_seed2", "sft_seed1", "jepa", "oracle"]) == {
        "sft": ["sft", "sft_seed1", "sft_seed2"]
    }
    m = pd.DataFrame(
        {
            "cohort": "msk",
            "recipe": ["sft", "sft_seed1", "sft_seed2", "jepa", "sft", "sft_seed1"],
            "task": ["mortality"] * 4 + ["survival"] * 2,
            "horizon_days": [365] * 4 + [0, 0],
            "metric": ["auroc"] * 4 + ["c_index"] * 2,
            "value": [0.70, 0.74, 0.72, 0.80, 0.60, np.nan],
        }
    )
    s = seed_spread(m).set_index(["task", "metric"])
    row = s.loc[("mortality", "auroc")]
    assert row["recipe"] == "sft" and row["n_seeds"] == 3
    assert row["mean"] == pytest.approx(0.72) and row["sd"] == pytest.approx(np.std([0.70, 0.74, 0.72], ddof=1))
    assert (row["min"], row["max"]) == (0.70, 0.74)
    assert s.loc[("survival", "c_index"), "n_seeds"] == 1 and np.isnan(s.loc[("survival", "c_index"), "sd"])


def test_seed_summary_pools_each_reference_across_seeds():
    rows = [
        ("pooled_long", "delta", "jepa", "sft", 0.010),
        ("pooled_long", "delta", "jepa_seed1", "sft_seed1", 0.030),
        ("pooled_long", "delta", "jepa", "count_baseline", -0.02),
        ("pooled_long", "delta", "jepa_seed1", "count_baseline", 0.00),
        ("task", "delta", "jepa_seed1", "sft_seed1", 0.5),  # per-task rows are not summarized
    ]
    paired = pd.DataFrame(rows, columns=["scope", "statistic", "recipe", "reference", "estimate"]).assign(cohort="msk")
    s = seed_summary(paired).set_index("reference")
    assert s.loc["sft", "mean"] == pytest.approx(0.02) and s.loc["sft", "n_seeds"] == 2
    assert s.loc["sft", "sd"] == pytest.approx(np.std([0.01, 0.03], ddof=1))
    assert s.loc["count_baseline", "mean"] == pytest.approx(-0.01)
    assert s.loc["sft", "seeds"] == "jepa=0.010; jepa_seed1=0.030"
