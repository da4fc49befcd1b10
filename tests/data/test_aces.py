"""ACES tasks, the pieces: the ``kind: aces`` declaration rules, ACES's loader errors re-raised with the probe file,
and the leakage validator on real ACES output (a config whose label window starts before its prediction time)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from ehr_assets.data.aces_tasks import aces_nodes, aces_task_labels, label_window_violations
from ehr_assets.data.labels import LabelError
from ehr_assets.data.sources.meds_dataset import read_meds
from ehr_assets.specs import MedsSource, ProbeSpec, SpecError, load_project, load_spec

from ..conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "aces"


@pytest.fixture(scope="module")
def sample():
    """ACES's sample MEDS data as the cohort table holds it (static rows placed), every subject in train."""
    ev = read_meds(MedsSource(kind="meds", path=str(FIXTURES / "meds_sample"))).events
    subj = pd.DataFrame({"subject_id": ev["subject_id"].unique(), "split": "train", "source_cohort": "s"})
    return ev, subj


def task(tmp_path, config: dict | str, name="t") -> ProbeSpec:
    path = FIXTURES / "configs" / config if isinstance(config, str) else tmp_path / f"{name}_aces.yaml"
    if isinstance(config, dict):
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return ProbeSpec(name=name, kind="aces", config=str(path), cohorts=["s"])


def test_declaration_rules(tmp_path):
    f = tmp_path / "p.yaml"
    cases = [
        ({"kind": "aces", "cohorts": ["a"]}, "config"),
        ({"kind": "aces", "config": "x.yaml", "outcome_codes": ["X"], "cohorts": ["a"]}, "outcome_codes"),
        ({"kind": "aces", "config": "x.yaml", "horizons_days": [30], "cohorts": ["a"]}, "horizons_days"),
        (
            {"kind": "binary", "config": "x.yaml", "outcome_codes": ["X"], "horizons_days": [3], "cohorts": ["a"]},
            "config",
        ),
        ({"kind": "binary", "horizons_days": [30], "cohorts": ["a"]}, "outcome_codes"),
    ]
    for body, key in cases:
        f.write_text(yaml.safe_dump(body))
        with pytest.raises(SpecError, match=rf"p\.yaml: \(top level\): Value error, {key}"):
            load_spec(f, ProbeSpec)
    ok = ProbeSpec(name="t", kind="aces", config="x.yaml", cohorts=["a"])
    assert ok.probe_kind == "binary" and ok.horizons() == [0]


def test_a_missing_config_file_names_the_probe_file(tmp_path):
    from .. import conftest

    root = conftest.make_tiny_project(tmp_path / "p", {"msk": 10, "inspect": 10}, recipes=("sft",))
    (root / "probes" / "x.yaml").write_text(yaml.safe_dump({"kind": "aces", "config": "nope.yaml", "cohorts": ["msk"]}))
    with pytest.raises(SpecError, match=r"probes/x\.yaml: config: ACES file .*nope\.yaml not found"):
        load_project(root)
    shipped = load_project(REPO).probes["admission_mortality_1y"]
    assert shipped.config == str(REPO / "probes" / "aces" / "admission_mortality_1y.yaml")


def test_configs_aces_cannot_use_are_refused_naming_the_probe(tmp_path, sample):
    ev, subj = sample
    no_label = {
        "predicates": {"admission": {"code": {"regex": "ADMISSION//.*"}}},
        "trigger": "admission",
        "windows": {"input": {"start": None, "end": "trigger", "start_inclusive": True, "end_inclusive": True}},
    }
    with pytest.raises(LabelError, match=r"probes/t\.yaml: config: .* declares no window with label or index"):
        aces_task_labels(task(tmp_path, no_label), tmp_path / "probes" / "t.yaml", ev, subj)
    broken = {"predicates": {}, "trigger": "nothing", "windows": {}}
    with pytest.raises(LabelError, match=r"probes/t\.yaml: config: ACES cannot load"):
        aces_task_labels(task(tmp_path, broken), tmp_path / "probes" / "t.yaml", ev, subj)


def test_label_window_validator_on_real_aces_output(tmp_path, sample):
    """ACES's readmission sample predicts at discharge and labels the 30 days after it: no violation. The same task
    predicted at the end of its label window leaks the label: every row is flagged."""
    ev, subj = sample
    good = aces_task_labels(task(tmp_path, "readmission_risk.yaml"), tmp_path / "g.yaml", ev, subj)
    assert len(good) > 50 and not good["label_window_start_inclusive"].any()
    assert label_window_violations(good).empty
    # an inclusive start at the prediction time: the discharge instant itself would count
    assert len(label_window_violations(good.assign(label_window_start_inclusive=True))) == len(good)

    leaky = yaml.safe_load((FIXTURES / "configs" / "readmission_risk.yaml").read_text())
    del leaky["windows"]["input"]["index_timestamp"]
    leaky["windows"]["target"]["index_timestamp"] = "end"  # predict after the outcome window closed
    bad = aces_task_labels(task(tmp_path, leaky), tmp_path / "b.yaml", ev, subj)
    assert len(bad) == len(good)
    assert len(label_window_violations(bad)) == len(bad)


def test_prediction_times_are_distinct_nodes_with_splits(tmp_path, sample):
    ev, subj = sample
    lab = aces_task_labels(task(tmp_path, "readmission_risk.yaml"), tmp_path / "g.yaml", ev, subj)
    doubled = pd.concat([lab, lab.assign(task="other")], ignore_index=True)
    nodes = aces_nodes(doubled)
    assert len(nodes) == len(lab.drop_duplicates(["subject_id", "prediction_time"]))
    assert list(nodes.columns) == ["subject_id", "prediction_time", "split", "source_cohort"]
    assert (nodes["split"] == "train").all()


def test_no_aces_environment_is_a_clear_error(tmp_path, sample, monkeypatch):
    ev, subj = sample
    monkeypatch.setenv("EHR_ACES_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(LabelError, match="EHR_ACES_PYTHON=.*no such interpreter"):
        aces_task_labels(task(tmp_path, "readmission_risk.yaml"), tmp_path / "g.yaml", ev, subj)
