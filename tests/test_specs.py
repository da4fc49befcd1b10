import pytest
import yaml

from ehr_assets.specs import CohortSpec, RecipeSpec, SpecError, load_project, load_spec

from .conftest import REPO


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_project_loads_with_partitions_and_recipe_order():
    p = load_project(REPO)
    assert set(p.partition_keys) == {"msk", "inspect", "combined"}
    assert p.members("combined") == ["msk", "inspect"]
    names = list(p.recipes)
    assert names.index("sft") < names.index("jepa")  # init_from order
    assert p.recipes["jepa"].init_from == "sft"
    mortality = p.probes["mortality"]
    assert mortality.kind == "binary" and len(mortality.horizons_days) >= 3
    assert any(t.kind == "survival" for t in p.probes.values())
    for c in ("msk", "inspect"):
        assert len([t for t in p.tasks_for(c) if t.kind == "binary"]) >= 2


def test_unknown_key_names_file_and_key(tmp_path):
    f = write(tmp_path / "sft.yaml", {"objective": "sft", "backbone": {"config": {}}, "lora": {"rank": 4, "rnak": 2}})
    with pytest.raises(SpecError) as e:
        load_spec(f, RecipeSpec)
    assert f"{f}: lora.rnak: unknown key" in str(e.value)


def test_wrong_type_names_file_key_and_value(tmp_path):
    f = write(
        tmp_path / "msk.yaml",
        {
            "source": {"kind": "synthetic", "profile": "oncology", "subjects": "many"},
            "decision_nodes": {"codes": ["X"]},
        },
    )
    with pytest.raises(SpecError) as e:
        load_spec(f, CohortSpec)
    assert "source.subjects" in str(e.value) and "'many'" in str(e.value) and str(f) in str(e.value)


def test_bad_regex_and_split_sum(tmp_path):
    f = write(
        tmp_path / "c.yaml",
        {
            "source": {"kind": "synthetic", "profile": "pe", "subjects": 3},
            "decision_nodes": {"codes": ["(unclosed"]},
            "splits": {"train": 0.5, "tuning": 0.1, "held_out": 0.1},
        },
    )
    with pytest.raises(SpecError) as e:
        load_spec(f, CohortSpec)
    msg = str(e.value)
    assert "decision_nodes.codes" in msg and "invalid regular expression" in msg
    assert "must be 1.0" in msg


def test_name_must_match_file(tmp_path):
    f = write(tmp_path / "a.yaml", {"name": "b", "objective": "sft", "backbone": {"config": {}}})
    with pytest.raises(SpecError, match="must equal the file name"):
        load_spec(f, RecipeSpec)


def _project(tmp_path, recipes, cohorts=None, probes=None):
    cohorts = cohorts or {
        "a": {"source": {"kind": "synthetic", "profile": "pe", "subjects": 5}, "decision_nodes": {"codes": ["X"]}}
    }
    for n, d in cohorts.items():
        write(tmp_path / "cohorts" / f"{n}.yaml", d)
    for n, d in recipes.items():
        write(tmp_path / "models" / f"{n}.yaml", {"objective": "sft", "backbone": {"config": {}}, **d})
    (tmp_path / "probes").mkdir(exist_ok=True)
    (tmp_path / "models").mkdir(exist_ok=True)
    for n, d in (probes or {}).items():
        write(tmp_path / "probes" / f"{n}.yaml", d)
    return tmp_path


def test_init_from_unknown_and_cycle(tmp_path):
    root = _project(tmp_path / "x", {"a": {"init_from": "nope"}})
    with pytest.raises(SpecError, match=r"a\.yaml: init_from: unknown recipe 'nope'"):
        load_project(root)
    root = _project(tmp_path / "y", {"a": {"init_from": "b"}, "b": {"init_from": "a"}})
    with pytest.raises(SpecError, match="init_from: cycle"):
        load_project(root)


def test_union_of_unknown_cohort_and_probe_cohort(tmp_path):
    cohorts = {
        "a": {"source": {"kind": "synthetic", "profile": "pe", "subjects": 5}, "decision_nodes": {"codes": ["X"]}},
        "u": {"union": ["a", "zzz"]},
    }
    with pytest.raises(SpecError, match=r"u\.yaml: union: unknown cohort 'zzz'"):
        load_project(_project(tmp_path / "x", {}, cohorts))
    probes = {"p": {"kind": "binary", "outcome_codes": ["X"], "horizons_days": [30], "cohorts": ["nope"]}}
    with pytest.raises(SpecError, match=r"p\.yaml: cohorts: unknown cohort 'nope'"):
        load_project(_project(tmp_path / "y", {}, None, probes))


def test_probe_rules(tmp_path):
    from ehr_assets.specs import ProbeSpec

    f = write(tmp_path / "p.yaml", {"kind": "binary", "outcome_codes": ["X"], "cohorts": ["a"]})
    with pytest.raises(SpecError, match="horizons_days: a binary task needs at least one horizon"):
        load_spec(f, ProbeSpec)
    f = write(tmp_path / "s.yaml", {"kind": "survival", "outcome_codes": ["X"], "cohorts": ["a"]})
    assert load_spec(f, ProbeSpec).horizons() == [0]


def test_extends_inherits_and_overrides(tmp_path):
    base = {
        "objective": "jepa",
        "backbone": {"config": {"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1}},
        "jepa": {"mask_ratio": 0.5, "ema_tau": 0.996},
        "training": {"steps": 7, "seq_len": 64},
        "description": "the base",
    }
    write(tmp_path / "models" / "jepa.yaml", base)
    f = write(tmp_path / "models" / "abl.yaml", {"extends": "jepa", "jepa": {"mask_ratio": 0.25}})
    r = load_spec(f, RecipeSpec)
    assert r.jepa.mask_ratio == 0.25 and r.jepa.ema_tau == 0.996  # mappings merge key by key
    assert r.training.steps == 7 and r.backbone.config.hidden_size == 32 and r.objective == "jepa"
    assert r.name == "abl" and r.description == "" and r.extends == "jepa"  # name/description are not inherited

    write(tmp_path / "models" / "bad.yaml", {"extends": "nope"})
    with pytest.raises(SpecError, match=r"bad.yaml: extends: unknown recipe 'nope'"):
        load_spec(tmp_path / "models" / "bad.yaml", RecipeSpec)
    write(tmp_path / "models" / "a.yaml", {"extends": "b"})
    write(tmp_path / "models" / "b.yaml", {"extends": "a"})
    with pytest.raises(SpecError, match=r"extends: cycle a -> b -> a"):
        load_spec(tmp_path / "models" / "a.yaml", RecipeSpec)
    f = write(tmp_path / "models" / "typo.yaml", {"extends": "jepa", "jepa": {"mask_ratoi": 0.3}})
    with pytest.raises(SpecError, match=r"typo.yaml: jepa.mask_ratoi: unknown key"):
        load_spec(f, RecipeSpec)


def test_shipped_recipes_are_the_demo_regimes():
    """The demo answers one question (does the JEPA curriculum beat SFT, and hybrid?): three recipes, no seeds."""
    r = load_project(REPO).recipes
    assert set(r) == {"sft", "jepa", "hybrid"}
    assert r["sft"].objective == "sft" and r["sft"].init_from is None
    assert r["jepa"].objective == "jepa" and r["jepa"].init_from == "sft" and r["jepa"].loss_weights.sft == 1.0
    assert r["jepa"].jepa.mask_ratio == 0.5 and r["jepa"].jepa.ema_tau == 0.996 and r["jepa"].jepa.predictor_depth == 2
    assert r["hybrid"].objective == "hybrid" and r["hybrid"].init_from is None
    # the regimes get the same compute: hybrid takes as many steps as both curriculum phases
    assert r["hybrid"].training.steps == r["sft"].training.steps + r["jepa"].training.steps


def test_the_study_declares_the_other_regime_and_the_ablations():
    """Seeds, JEPA-only and the mask / momentum ablations live in the study project (study/)."""
    r = load_project(REPO / "study").recipes
    assert {"sft", "jepa", "hybrid", "jepa_only", "jepa_mask025", "jepa_mask075", "jepa_tau_sched"} <= set(r)
    assert r["jepa"].jepa.mask_ratio == 0.5 and r["jepa"].jepa.ema_tau == 0.996 and r["jepa"].jepa.predictor_depth == 2
    assert r["jepa_only"].init_from is None and r["jepa_only"].loss_weights.sft == 0.0
    assert r["jepa_only"].objective == "jepa"
    assert r["jepa_mask025"].jepa.mask_ratio == 0.25 and r["jepa_mask075"].jepa.mask_ratio == 0.75
    assert r["jepa_mask025"].init_from == "sft"
    assert r["jepa_tau_sched"].jepa.ema_tau_end == 1.0
    # the regimes get the same compute: hybrid and jepa_only take as many steps as both curriculum phases
    assert (
        r["hybrid"].training.steps
        == r["jepa_only"].training.steps
        == (r["sft"].training.steps + r["jepa"].training.steps)
    )
