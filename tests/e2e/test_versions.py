"""Declarations are the source of truth: an edit to a declaration marks exactly the asset partitions it affects out
of date, on a real Dagster instance over a real DuckDB warehouse, and the build rebuilds only those.

One project is built once (three cohort partitions, sft -> jepa curriculum and hybrid, two YAML tasks and the ACES
task, a study); each test edits one kind of declaration, asks :func:`ehr_assets.defs.build.plan` what is out of
date, and restores the file (the instance then observes the original digests again)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ehr_assets.defs.build import build, declared_names, plan
from ehr_assets.defs.definitions import build_definitions
from ehr_assets.defs.versioning import observe_declarations
from ehr_assets.specs import load_project

from ..conftest import keep_probes, make_tiny_project
from .test_pipeline import TEST_STUDY

PARTS = ["combined", "inspect", "msk"]
PROBES = {"mortality": [365], "progression": [365], "admission_mortality_1y": None}


def make_project(root: Path) -> Path:
    root = make_tiny_project(root, {"msk": 40, "inspect": 40}, recipes=("sft", "jepa", "hybrid"), steps=2)
    keep_probes(root, PROBES)
    study = {**TEST_STUDY, "questions": TEST_STUDY["questions"][:1]}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("versions")
    root = make_project(tmp / "project")
    paths = {"warehouse_path": tmp / "warehouse.duckdb", "artifact_root": tmp / "artifacts"}
    with dg.instance_for_test() as instance:
        defs = build_definitions(root, **paths)
        lines = []
        assert build(defs, load_project(root), instance, log_level="ERROR", out=lines.append) == 0, "\n".join(lines)
        yield root, paths, instance, lines


def out_of_date(project) -> set[tuple[str, str | None]]:
    """What the build would rebuild first (missing or stale), as (asset, partition) pairs, after observing the
    declarations as they are on disk now."""
    root, paths, instance, _ = project
    defs = build_definitions(root, **paths)
    spec = load_project(root)
    graph = defs.resolve_asset_graph()
    observe_declarations(instance, spec, declared_names(graph))
    selected = [k for k in graph.toposorted_asset_keys if k in graph.materializable_asset_keys]
    todo = plan(instance, graph, selected, spec.partition_keys).todo
    return {(k.to_user_string(), p) for k, p in todo}


@contextmanager
def edited(path: Path, change):
    """``path``'s YAML changed by ``change(data)`` (or its text by ``change(text)`` for a str result) inside the
    block; restored after it."""
    before = path.read_text()
    data = yaml.safe_load(before)
    result = change(data)
    path.write_text(result if isinstance(result, str) else yaml.safe_dump(data))
    try:
        yield
    finally:
        path.write_text(before)


def every(*assets, parts=PARTS) -> set:
    return {(a, p) for a in assets for p in parts}


def recipe_assets(*recipes) -> set:
    return every(*[f"{r}_{k}" for r in recipes for k in ("checkpoint", "embeddings", "probe_metrics")])


def test_the_first_build_made_everything_and_a_second_finds_it_up_to_date(project):
    root, paths, instance, lines = project
    assert any("to build" in line for line in lines) and lines[-1].startswith("[build] everything selected is up to")
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert out_of_date(project) == set()
    again = []
    assert build(build_definitions(root, **paths), load_project(root), instance, out=again.append) == 0
    assert again[0].startswith("[build] 0 to build, 0 to check after them,") and "up to date" in again[-1]


def test_a_cohort_edit_marks_that_cohort_and_its_union_only(project):
    root = project[0]

    def splits(d):
        d["splits"]["seed"] += 1

    with edited(root / "cohorts" / "msk.yaml", splits):
        assert out_of_date(project) == every("subjects", parts=["combined", "msk"])

    def rule(d):
        d["decision_nodes"]["max_per_subject"] += 1

    with edited(root / "cohorts" / "inspect.yaml", rule):
        assert out_of_date(project) == every("decision_nodes", parts=["combined", "inspect"])

    def source(d):
        d["source"]["seed"] += 1

    with edited(root / "cohorts" / "msk.yaml", source):  # the events, and the simulator's hidden state
        assert out_of_date(project) == every("cohort_events", "cohort_latent", parts=["combined", "msk"])
    assert out_of_date(project) == set()


def test_a_recipe_edit_marks_the_recipe_what_extends_it_and_what_starts_from_it(project):
    root = project[0]

    def lr(d):  # sft's optimizer: inherited by jepa (extends sft) and hybrid (extends jepa)
        d["optimizer"]["lr"] = 0.001

    with edited(root / "models" / "sft.yaml", lr):
        assert out_of_date(project) == recipe_assets("sft", "jepa", "hybrid")

    def steps(d):  # sft's steps: jepa and hybrid declare their own; jepa starts from sft's checkpoint (init_from)
        d["training"]["steps"] = 3

    with edited(root / "models" / "sft.yaml", steps):
        assert out_of_date(project) == recipe_assets("sft", "jepa")

    def mask(d):  # jepa's objective: hybrid extends it, sft does not read it
        d["jepa"]["mask_ratio"] = 0.25

    with edited(root / "models" / "jepa.yaml", mask):
        assert out_of_date(project) == recipe_assets("jepa", "hybrid")

    def pool(d):  # how jepa (and hybrid, which extends it) is embedded: not their checkpoints
        d["embedding"] = {"pool": "mean"}

    with edited(root / "models" / "jepa.yaml", pool):
        assert out_of_date(project) == every(
            *[f"{r}_{k}" for r in ("jepa", "hybrid") for k in ("embeddings", "probe_metrics")]
        )


def test_a_task_edit_marks_the_labels_of_its_cohorts_only(project):
    root = project[0]

    def horizons(d):
        d["horizons_days"] = [180, 365]

    with edited(root / "probes" / "progression.yaml", horizons):  # cohorts: [msk, combined]
        assert out_of_date(project) == every("task_labels", parts=["combined", "msk"])

    config = root / "probes" / "aces" / "admission_mortality_1y.yaml"  # its contents, not the probe that names it
    text = config.read_text()
    assert "start + 365 days" in text
    with edited(config, lambda d: text.replace("start + 365 days", "start + 180 days")):
        assert out_of_date(project) == every("aces_labels")


def test_a_study_edit_marks_the_study_report_only(project):
    def question(d):
        d["questions"][0]["question"] = "does jepa beat sft at equal steps?"

    with edited(project[0] / "study.yaml", question):
        assert out_of_date(project) == {("study_report", None)}


def test_formatting_and_keys_that_decide_no_output_change_nothing(project):
    root = project[0]

    def reformat(d):  # comments, key order, a default spelled out, flow style: the same declaration
        text = "# a comment\n" + yaml.safe_dump(dict(reversed(list(d.items()))), default_flow_style=True)
        return text.replace("{", "{ ", 1)

    for path in (root / "cohorts" / "msk.yaml", root / "models" / "jepa.yaml", root / "probes" / "mortality.yaml"):
        with edited(path, reformat):
            assert out_of_date(project) == set(), path.name

    def defaults(d):  # what the validated model fills in anyway
        d["splits"] = d["splits"]
        d["decision_nodes"]["first_occurrence_only"] = False

    with edited(root / "cohorts" / "msk.yaml", defaults):
        assert out_of_date(project) == set()

    def bookkeeping(d):  # documentation, where the job runs, how a killed run resumes
        d["description"] = "another description"
        d["compute"] = {"gpus": 1}
        d["training"]["checkpoint_every"] = 1
        d["training"]["keep_checkpoints"] = 5

    with edited(root / "models" / "sft.yaml", bookkeeping):
        assert out_of_date(project) == set()


def test_a_rebuild_that_writes_the_same_data_leaves_everything_below_up_to_date(project):
    """Forced: cohort_table and the tokenizer are rebuilt, write the same content, report the same data version,
    and nothing below them (labels, tokens, checkpoints ...) is out of date afterwards."""
    root, paths, instance, _ = project
    defs = build_definitions(root, **paths)
    lines = []
    select = "key:cohort_table or key:tokenizer"
    rc = build(defs, load_project(root), instance, select, ["msk"], force=True, out=lines.append)
    assert rc == 0, "\n".join(lines)
    assert any("wave 1, msk: building 2 asset(s)" in line for line in lines)
    assert out_of_date(project) == set()


def test_after_a_horizon_edit_the_build_rebuilds_labels_and_probes_but_no_checkpoint_or_embedding(project):
    root, paths, instance, _ = project

    def horizons(d):
        d["horizons_days"] = [180, 365]

    path = root / "probes" / "progression.yaml"
    before = path.read_text()
    with edited(path, horizons):
        defs = build_definitions(root, **paths)
        lines = []
        since = instance.event_log_storage.get_maximum_record_id()
        assert build(defs, load_project(root), instance, out=lines.append) == 0, "\n".join(lines)
        rebuilt = _materialized_since(instance, defs, since)
        assert {(a, p) for a, p in rebuilt if a == "task_labels"} == every("task_labels", parts=["combined", "msk"])
        assert not any(a.endswith(("_checkpoint", "_embeddings")) for a, _ in rebuilt), sorted(rebuilt)
        assert {("sft_probe_metrics", "msk"), ("jepa_probe_metrics", "combined")} <= rebuilt
        assert not any(p == "inspect" for _, p in rebuilt), sorted(rebuilt)  # progression is not an inspect task
        assert out_of_date(project) == set()
    assert path.read_text() == before
    # back to the original horizons: the labels of those partitions are out of date again (this test is the last)
    assert out_of_date(project) == every("task_labels", parts=["combined", "msk"])


def _materialized_since(instance, defs, since: int) -> set[tuple[str, str | None]]:
    out = set()
    for key in defs.resolve_asset_graph().materializable_asset_keys:
        recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=since), limit=20)
        out |= {(key.to_user_string(), r.partition_key) for r in recs.records}
    return out
