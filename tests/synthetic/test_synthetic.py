"""Tests of the synthetic MEDS cohort generator (ehr_assets.synthetic)."""

from __future__ import annotations

import json
import re

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from ehr_assets import synthetic
from ehr_assets.synthetic import DEFAULT_ID_START, SyntheticCohort, generate, write_meds_dataset

N = 600
MEDS_COLUMNS = ["subject_id", "time", "code", "numeric_value", "text_value"]
END = pd.Timestamp("2024-12-31")
PRIMARY = ["ICD10/C18.9", "ICD10/C34.90", "ICD10/C50.919", "ICD10/C61", "ICD10/C25.9"]
MARKERS = {
    "ICD10/C18.9": "LOINC/2039-6",
    "ICD10/C34.90": "LOINC/2039-6",
    "ICD10/C50.919": "LOINC/6875-9",
    "ICD10/C61": "LOINC/2857-1",
    "ICD10/C25.9": "LOINC/24108-3",
}
# the decision-node rules of cohorts/msk.yaml and cohorts/inspect.yaml
NODE_CODES = {"oncology": [r"ICD10/C\d\d.*", r"MSK/LINE_OF_THERAPY/.*", r"SNOMED/444391001"], "pe": [r"CPT4/71275"]}


@pytest.fixture(scope="module")
def onc() -> SyntheticCohort:
    return generate("oncology", N, 11)


@pytest.fixture(scope="module")
def pe() -> SyntheticCohort:
    return generate("pe", N, 23)


@pytest.fixture(scope="module", params=["oncology", "pe"])
def cohort(request, onc, pe) -> tuple[str, SyntheticCohort]:
    return request.param, {"oncology": onc, "pe": pe}[request.param]


# ----------------------------------------------------------------------------------------------------- helpers
def decision_nodes(ev: pd.DataFrame, profile: str, max_per_subject: int = 3, min_context: int = 3) -> pd.DataFrame:
    """Nodes as the pipeline defines them: full-match codes, one per (subject, time), >= min_context events at or
    before, before death, the earliest max_per_subject per subject."""
    pattern = re.compile("|".join(f"(?:{p})" for p in NODE_CODES[profile]))
    hit = ev["code"].map(lambda c: pattern.fullmatch(c) is not None).to_numpy()
    n_ctx = ev.groupby(["subject_id", "time"]).cumcount(ascending=False) + ev.groupby("subject_id").cumcount() + 1
    nodes = ev.assign(n_ctx=n_ctx)[hit].drop_duplicates(["subject_id", "time"])
    death = ev.loc[ev["code"] == meds.death_code].groupby("subject_id")["time"].min()
    nodes = nodes[(nodes["n_ctx"] >= min_context) & ~(nodes["subject_id"].map(death) <= nodes["time"])]
    nodes = nodes.groupby("subject_id").head(max_per_subject)
    return nodes[["subject_id", "time", "code", "n_ctx"]].reset_index(drop=True)


def binary_label(ev: pd.DataFrame, nodes: pd.DataFrame, code: str, days: int) -> tuple[pd.Series, pd.Series]:
    """(event, observed) for an outcome in (t, t + days]; a node whose follow-up ends earlier without it is censored."""
    last = nodes["subject_id"].map(ev.groupby("subject_id")["time"].max())
    out = ev.loc[ev["code"] == code, ["subject_id", "time"]].rename(columns={"time": "t_out"})
    m = nodes[["subject_id", "time"]].reset_index().merge(out, on="subject_id")
    first = m[m["t_out"] > m["time"]].groupby("index")["t_out"].min().reindex(nodes.index)
    horizon = nodes["time"] + pd.Timedelta(days=days)
    event = first.notna() & (first <= horizon)
    return event, event | (last >= horizon)


def rate(ev, nodes, code, days) -> float:
    event, observed = binary_label(ev, nodes, code, days)
    assert observed.sum() > 300
    return float(event[observed].mean())


def last_value(ev: pd.DataFrame, nodes: pd.DataFrame, code: str) -> pd.Series:
    """The last value of ``code`` at or before each node (NaN when none)."""
    x = ev.loc[ev["code"] == code, ["subject_id", "time", "numeric_value"]].rename(columns={"time": "t_x"})
    m = pd.merge_asof(
        nodes.reset_index().sort_values("time"),
        x.sort_values("t_x"),
        left_on="time",
        right_on="t_x",
        by="subject_id",
        direction="backward",
    )
    return m.set_index("index")["numeric_value"].astype(float).reindex(nodes.index)


def cv_auroc(X: pd.DataFrame, y: pd.Series) -> float:
    X = X.fillna(X.median())
    X = (X - X.mean()) / X.std().replace(0, 1)
    p = cross_val_predict(LogisticRegression(max_iter=2000), X, y, cv=5, method="predict_proba")[:, 1]
    return roc_auc_score(y, p)


# ------------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("profile", ["oncology", "pe"])
def test_same_seed_same_cohort_and_prefix_stable(profile):
    a, b = generate(profile, 40, 5), generate(profile, 40, 5)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.latent, b.latent)
    other = generate(profile, 40, 6)
    assert len(other.events) != len(a.events) or not other.events["code"].equals(a.events["code"])
    # subject i does not depend on how many subjects follow it
    small = generate(profile, 15, 5)
    pd.testing.assert_frame_equal(small.events, a.events[a.events["subject_id"] < DEFAULT_ID_START[profile] + 15])


# -------------------------------------------------------------------------------------------- schema and shape
def test_events_validate_against_meds_data_schema(cohort):
    _, c = cohort
    table = pa.Table.from_pandas(c.events[MEDS_COLUMNS], preserve_index=False)
    aligned = meds.DataSchema.align(table)
    meds.DataSchema.validate(aligned)
    assert aligned.schema.field("numeric_value").type == pa.float32()
    assert aligned.schema.field("time").type == pa.timestamp("us")


def test_columns_dtypes_and_null_conventions(cohort):
    _, c = cohort
    ev = c.events
    assert list(ev.columns) == ["subject_id", "time", "code", "numeric_value", "text_value", "table", "unit"]
    assert ev["subject_id"].dtype == np.int64
    assert ev["time"].dtype == "datetime64[us]"
    assert ev["numeric_value"].dtype == np.float32
    assert ev["text_value"].dtype == object and ev["text_value"].map(lambda v: v is None).all()
    assert ev["unit"].dtype == object
    assert pd.api.types.is_string_dtype(ev["code"]) and pd.api.types.is_string_dtype(ev["table"])
    assert ev["time"].notna().all() and ev["code"].notna().all() and ev["table"].notna().all()
    assert not ev.duplicated().any()
    # labs carry a value and a unit, nothing else has a unit
    lab = ev["table"] == "measurement"
    assert ev.loc[lab, "numeric_value"].notna().all() and ev.loc[lab, "unit"].map(lambda u: isinstance(u, str)).all()
    assert ev.loc[~lab, "unit"].map(lambda u: u is None).all()
    assert np.isfinite(ev.loc[lab, "numeric_value"]).all() and (ev.loc[lab, "numeric_value"] > 0).all()
    valued = lab | (ev["code"] == "LOINC/89247-1")
    assert ev.loc[~valued, "numeric_value"].isna().all()


def test_tables_follow_the_code_categories(cohort):
    _, c = cohort
    pairs = c.events[["code", "table"]].drop_duplicates()
    assert pairs["code"].is_unique  # one table per code
    table = dict(zip(pairs["code"], pairs["table"]))
    assert table["MEDS_BIRTH"] == "person" and table["MEDS_DEATH"] == "death"
    assert table["Visit/IP"] == "hospital_admission" and table["Visit/OP"] == "observation"
    assert {table[k] for k in table if k.startswith("GENDER/")} == {"person"}
    assert {table[k] for k in table if k.startswith("RXNORM/")} == {"drug_exposure"}
    assert {table[k] for k in table if k.startswith("CPT4/")} == {"procedure"}
    assert {table[k] for k in table if k.startswith("ICD10/") or k.startswith("SNOMED/")} == {"condition"}
    assert {table[k] for k in table if k.startswith("LOINC/") and k != "LOINC/89247-1"} == {"measurement"}
    assert set(table.values()) <= {
        "person",
        "death",
        "condition",
        "drug_exposure",
        "measurement",
        "procedure",
        "observation",
        "hospital_admission",
        "ed_registration",
    }


def test_order_ids_birth_first_and_time_window(cohort):
    profile, c = cohort
    ev = c.events
    ids = ev["subject_id"].to_numpy()
    assert (np.diff(ids) >= 0).all()
    same = ids[1:] == ids[:-1]
    assert (np.diff(ev["time"].to_numpy().view(np.int64))[same] >= 0).all()
    assert np.array_equal(np.unique(ids), DEFAULT_ID_START[profile] + np.arange(N))

    first = ev.groupby("subject_id").head(2)
    assert first["code"].iloc[0::2].eq("MEDS_BIRTH").all()
    assert first["code"].iloc[1::2].isin(["GENDER/F", "GENDER/M"]).all()
    per = ev.groupby("subject_id")["code"]
    assert per.apply(lambda s: (s == "MEDS_BIRTH").sum()).eq(1).all()
    assert per.apply(lambda s: s.str.startswith("GENDER/").sum()).eq(1).all()
    # birth is strictly before everything else but gender
    birth = ev.loc[ev["code"] == "MEDS_BIRTH"].set_index("subject_id")["time"]
    rest = ev[~ev["table"].eq("person")]
    assert (rest["time"] > rest["subject_id"].map(birth)).all()
    assert rest["time"].min() >= pd.Timestamp("2008-01-01")
    assert ev["time"].max() <= END

    # at most one death, and it is the subject's last row (nothing at or after it follows)
    deaths = ev[ev["code"] == "MEDS_DEATH"]
    assert deaths["subject_id"].is_unique
    last = ev.groupby("subject_id").tail(1)
    assert set(deaths.index) <= set(last.index)
    assert 0.2 < deaths["subject_id"].nunique() / N < 0.9


def test_id_start_override_and_profiles_do_not_collide():
    a = generate("pe", 5, 1, id_start=0)
    assert a.events["subject_id"].unique().tolist() == [0, 1, 2, 3, 4]
    assert a.latent["subject_id"].unique().tolist() == [0, 1, 2, 3, 4]
    b = generate("pe", 5, 1)
    pd.testing.assert_frame_equal(a.events.drop(columns="subject_id"), b.events.drop(columns="subject_id"))
    o = generate("oncology", 5, 1)
    assert not set(o.events["subject_id"]) & set(b.events["subject_id"])


def test_events_per_subject(cohort):
    _, c = cohort
    n = c.events.groupby("subject_id").size()
    assert 50 <= n.mean() <= 250
    assert n.min() >= 10 and n.quantile(0.95) <= 300


# ------------------------------------------------------------------------------------------------- latent table
def test_latent_side_table(cohort):
    profile, c = cohort
    lat = c.latent
    assert list(lat.columns) == ["subject_id", "time", *synthetic.LATENT_COLUMNS]
    assert lat["subject_id"].dtype == np.int64 and lat["time"].dtype == "datetime64[us]"
    assert all(lat[col].dtype == np.float64 for col in synthetic.LATENT_COLUMNS)
    assert lat[synthetic.LATENT_COLUMNS].notna().all().all()
    assert lat["reserve"].between(0, 1).all() and lat["treatment_sensitivity"].between(0, 1).all()
    assert set(lat["on_treatment"].unique()) <= {0.0, 1.0}
    # one row per visit / time step: each row sits on an event time of the same subject
    keys = pd.MultiIndex.from_frame(c.events[["subject_id", "time"]])
    assert pd.MultiIndex.from_frame(lat[["subject_id", "time"]]).isin(keys).all()
    per = lat.groupby("subject_id").size()
    assert len(per) == N and per.min() >= 3
    # the growth rate is a per-subject constant; it differs between subjects
    assert lat.groupby("subject_id")["growth_rate"].nunique().eq(1).all()
    assert lat.groupby("subject_id")["growth_rate"].first().std() > 0.1
    if profile == "oncology":
        assert (lat["clot_load"] == 0).all()
    else:
        assert (lat["clot_load"] > 0).any()


def test_recorded_markers_track_the_hidden_burden(onc):
    ev, lat = onc.events, onc.latent
    cea = ev.loc[ev["code"] == "LOINC/2039-6", ["subject_id", "time", "numeric_value"]]
    m = pd.merge_asof(cea.sort_values("time"), lat.sort_values("time"), on="time", by="subject_id")
    assert np.corrcoef(np.log(m["numeric_value"]), m["burden"])[0, 1] > 0.7
    ecog = ev.loc[ev["code"] == "LOINC/89247-1", ["subject_id", "time", "numeric_value"]]
    m = pd.merge_asof(ecog.sort_values("time"), lat.sort_values("time"), on="time", by="subject_id")
    assert np.corrcoef(m["numeric_value"], m["reserve"])[0, 1] < -0.6


# ------------------------------------------------------------------------------------------------ profile codes
def test_oncology_codes_and_structure(onc):
    ev = onc.events
    prim = ev[ev["code"].isin(PRIMARY)]
    assert prim["subject_id"].is_unique and prim["subject_id"].nunique() == N
    assert prim["code"].nunique() == 5 and prim["code"].value_counts(normalize=True).min() > 0.07
    birth = ev.loc[ev["code"] == "MEDS_BIRTH"].set_index("subject_id")["time"]
    age = (prim["time"] - prim["subject_id"].map(birth)).dt.days / 365.25
    assert age.between(40, 86).all() and 55 < age.mean() < 72

    dx = prim.set_index("subject_id")["time"]
    before = ev[ev["time"] < ev["subject_id"].map(dx)]
    assert before.groupby("subject_id").size().reindex(dx.index, fill_value=0).min() >= 5
    first_clinical = before[before["table"] != "person"].groupby("subject_id")["time"].min()
    assert ((dx - first_clinical).dt.days >= 540).all()  # history starts years before the diagnosis
    assert before["code"].isin(["CPT4/74177"]).groupby(before["subject_id"]).any().all()  # work-up imaging
    assert before["code"].isin(["CPT4/88305"]).groupby(before["subject_id"]).any().all()  # biopsy

    sex = ev[ev["code"].str.startswith("GENDER/")].set_index("subject_id")["code"]
    ctype = prim.set_index("subject_id")["code"]
    assert (sex[ctype[ctype == "ICD10/C61"].index] == "GENDER/M").all()
    assert (sex[ctype[ctype == "ICD10/C50.919"].index] == "GENDER/F").mean() > 0.95
    # the tumour marker matches the cancer type
    for dxc, marker in MARKERS.items():
        subj = ctype[ctype == dxc].index
        codes = set(
            ev.loc[ev["subject_id"].isin(subj) & ev["code"].str.match(r"LOINC/(2039-6|24108-3|6875-9|2857-1)"), "code"]
        )
        assert codes == {marker}

    # lines of therapy: numbered 1, 2, ... in time order, each followed by drugs at the same instant
    lines = ev[ev["code"].str.startswith("MSK/LINE_OF_THERAPY/")]
    assert lines["subject_id"].nunique() > 0.8 * N
    k = lines["code"].str.rsplit("/", n=1).str[1].astype(int)
    assert k.groupby(lines["subject_id"]).apply(lambda s: s.tolist() == list(range(1, len(s) + 1))).all()
    assert k.max() >= 3
    assert (lines["time"] > lines["subject_id"].map(dx)).all()
    drugs = ev[ev["table"] == "drug_exposure"]
    at_line = lines[["subject_id", "time"]].merge(
        drugs[["subject_id", "time"]].drop_duplicates(), how="left", indicator=True
    )
    assert (at_line["_merge"] == "both").all()
    for code in [
        "RXNORM/40048",
        "RXNORM/51499",
        "RXNORM/12574",
        "RXNORM/1721560",
        "RXNORM/1547545",
        "RXNORM/10324",
        "RXNORM/42375",
        "SNOMED/444391001",
        "ICD10/C78.00",
        "ICD10/C79.51",
        "ICD10/C78.7",
        "LOINC/718-7",
        "LOINC/1751-7",
        "LOINC/89247-1",
        "CPT4/77427",
        "Visit/IP",
        "MEDS_DEATH",
    ]:
        assert (ev["code"] == code).any(), code
    ecog = ev.loc[ev["code"] == "LOINC/89247-1", "numeric_value"]
    assert set(ecog.unique()) <= {0, 1, 2, 3, 4} and ecog.nunique() >= 4
    assert ev.loc[ev["code"] == "LOINC/718-7", "numeric_value"].between(5, 19).all()


def test_pe_codes_and_structure(pe):
    ev = pe.events
    ct = ev[ev["code"] == "CPT4/71275"]
    n_ct = ct.groupby("subject_id").size().reindex(ev["subject_id"].unique(), fill_value=0)
    assert n_ct.between(1, 4).all() and n_ct.mean() > 1.5 and n_ct.max() == 4
    first_ct = ct.groupby("subject_id")["time"].min()
    before = ev[ev["time"] < ev["subject_id"].map(first_ct)]
    assert before.groupby("subject_id").size().min() >= 5
    first_clinical = before[before["table"] != "person"].groupby("subject_id")["time"].min()
    assert ((first_ct - first_clinical).dt.days >= 540).all()
    birth = ev.loc[ev["code"] == "MEDS_BIRTH"].set_index("subject_id")["time"]
    age = (first_ct - birth.reindex(first_ct.index)).dt.days / 365.25
    assert age.between(40, 86).all()

    # a PE diagnosis follows a study within hours; anticoagulation follows the diagnosis
    dx = ev[ev["code"] == "ICD10/I26.99"][["subject_id", "time"]]
    m = pd.merge_asof(
        dx.sort_values("time"),
        ct[["subject_id", "time"]].rename(columns={"time": "t_ct"}).sort_values("t_ct"),
        left_on="time",
        right_on="t_ct",
        by="subject_id",
    )
    assert ((m["time"] - m["t_ct"]) <= pd.Timedelta(hours=6)).all()
    assert 0.1 < len(dx) / len(ct) < 0.5  # positive studies
    anticoag = ev["code"].isin(["RXNORM/1364430", "RXNORM/1114195", "RXNORM/11289", "RXNORM/67108"])
    first_ac = ev[anticoag].groupby("subject_id")["time"].min()
    assert (first_ac >= dx.groupby("subject_id")["time"].min().reindex(first_ac.index)).all()
    for code in [
        "ICD10/J44.9",
        "ICD10/I50.9",
        "ICD10/C80.1",
        "ICD10/I10",
        "LOINC/48065-7",
        "LOINC/6598-7",
        "LOINC/30934-4",
        "LOINC/2160-0",
        "SNOMED/70995007",
        "Visit/ER",
        "Visit/IP",
        "RXNORM/1364430",
        "RXNORM/1114195",
        "RXNORM/11289",
        "RXNORM/67108",
    ]:
        assert (ev["code"] == code).any(), code
    # D-dimer is higher at positive studies
    dd = ev[ev["code"] == "LOINC/48065-7"][["subject_id", "time", "numeric_value"]]
    dd = pd.merge_asof(
        dd.sort_values("time"),
        dx.assign(pos=True).rename(columns={"time": "t_dx"}).sort_values("t_dx"),
        left_on="time",
        right_on="t_dx",
        by="subject_id",
        direction="forward",
        tolerance=pd.Timedelta(hours=6),
    )
    assert dd.loc[dd["pos"].notna(), "numeric_value"].median() > 2 * dd.loc[dd["pos"].isna(), "numeric_value"].median()
    # the pulmonary hypertension diagnosis is recorded once
    assert ev.loc[ev["code"] == "SNOMED/70995007", "subject_id"].is_unique


# ------------------------------------------------------------------------------------- outcomes at decision nodes
def test_oncology_decision_nodes_and_outcome_rates(onc):
    ev = onc.events
    nodes = decision_nodes(ev, "oncology")
    assert len(nodes) / N > 2.0  # diagnosis, line 1 and a later line / progression / metastasis
    assert (nodes["n_ctx"] >= 3).all()
    assert 0.20 <= rate(ev, nodes, "MEDS_DEATH", 365) <= 0.35
    assert 0.25 <= rate(ev, nodes, "SNOMED/444391001", 365) <= 0.45
    assert rate(ev, nodes, "MEDS_DEATH", 90) < rate(ev, nodes, "MEDS_DEATH", 365)


def test_pe_decision_nodes_and_outcome_rates(pe):
    ev = pe.events
    nodes = decision_nodes(ev, "pe")
    assert len(nodes) / N > 1.5
    assert 0.10 <= rate(ev, nodes, "MEDS_DEATH", 365) <= 0.25
    assert 0.08 <= rate(ev, nodes, "Visit/IP", 30) <= 0.20
    assert 0.05 <= rate(ev, nodes, "SNOMED/70995007", 365) <= 0.15


def test_oncology_mortality_is_predictable_from_history_at_diagnosis(onc):
    ev = onc.events
    nodes = ev[ev["code"].isin(PRIMARY)][["subject_id", "time", "code"]].reset_index(drop=True)
    died, observed = binary_label(ev, nodes, "MEDS_DEATH", 365)
    birth = ev.loc[ev["code"] == "MEDS_BIRTH"].set_index("subject_id")["time"]
    X = pd.DataFrame(
        {
            "age": (nodes["time"] - nodes["subject_id"].map(birth)).dt.days / 365.25,
            "ecog": last_value(ev, nodes, "LOINC/89247-1"),
        }
    )
    marker = pd.Series(np.nan, index=nodes.index)
    for code in set(MARKERS.values()):  # log marker, standardized per assay
        v = np.log(last_value(ev, nodes, code))
        marker = marker.fillna((v - v.mean()) / v.std())
    X["marker"] = marker
    for code in PRIMARY:
        X[code] = (nodes["code"] == code).astype(float)
    assert cv_auroc(X[observed], died[observed]) > 0.65
    # each recorded signal alone carries information too
    assert roc_auc_score(died[observed], X.loc[observed, "ecog"].fillna(0)) > 0.55
    assert roc_auc_score(died[observed], X.loc[observed, "marker"].fillna(0)) > 0.55


def test_pe_mortality_is_predictable_from_history_at_first_study(pe):
    ev = pe.events
    nodes = decision_nodes(ev, "pe", max_per_subject=1)
    died, observed = binary_label(ev, nodes, "MEDS_DEATH", 365)
    X = pd.DataFrame(
        {
            code: np.log(last_value(ev, nodes, code))
            for code in ["LOINC/30934-4", "LOINC/6598-7", "LOINC/2160-0", "LOINC/48065-7"]
        }
    )
    X["n_events"] = nodes["n_ctx"]
    assert cv_auroc(X[observed], died[observed]) > 0.65


# ------------------------------------------------------------------------------------------------- MEDS folder
def test_write_meds_dataset_round_trip(tmp_path, onc):
    ids = onc.events["subject_id"].unique()[:25]
    events = onc.events[onc.events["subject_id"].isin(ids)].reset_index(drop=True)
    splits = synthetic.random_splits(ids, seed=3)
    out = tmp_path / "meds"
    (out / "data").mkdir(parents=True)
    (out / "data" / "stale.parquet").write_bytes(b"old")  # a stale shard is removed
    write_meds_dataset(events, splits, out, "onc_test", subjects_per_shard=10)

    shards = sorted((out / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["0.parquet", "1.parquet", "2.parquet"]
    tables = [pq.read_table(p) for p in shards]
    seen: set[int] = set()
    for t in tables:
        meds.DataSchema.validate(t)
        assert t.schema.field("code").type == pa.string() and t.schema.field("numeric_value").type == pa.float32()
        assert {"table", "unit"} <= set(t.column_names)
        sid = set(t.column("subject_id").to_pylist())
        assert not sid & seen  # each subject in exactly one shard
        seen |= sid
        df = t.to_pandas()
        assert df.equals(df.sort_values(["subject_id", "time"], kind="stable"))
    assert seen == set(ids.tolist())
    back = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    pd.testing.assert_frame_equal(back[["subject_id", "time"]], events[["subject_id", "time"]], check_dtype=False)
    assert back["code"].tolist() == events["code"].tolist()
    np.testing.assert_array_equal(back["numeric_value"].to_numpy(), events["numeric_value"].to_numpy())

    codes = pq.read_table(out / "metadata" / "codes.parquet")
    meds.CodeMetadataSchema.validate(codes)
    cdf = codes.to_pandas()
    assert set(cdf["code"]) == set(events["code"])
    assert cdf["description"].notna().all()
    row = cdf.set_index("code").loc["ICD10/C34.90"]
    assert "lung" in row["description"] and list(row["parent_codes"]) == ["ICD10/C34"]

    info = json.loads((out / "metadata" / "dataset.json").read_text())
    meds.DatasetMetadataSchema.validate(info)
    assert info["dataset_name"] == "onc_test" and info["code_modifier_columns"] == ["unit"]

    sp = pq.read_table(out / "metadata" / "subject_splits.parquet")
    meds.SubjectSplitSchema.validate(sp)
    spdf = sp.to_pandas()
    assert spdf["subject_id"].is_unique and set(spdf["subject_id"]) == set(ids.tolist())
    assert set(spdf["split"]) == {"train", "tuning", "held_out"}
    groups = [set(spdf.loc[spdf["split"] == s, "subject_id"]) for s in ("train", "tuning", "held_out")]
    assert sum(map(len, groups)) == len(set().union(*groups)) == 25


def test_write_meds_dataset_without_splits_and_bad_splits(tmp_path, pe):
    events = pe.events[pe.events["subject_id"] < DEFAULT_ID_START["pe"] + 3]
    write_meds_dataset(events, None, tmp_path / "a", "pe_small")
    assert not (tmp_path / "a" / "metadata" / "subject_splits.parquet").exists()
    assert len(list((tmp_path / "a" / "data").glob("*.parquet"))) == 1
    dup = pd.DataFrame({"subject_id": [2_000_000, 2_000_000], "split": ["train", "held_out"]})
    with pytest.raises(ValueError, match="more than once"):
        write_meds_dataset(events, dup, tmp_path / "b", "pe_small")


def test_random_splits_are_70_10_20():
    sp = synthetic.random_splits(np.arange(1000), seed=1)
    assert sp["split"].value_counts().to_dict() == {"train": 700, "held_out": 200, "tuning": 100}
    pd.testing.assert_frame_equal(sp, synthetic.random_splits(np.arange(1000)[::-1], seed=1))


def test_cli_writes_a_meds_dataset(tmp_path, capsys):
    assert synthetic.main(["pe", "--subjects", "20", "--seed", "4", "--out", str(tmp_path / "pe")]) == 0
    printed = capsys.readouterr().out
    assert "subjects=20" in printed and "events=" in printed and "total" in printed
    data = pq.read_table(tmp_path / "pe" / "data" / "0.parquet")
    meds.DataSchema.validate(data)
    assert data.num_rows == len(generate("pe", 20, 4).events)
    sp = pq.read_table(tmp_path / "pe" / "metadata" / "subject_splits.parquet").to_pandas()
    assert sp["split"].value_counts().to_dict() == {"train": 14, "held_out": 4, "tuning": 2}


def test_cli_takes_a_cohort_name_and_streams_chunks(tmp_path, capsys):
    """`python -m ehr_assets.synthetic msk ...`: the cohort's profile, seed and splits; one shard per chunk; the
    shards hold exactly the subjects of one unchunked `generate` call; the latent table sits outside data/."""
    from ehr_assets.data.cohort import assign_splits
    from ehr_assets.specs import load_project

    from ..conftest import REPO

    out = tmp_path / "msk"
    assert synthetic.main(["msk", "--subjects", "30", "--chunk-subjects", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cohort=msk profile=oncology seed=11 subjects=30" in printed
    assert "3 shard(s)" in printed and "patient-years: lifetime" in printed and "peak RSS" in printed

    spec = load_project(REPO).cohorts["msk"]
    whole = generate("oncology", 30, spec.source.seed)
    shards = [pq.read_table(out / "data" / f"{k}.parquet") for k in range(3)]
    for t in shards:
        meds.DataSchema.validate(t)
    assert [t.num_rows for t in shards] == [
        int(
            whole.events["subject_id"].between(DEFAULT_ID_START["oncology"] + a, DEFAULT_ID_START["oncology"] + b).sum()
        )
        for a, b in ((0, 11), (12, 23), (24, 29))
    ]
    back = pd.concat([t.to_pandas() for t in shards], ignore_index=True)
    assert back["code"].tolist() == whole.events["code"].tolist()
    assert (back["time"].to_numpy() == whole.events["time"].to_numpy()).all()
    latent = pd.concat([pd.read_parquet(p) for p in sorted((out / "latent").glob("*.parquet"))], ignore_index=True)
    pd.testing.assert_frame_equal(latent, whole.latent)
    meds.CodeMetadataSchema.validate(pq.read_table(out / "metadata" / "codes.parquet"))
    meds.DatasetMetadataSchema.validate(json.loads((out / "metadata" / "dataset.json").read_text()))
    # the split is the pipeline's: the cohort's declared fractions and seed
    sp = pq.read_table(out / "metadata" / "subject_splits.parquet").to_pandas()
    s = spec.splits
    expected = assign_splits(
        whole.events["subject_id"].unique(), {"train": s.train, "tuning": s.tuning, "held_out": s.held_out}, s.seed
    )
    pd.testing.assert_frame_equal(sp, expected, check_dtype=False)


def test_cli_refuses_a_union_or_an_unknown_name(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"combined.yaml: cohort 'combined' is the union of msk, inspect"):
        synthetic.main(["combined", "--subjects", "5", "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match=r"'cardio' is neither a cohort .* nor a synthetic profile"):
        synthetic.main(["cardio", "--subjects", "5", "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit):
        synthetic.main(["msk", "--subjects", "0", "--out", str(tmp_path / "c")])
    assert "--subjects must be a positive integer" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ errors
def test_unknown_profile_is_an_error_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'cardio'.*'oncology'.*'pe'"):
        generate("cardio", 10, 0)


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_subject_count_is_an_error(n):
    with pytest.raises(ValueError, match="n_subjects must be a positive integer"):
        generate("pe", n, 0)
