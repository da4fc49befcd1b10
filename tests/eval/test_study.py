"""The study's statistics (ehr_assets.eval.study) against sklearn on predictions built with known effects, its
verdict rule, the difference in differences of the transfer question, the latent question's replicates, and the
study.yaml loader's errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from ehr_assets.eval.health import COLUMNS as HEALTH_COLUMNS
from ehr_assets.eval.health import training_health
from ehr_assets.eval.resample import percentile_ci
from ehr_assets.eval.study import answer_study, seed_pairs, verdict
from ehr_assets.eval.study_report import loss_table_rows, verdict_sentence
from ehr_assets.specs import SpecError, load_project

from ..conftest import make_tiny_project

TASKS = (("mortality", 365), ("mortality", 730), ("readmission", 365), ("mortality", 90))  # 90 d: not long


def write_study(root, questions: list[dict]) -> None:
    (root / "study.yaml").write_text(yaml.safe_dump({"name": "study", "n_bootstrap": 400, "questions": questions}))


@pytest.fixture
def project_root(tmp_path):
    return make_tiny_project(tmp_path / "project", {"msk": 20, "inspect": 20})


def healthy(cohorts=("msk", "inspect", "combined"), recipes=("jepa", "jepa_seed1", "jepa_seed2"), **failed):
    """A training-health table where every JEPA run learned its objective, but ``failed`` (``"run@cohort": "no"``
    or ``"unknown"``)."""
    rows = []
    for c in cohorts:
        for r in recipes:
            state = failed.get(f"{r}@{c}", "yes")
            rows.append(dict(cohort=c, recipe=r, jepa_learned=state, health="ok" if state == "yes" else state))
    return pd.DataFrame(rows).reindex(columns=HEALTH_COLUMNS)


def predictions(cohort: str, strength: dict[str, float], n_subjects=400, seed=0, source=None) -> pd.DataFrame:
    """Held-out predictions of every recipe for TASKS: the same labels for all recipes, each recipe's probability
    ``sigmoid(strength * y + noise)`` (a stronger recipe has a higher AUROC); one or two rows per subject."""
    rng = np.random.default_rng(seed)
    frames = []
    for t, (task, h) in enumerate(TASKS):
        subj = np.repeat(np.arange(n_subjects), rng.integers(1, 3, n_subjects))
        n = subj.size
        y = rng.random(n) < 0.3
        times = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(n), unit="D")
        for recipe, s in strength.items():
            noise = np.random.default_rng([seed, t, len(recipe), sum(map(ord, recipe))]).normal(size=n)
            p = 1 / (1 + np.exp(-(s * y + noise)))
            frames.append(
                pd.DataFrame(
                    dict(cohort=cohort, recipe=recipe, task=task, horizon_days=h, subject_id=subj + 1000 * seed)
                )
                .assign(prediction_time=times, boolean_value=y, float_value=np.nan)
                .assign(predicted_boolean_probability=p, predicted_risk=np.nan, source_cohort=source or cohort)
            )
    return pd.concat(frames, ignore_index=True)


def long_auroc(preds: pd.DataFrame, recipe: str) -> float:
    """The mean held-out AUROC of ``recipe`` over the binary tasks at >= 365 days, by sklearn."""
    out = []
    for (_, h), g in preds[preds["recipe"] == recipe].groupby(["task", "horizon_days"]):
        if h >= 365:
            out.append(roc_auc_score(g["boolean_value"], g["predicted_boolean_probability"]))
    return float(np.mean(out))


def test_verdicts():
    assert verdict(0.01, 0.05, [0.02, 0.03, 0.04], "higher") == "supported"
    assert verdict(0.01, 0.05, [0.02, -0.01, 0.04], "higher") == "not resolved"  # one seed disagrees
    assert verdict(-0.05, -0.01, [-0.02, -0.03], "higher") == "contradicted"
    assert verdict(-0.05, -0.01, [-0.02, -0.03], "lower") == "supported"
    assert verdict(-0.01, 0.05, [0.02, 0.03], "higher") == "not resolved"
    assert verdict(0.01, 0.05, [0.02, 0.03], "either") == "higher"
    assert verdict(-0.05, -0.01, [-0.02, -0.03], "either") == "lower"
    assert verdict(-0.01, 0.05, [0.02], "either") == "no difference resolved"
    assert verdict(float("nan"), float("nan"), [0.02], "higher").startswith("not resolved")


def test_seed_pairs_pair_each_replicate_with_the_same_seed_of_the_reference():
    names = {"jepa", "jepa_seed1", "jepa_seed2", "sft", "sft_seed1", "sft_seed2", "count_baseline"}
    assert seed_pairs("jepa", "sft", names) == [
        ("jepa", "sft"),
        ("jepa_seed1", "sft_seed1"),
        ("jepa_seed2", "sft_seed2"),
    ]
    assert seed_pairs("jepa", "count_baseline", names) == [
        ("jepa", "count_baseline"),
        ("jepa_seed1", "count_baseline"),
        ("jepa_seed2", "count_baseline"),
    ]


def test_delta_is_the_seed_mean_of_paired_long_horizon_auroc_differences(project_root):
    write_study(project_root, [{"id": "q1", "question": "?", "comparisons": [{"recipe": "jepa", "reference": "sft"}]}])
    project = load_project(project_root)
    strength = {"jepa": 1.6, "jepa_seed1": 1.5, "jepa_seed2": 1.7, "sft": 0.6, "sft_seed1": 0.8, "sft_seed2": 0.5}
    preds = pd.concat([predictions("msk", strength, seed=0), predictions("inspect", strength, seed=1)])
    rows = answer_study(project, preds, None, None, health=healthy())
    assert set(rows["cohort"]) == {"msk", "inspect", "combined"}
    for cohort in ("msk", "inspect"):
        r = rows[rows["cohort"] == cohort].iloc[0]
        p = preds[preds["cohort"] == cohort]
        by_seed = [long_auroc(p, a) - long_auroc(p, b) for a, b in (("jepa", "sft"), ("jepa_seed1", "sft_seed1"))]
        by_seed.append(long_auroc(p, "jepa_seed2") - long_auroc(p, "sft_seed2"))
        assert r["estimate"] == pytest.approx(np.mean(by_seed), abs=1e-12)
        assert r["seed_values"] == " ".join(f"{v:+.3f}" for v in by_seed)
        assert r["seed_sd"] == pytest.approx(np.std(by_seed, ddof=1))
        assert r["n_terms"] == 3  # the 90-day task is not a long horizon
        assert r["ci_low"] < r["estimate"] < r["ci_high"] and r["ci_low"] > 0
        assert r["verdict"] == "supported"
        assert 0 < r["resolvable"] < 0.2
    combined = rows[rows["cohort"] == "combined"].iloc[0]  # no predictions there: nothing to say
    assert combined["seeds"] == 0 and combined["verdict"].startswith("not resolved")


def test_a_seed_that_disagrees_or_a_reversed_effect_is_not_supported(project_root):
    write_study(project_root, [{"id": "q1", "question": "?", "comparisons": [{"recipe": "jepa", "reference": "sft"}]}])
    project = load_project(project_root)
    mixed = {"jepa": 1.6, "jepa_seed1": 0.3, "sft": 0.6, "sft_seed1": 1.8}  # seed 1 reverses the effect
    rows = answer_study(project, predictions("msk", mixed), None, None, health=healthy()).set_index("cohort")
    assert rows.at["msk", "verdict"] == "not resolved"
    reverse = {"jepa": 0.2, "jepa_seed1": 0.3, "sft": 1.6, "sft_seed1": 1.8}
    rows = answer_study(project, predictions("msk", reverse), None, None, health=healthy()).set_index("cohort")
    assert rows.at["msk", "verdict"] == "contradicted" and rows.at["msk", "ci_high"] < 0


def test_transfer_is_a_difference_in_differences_on_the_member(project_root):
    q = {"id": "q4", "question": "?", "kind": "transfer", "member": "msk", "union": "combined"}
    write_study(project_root, [q | {"comparisons": [{"recipe": "jepa", "reference": "sft"}]}])
    project = load_project(project_root)
    member = predictions("msk", {"jepa": 0.8, "sft": 0.8})
    union = predictions("combined", {"jepa": 1.8, "sft": 0.9}, source="msk")  # same subjects and labels
    other = predictions("combined", {"jepa": 0.1, "sft": 3.0}, seed=5, source="inspect")  # not msk's subjects
    rows = answer_study(project, pd.concat([member, union, other]), None, None, health=healthy())
    r = rows.iloc[0]
    want = (long_auroc(union, "jepa") - long_auroc(member, "jepa")) - (
        long_auroc(union, "sft") - long_auroc(member, "sft")
    )
    assert r["cohort"] == "msk" and r["estimate"] == pytest.approx(want, abs=1e-12)
    assert r["recipe_value"] == pytest.approx(long_auroc(union, "jepa") - long_auroc(member, "jepa"), abs=1e-12)
    assert r["verdict"] == "supported"


def test_latent_question_pairs_the_replicates(project_root):
    q = {"id": "q3", "question": "?", "kind": "latent", "cohorts": ["msk"], "variables": ["burden", "growth_rate"]}
    write_study(project_root, [q | {"offsets_days": [365], "comparisons": [{"recipe": "jepa", "reference": "sft"}]}])
    project = load_project(project_root)
    rng = np.random.default_rng(0)
    points, reps = [], []
    for recipe, level in (("jepa", 0.5), ("sft", 0.3)):
        for var in ("burden", "growth_rate", "reserve"):
            for off in (0, 365):
                r2 = level + 0.1 * (var == "reserve") + rng.normal() * 0.01
                points.append(dict(cohort="msk", recipe=recipe, variable=var, offset_days=off, r2=r2))
                boot = r2 + rng.normal(size=200) * 0.02
                reps.append(pd.DataFrame(dict(cohort="msk", recipe=recipe, variable=var, offset_days=off, r2=boot)))
                reps[-1]["replicate"] = np.arange(200)
    points, reps = pd.DataFrame(points), pd.concat(reps, ignore_index=True)
    empty = predictions("msk", {"sft": 1.0}).iloc[:0]
    row = answer_study(project, empty, points, reps, health=healthy()).iloc[0]
    cells = [("burden", 365), ("growth_rate", 365)]

    def pick(frame, recipe, var, off):
        return frame[(frame.recipe == recipe) & (frame.variable == var) & (frame.offset_days == off)]

    want = np.mean([pick(points, "jepa", *c)["r2"].item() - pick(points, "sft", *c)["r2"].item() for c in cells])
    diff = np.mean([pick(reps, "jepa", *c)["r2"].to_numpy() - pick(reps, "sft", *c)["r2"].to_numpy() for c in cells], 0)
    lo, hi, _ = percentile_ci(diff)
    assert row["estimate"] == pytest.approx(want, abs=1e-12) and row["n_terms"] == 2
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi))
    assert row["verdict"] == "supported"


def test_the_sentence_names_each_claim_and_its_verdict_per_cohort(project_root):
    comparisons = [
        {"recipe": "jepa", "reference": "sft", "label": "curriculum vs sft"},
        {"recipe": "jepa", "reference": "count_baseline", "expect": "either"},
    ]
    write_study(project_root, [{"id": "q1", "question": "?", "cohorts": ["msk"], "comparisons": comparisons}])
    project = load_project(project_root)
    preds = predictions("msk", {"jepa": 1.6, "sft": 0.4, "count_baseline": 0.4})
    rows = answer_study(project, preds, None, None, health=healthy())
    assert verdict_sentence(project.study.questions[0], rows) == "**q1**: curriculum vs sft: supported on msk."


def test_loss_table_measures_how_flat_the_end_of_the_curve_is():
    curve = [{"step": s, "sft_loss": 10.0 / s} for s in range(10, 201, 10)]
    row = loss_table_rows(curve)
    assert row["steps"] == 200
    assert row["loss_end"] == pytest.approx(np.mean([10.0 / 190, 10.0 / 200]))
    assert row["loss_before"] == pytest.approx(np.mean([10.0 / 170, 10.0 / 180]))
    assert 0 < row["relative_drop"] < 0.15


@pytest.mark.parametrize(
    "question, message",
    [
        ({"comparisons": [{"recipe": "jepa", "reference": "nope"}]}, "comparisons.0.reference: unknown recipe 'nope'"),
        ({"cohorts": ["mars"], "comparisons": [{"recipe": "jepa", "reference": "sft"}]}, "unknown cohort 'mars'"),
        (
            {
                "kind": "transfer",
                "member": "msk",
                "union": "inspect",
                "comparisons": [{"recipe": "jepa", "reference": "sft"}],
            },
            "union: 'inspect' is not a union cohort",
        ),
        ({"kind": "transfer", "comparisons": [{"recipe": "jepa", "reference": "sft"}]}, "names its member and union"),
        ({"comparisons": []}, "comparisons"),
        ({"comparisons": [{"recipe": "jepa", "reference": "sft", "expect": "better"}]}, "expect"),
    ],
)
def test_study_yaml_errors_name_the_file_and_the_key(project_root, question, message):
    write_study(project_root, [{"id": "q1", "question": "?"} | question])
    with pytest.raises(SpecError) as e:
        load_project(project_root)
    assert "study.yaml" in str(e.value) and message in str(e.value)


def test_the_shipped_study_loads_and_every_question_names_declared_recipes():
    from ..conftest import REPO

    project = load_project(REPO / "study")
    assert [q.id for q in project.study.questions] == ["q1", "q2", "q3", "q4", "q5"]
    base = {n for n in project.recipes if "_seed" not in n}
    assert base == {"sft", "sft_cont", "jepa", "hybrid", "jepa_only", "jepa_mask025", "jepa_mask075", "jepa_tau_sched"}
    # three seeds each, but jepa_only: it answers no question (descriptive, one seed)
    assert all(f"{b}_seed{k}" in project.recipes for b in base - {"jepa_only"} for k in (1, 2))
    assert not any(n.startswith("jepa_only_seed") for n in project.recipes)
    # equal steps: the curriculum and its controls
    r = project.recipes
    assert r["jepa"].init_from == "sft" and r["sft_cont"].init_from == "sft"
    assert r["sft_cont"].training.steps == r["jepa"].training.steps
    assert r["hybrid"].training.steps == r["sft"].training.steps + r["jepa"].training.steps
    assert r["jepa_only"].training.steps == r["hybrid"].training.steps and r["jepa_only"].loss_weights.sft == 0.0
    assert "admission_mortality_1y" not in project.probes and "mortality" in project.probes


# ------------------------------------------------------------------------ training health withholds verdicts
def test_a_jepa_run_that_failed_the_health_check_gets_no_verdict(project_root, tmp_path):
    """A JEPA run whose train_log ends at a normalized JEPA loss over the ceiling (what jepa_beats_mean_predictor
    reads) fails the health check in that cohort: every comparison reading it there is withheld, whatever its CI;
    the other cohort, and a comparison without a JEPA run, keep their verdicts."""
    import json

    comparisons = [
        {"recipe": "jepa", "reference": "sft"},
        {"recipe": "sft", "reference": "count_baseline", "expect": "either"},
    ]
    write_study(project_root, [{"id": "q1", "question": "?", "comparisons": comparisons}])
    project = load_project(project_root)
    art = tmp_path / "artifacts"
    for cohort, ends in (("msk", 0.97), ("inspect", 0.5)):  # msk: the predictor learned the targets' mean only
        d = art / "jepa_checkpoint" / cohort
        d.mkdir(parents=True)
        curve = [{"step": s, "jepa_loss_norm": 1.1 - (1.1 - ends) * s / 100} for s in range(10, 101, 10)]
        (d / "train_log.json").write_text(json.dumps({"loss_curve": curve}))
    health = training_health(project, art)
    assert dict(zip(health["cohort"], health["jepa_learned"])) == {"msk": "no", "inspect": "yes"}
    strength = {"jepa": 1.6, "sft": 0.4, "count_baseline": 0.2}
    preds = pd.concat([predictions("msk", strength, seed=0), predictions("inspect", strength, seed=1)])
    rows = answer_study(project, preds, None, None, health=health).set_index(["cohort", "recipe"])
    msk, inspect = rows.loc[("msk", "jepa")], rows.loc[("inspect", "jepa")]
    assert msk["ci_low"] > 0  # the difference is there, but it compares an objective that did not learn
    assert msk["verdict"] == "withheld: JEPA objective not learned (jepa@msk)"
    assert msk["jepa_health"] == "not learned: jepa@msk"
    assert inspect["verdict"] == "supported" and inspect["jepa_health"] == "learned"
    assert rows.loc[("msk", "sft"), "verdict"] == "higher" and rows.loc[("msk", "sft"), "jepa_health"] == ""
    sentence = verdict_sentence(project.study.questions[0], rows.reset_index())
    assert "supported on inspect, withheld: JEPA objective not learned (jepa@msk) on msk" in sentence
    # unchecked runs cannot yield a verdict either
    unknown = answer_study(project, preds, None, None).set_index(["cohort", "recipe"])
    assert unknown.loc[("inspect", "jepa"), "verdict"].startswith("withheld")


def test_one_failed_seed_withholds_the_seed_averaged_verdict(project_root):
    write_study(project_root, [{"id": "q1", "question": "?", "comparisons": [{"recipe": "jepa", "reference": "sft"}]}])
    project = load_project(project_root)
    strength = {"jepa": 1.6, "jepa_seed1": 1.5, "sft": 0.6, "sft_seed1": 0.5}
    rows = answer_study(project, predictions("msk", strength), None, None, health=healthy(**{"jepa_seed1@msk": "no"}))
    r = rows.set_index("cohort").loc["msk"]
    assert r["seeds"] == 2 and r["verdict"] == "withheld: JEPA objective not learned (jepa_seed1@msk)"


def test_a_transfer_verdict_needs_the_jepa_runs_of_member_and_union(project_root):
    q = {"id": "q4", "question": "?", "kind": "transfer", "member": "msk", "union": "combined"}
    write_study(project_root, [q | {"comparisons": [{"recipe": "jepa", "reference": "sft"}]}])
    project = load_project(project_root)
    member = predictions("msk", {"jepa": 0.8, "sft": 0.8})
    union = predictions("combined", {"jepa": 1.8, "sft": 0.9}, source="msk")
    preds = pd.concat([member, union])
    ok = answer_study(project, preds, None, None, health=healthy()).iloc[0]
    assert ok["verdict"] == "supported"
    bad = answer_study(project, preds, None, None, health=healthy(**{"jepa@combined": "no"})).iloc[0]
    assert bad["verdict"] == "withheld: JEPA objective not learned (jepa@combined)"
    assert bad["estimate"] == pytest.approx(ok["estimate"])
