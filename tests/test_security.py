"""Security and privacy: pickle-free weights, safe YAML, validated SQL identifiers, small-count suppression, the UI
bound to localhost, no subject identifiers in routine asset metadata."""

import re
from pathlib import Path

import pandas as pd
import pytest

from ehr_assets.defs import metadata as assets
from ehr_assets.model.backbone import require_safetensors
from ehr_assets.specs import CohortSpec, SpecError, load_spec
from ehr_assets.warehouse import ident

REPO = Path(__file__).resolve().parent.parent


def test_pickle_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model.bin.*pickle files are not loaded"):
        require_safetensors(tmp_path, "model")
    from ehr_assets.model.backbone import from_pretrained

    with pytest.raises(FileNotFoundError, match="no \\*.safetensors model weights"):
        from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert require_safetensors(tmp_path, "model") == tmp_path


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "msk.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(f, CohortSpec)


def test_sql_identifiers_are_validated():
    assert ident("cohort_events") == '"cohort_events"'
    for bad in ('x"; DROP TABLE y; --', "a b", "1abc", ""):
        with pytest.raises(ValueError, match="invalid SQL identifier"):
            ident(bad)


def test_small_counts_are_suppressed_in_metadata(monkeypatch):
    df = pd.DataFrame(
        {"task": ["a", "b", "c"], "rows": [500, 40, 0], "positives": [60, 7, 0], "rate": [0.12, 0.175, 0.0]}
    )
    md = assets.meta_table(df, ("rows", "positives"), hides={"rate": "positives"}).value
    lines = md.splitlines()
    assert "| a | 500 | 60 | 0.120 |" in lines
    assert "| b | 40 | <11 |  |" in lines  # 7 positives hidden, and the rate that would reveal them
    assert "| c | 0 | 0 | 0.000 |" in lines  # zero reveals nothing
    assert assets.published_count(10) == "<11" and assets.published_count(11) == 11
    monkeypatch.setenv("EHR_MIN_PUBLISHED_COUNT", "5")
    assert assets.published_count(4) == "<5" and assets.published_count(7) == 7
    monkeypatch.setenv("EHR_MIN_PUBLISHED_COUNT", "0")
    assert assets.published_count(1) == 1
    monkeypatch.setenv("EHR_MIN_PUBLISHED_COUNT", "many")
    with pytest.raises(ValueError, match="EHR_MIN_PUBLISHED_COUNT"):
        assets.published_count(1)


def test_ui_binds_to_localhost():
    make = (REPO / "Makefile").read_text()
    ui = [line for line in make.splitlines() if "dagster dev" in line]
    assert ui and all("-h 127.0.0.1" in line for line in ui)
    readme = (REPO / "README.md").read_text()
    for line in readme.splitlines():
        if "dagster dev" in line and line.strip().startswith(".venv/bin/dagster"):
            assert "-h 127.0.0.1" in line


def test_no_pickle_loading_in_the_package():
    src = "\n".join(p.read_text() for p in (REPO / "ehr_assets").rglob("*.py"))
    assert not re.search(r"\btorch\.load\(|\bpickle\.loads?\(|allow_pickle=True|yaml\.load\(", src)
    assert "yaml.safe_load" in src


def test_routine_metadata_names_no_subject(tmp_path):
    """Materialization metadata of the data assets carries counts and codes, never a subject_id."""
    import dagster as dg

    from ehr_assets.definitions import build_definitions

    from .conftest import make_tiny_project

    root = make_tiny_project(tmp_path / "project", {"msk": 40, "inspect": 40}, recipes=())
    defs = build_definitions(root, warehouse_path=tmp_path / "w.duckdb", artifact_root=tmp_path / "a")
    sel = ["cohort_events", "cohort_table", "subjects", "decision_nodes", "task_labels"]
    job = dg.Definitions.merge(
        defs,
        dg.Definitions(
            jobs=[
                dg.define_asset_job(
                    "data",
                    selection=dg.AssetSelection.assets(*sel),
                    partitions_def=dg.StaticPartitionsDefinition(["combined", "inspect", "msk"]),
                )
            ]
        ),
    ).resolve_job_def("data")
    with dg.instance_for_test() as instance:
        res = job.execute_in_process(partition_key="inspect", instance=instance)
        ids = {str(i) for i in range(2_000_000, 2_000_040)}  # the synthetic pe profile's subject_ids
        text = []
        for ev in res.get_asset_materialization_events():
            for v in ev.materialization.metadata.values():
                text.append(str(getattr(v, "value", v)))
        blob = "\n".join(text)
        assert blob and not any(i in blob for i in ids)
        assert "<11" in blob  # 40 subjects: some task counts are small and are suppressed
