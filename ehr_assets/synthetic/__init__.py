"""Deterministic synthetic EHR cohorts in the MEDS event schema (profiles ``oncology`` and ``pe``).

The generator stands in for real data (MSK-CHORD-like oncology, INSPECT-like pulmonary embolism) until a real source
is declared. Its purpose is to give every downstream stage (serialization, SFT/JEPA training, probes) data whose
outcomes are *caused by a hidden state that the recorded history only partly reveals*, so that a model which reads
the trajectory can beat one that only counts events, and an "oracle" probe on the hidden state bounds what is
learnable.

Generative model
----------------
Every subject carries a hidden continuous state, stored row by row in :attr:`SyntheticCohort.latent` (one row per
visit or other time step, never read by a model; the state at a decision time is the subject's last row at or
before it, e.g. ``pd.merge_asof(nodes, latent, on="time", by="subject_id")``):

``burden``
    disease burden on a log scale (oncology: tumour burden; PE: chronic cardiopulmonary disease burden).
``growth_rate``
    the drift of ``burden`` per year (oncology: the untreated tumour growth rate; PE: the progression rate of the
    chronic disease, negative when it improves). It is visible only through the *change* of the recorded markers
    across several visits.
``reserve``
    functional reserve in [0, 1] (1 = fit). It falls faster as burden rises (PE: and the faster the chronic disease
    progresses, so that the rate shows in the decline of creatinine / BNP-linked reserve over the years).
``treatment_sensitivity``
    in [0, 1]: how much a line of therapy slows the tumour (oncology) or how completely anticoagulation resolves a
    clot (PE; the unresolved residue drives pulmonary hypertension).
``on_treatment``
    1.0 while a line of therapy / anticoagulation is active.
``clot_load``
    PE only: the acute clot load, decaying under anticoagulation to a residue (0.0 in the oncology profile).

Between visits the state moves by an Euler step of a simple diffusion (``burden += (growth - treatment effect) dt +
noise``; ``reserve`` declines with burden). Outcomes are competing exponential clocks whose hazards are log-linear in
the current state and are redrawn after every step (valid for piecewise-constant hazards): death, metastasis,
hospital admission, a new suspected-PE episode, pulmonary hypertension. Visits come more often as burden rises.
Recorded values are noisy functions of the state: tumour markers, D-dimer, troponin and BNP rise with burden (and
clot load); haemoglobin and albumin fall and ECOG worsens as reserve falls; creatinine rises as reserve falls.
Because future burden is the current burden plus ``growth_rate`` times the horizon, long-horizon risk depends on the
growth rate, which a model can only infer from the trajectory of markers.

Oncology (MSK-like): a primary cancer diagnosis (colon, lung, breast, prostate, pancreas; each with its own growth,
stage, treatment response, marker and metastatic pattern) preceded by 2-6.5 years of routine primary-care history
and a work-up (CT, biopsy). Line 1 starts 2-6 weeks after diagnosis; each line adds a treatment effect proportional
to the subject's sensitivity that wanes as resistance develops (later lines are weaker). Restaging CTs every ~3
months detect progression (burden above the line's nadir by a noisy threshold, RECIST-like), which records
``SNOMED/444391001`` and triggers the next line if the subject is fit enough; metastases appear with a hazard rising
with burden and are recorded at imaging.

PE (INSPECT-like): 2-7 years of history (hypertension, COPD, heart failure, cancer, creatinine/BNP) before a first CT
pulmonary angiography (``CPT4/71275``, the decision event); later suspected-PE episodes recur with a hazard rising
with burden and after a PE (at most 4 studies). Each episode: emergency or outpatient encounter, D-dimer, troponin,
BNP and creatinine, the CT study, admission (``Visit/IP`` at the study time, so only *later* admissions count as
readmissions), a PE diagnosis when positive and anticoagulation (enoxaparin in hospital, then a DOAC or warfarin).
Readmission, death (with an acute clot term), heart failure and pulmonary hypertension follow the state.

Time: the data window is 2008-01-01 .. 2024-12-31; follow-up ends at death or at a random loss-to-follow-up date
(never after 2024-12-31, no event after ``MEDS_DEATH``). Birth and gender rows carry the birth time.

Determinism: subject ``i`` draws from ``numpy.random.default_rng([seed, profile, i])``, so a cohort is a pure function
of ``(profile, n_subjects, seed, id_start)`` and the first ``k`` subjects of a larger cohort equal a ``k``-subject
cohort (up to ``subject_id`` when ``id_start`` differs); ``generate(..., start=s)`` makes subjects ``s, s+1, ...``
exactly as a larger cohort would, which is how :func:`iter_chunks` streams a big cohort in bounded memory.
Per-subject draws are taken from pre-drawn numpy buffers so that the per-subject Python loop stays lean; columns are
built as flat lists and become a DataFrame once per chunk.

CLI::

    python -m ehr_assets.synthetic <cohort|profile> --subjects N --out DIR [--seed S] [--chunk-subjects K]

``<cohort>`` names a file of ``cohorts/`` (e.g. ``msk``, ``inspect``): its source's profile, seed and ``id_start``
and its declared split fractions and split seed are used, so the subjects and splits equal those of the pipeline's
``cohort_events`` / ``subjects`` for the same number of subjects. A bare profile (``oncology``, ``pe``) uses
``--seed`` (default 0) and a 70/10/20 split. The output is a MEDS dataset folder (see :func:`write_meds_dataset`),
written chunk by chunk (``data/<k>.parquet``, one shard per chunk of subjects), plus the hidden state in
``latent/<k>.parquet`` -- outside ``data/``, so MEDS tools never mistake it for events; only an oracle may read it.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time as _time
from collections.abc import Iterator
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "DEFAULT_ID_START",
    "PROFILES",
    "LATENT_COLUMNS",
    "SyntheticCohort",
    "code_metadata",
    "generate",
    "iter_chunks",
    "main",
    "random_splits",
    "write_meds_dataset",
    "write_meds_dataset_chunked",
]

DEFAULT_ID_START = {"oncology": 1_000_000, "pe": 2_000_000}
PROFILES = tuple(DEFAULT_ID_START)
EVENT_COLUMNS = ["subject_id", "time", "code", "numeric_value", "text_value", "table", "unit"]
MEDS_COLUMNS = ["subject_id", "time", "code", "numeric_value", "text_value"]
LATENT_COLUMNS = ["burden", "growth_rate", "reserve", "treatment_sensitivity", "on_treatment", "clot_load"]


@dataclass
class SyntheticCohort:
    """A generated cohort: MEDS ``events`` and the hidden ``latent`` state (one row per visit / time step)."""

    events: pd.DataFrame
    latent: pd.DataFrame


# ------------------------------------------------------------------------------------------------------- time axis
# Times are simulated as float days since EPOCH and rounded to the minute at the end.
EPOCH = np.datetime64("2008-01-01T00:00:00", "us")
DAY_US = 86_400_000_000
YEAR = 365.25
END_DAY = float((np.datetime64("2024-12-31") - np.datetime64("2008-01-01")).astype(int))  # last allowed instant
FIRST_INDEX_DAY = float((np.datetime64("2010-06-01") - np.datetime64("2008-01-01")).astype(int))
LAST_INDEX_DAY = float((np.datetime64("2024-06-30") - np.datetime64("2008-01-01")).astype(int))
HOUR = 1.0 / 24.0
MINUTE = HOUR / 60.0
NAN = float("nan")

# --------------------------------------------------------------------------------------------------- code registry
# code -> (table, unit, description, parent_codes). The table is the event's OMOP-style category.
_REGISTRY: dict[str, tuple[str, str | None, str, list[str]]] = {}


def _reg(code: str, table: str, description: str, unit: str | None = None, parents: list[str] | None = None) -> str:
    if parents is None:
        parents = [code.rsplit(".", 1)[0]] if code.startswith("ICD10/") and "." in code else []
    _REGISTRY[code] = (table, unit, description, parents)
    return code


BIRTH = _reg(meds.birth_code, "person", "Birth")
FEMALE = _reg("GENDER/F", "person", "Gender: female")
MALE = _reg("GENDER/M", "person", "Gender: male")
DEATH = _reg(meds.death_code, "death", "Death")
VISIT_OP = _reg("Visit/OP", "observation", "Outpatient visit")
VISIT_IP = _reg("Visit/IP", "hospital_admission", "Inpatient admission")
VISIT_ER = _reg("Visit/ER", "ed_registration", "Emergency department visit")

# shared comorbidities
HTN = _reg("ICD10/I10", "condition", "Essential (primary) hypertension")
T2DM = _reg("ICD10/E11.9", "condition", "Type 2 diabetes mellitus without complications")
HLD = _reg("ICD10/E78.5", "condition", "Hyperlipidemia, unspecified")

# oncology
COLON = _reg("ICD10/C18.9", "condition", "Malignant neoplasm of colon, unspecified")
LUNG = _reg("ICD10/C34.90", "condition", "Malignant neoplasm of unspecified part of unspecified bronchus or lung")
BREAST = _reg("ICD10/C50.919", "condition", "Malignant neoplasm of unspecified site of unspecified female breast")
PROSTATE = _reg("ICD10/C61", "condition", "Malignant neoplasm of prostate")
PANCREAS = _reg("ICD10/C25.9", "condition", "Malignant neoplasm of pancreas, unspecified")
PROGRESSION = _reg("SNOMED/444391001", "condition", "Malignant tumor progression (finding)")
MET_LUNG = _reg("ICD10/C78.00", "condition", "Secondary malignant neoplasm of unspecified lung")
MET_BONE = _reg("ICD10/C79.51", "condition", "Secondary malignant neoplasm of bone")
MET_LIVER = _reg("ICD10/C78.7", "condition", "Secondary malignant neoplasm of liver and intrahepatic bile duct")
CEA = _reg("LOINC/2039-6", "measurement", "Carcinoembryonic antigen [Mass/volume] in Serum or Plasma", "ng/mL")
CA199 = _reg("LOINC/24108-3", "measurement", "Cancer Ag 19-9 [Units/volume] in Serum or Plasma", "U/mL")
CA153 = _reg("LOINC/6875-9", "measurement", "Cancer Ag 15-3 [Units/volume] in Serum or Plasma", "U/mL")
PSA = _reg("LOINC/2857-1", "measurement", "Prostate specific Ag [Mass/volume] in Serum or Plasma", "ng/mL")
HGB = _reg("LOINC/718-7", "measurement", "Hemoglobin [Mass/volume] in Blood", "g/dL")
ALB = _reg("LOINC/1751-7", "measurement", "Albumin [Mass/volume] in Serum or Plasma", "g/dL")
ECOG = _reg("LOINC/89247-1", "observation", "ECOG Performance Status score")
CT_ABD = _reg("CPT4/74177", "procedure", "CT abdomen and pelvis with contrast")
BIOPSY = _reg("CPT4/88305", "procedure", "Surgical pathology, gross and microscopic examination (biopsy)")
RADIATION = _reg("CPT4/77427", "procedure", "Radiation treatment management, 5 treatments")
MAX_LINES = 6
LINE_CODES = [
    _reg(f"MSK/LINE_OF_THERAPY/{k}", "observation", f"Start of line of therapy {k}", parents=["MSK/LINE_OF_THERAPY"])
    for k in range(1, MAX_LINES + 1)
]


def _rx(cui: int, name: str) -> str:
    return _reg(f"RXNORM/{cui}", "drug_exposure", name)


CARBOPLATIN, CISPLATIN = _rx(40048, "carboplatin"), _rx(2555, "cisplatin")
GEMCITABINE, IRINOTECAN = _rx(12574, "gemcitabine"), _rx(51499, "irinotecan")
OXALIPLATIN, FLUOROURACIL, LEUCOVORIN = _rx(32592, "oxaliplatin"), _rx(4492, "fluorouracil"), _rx(6313, "leucovorin")
CAPECITABINE, PACLITAXEL, DOCETAXEL = _rx(194000, "capecitabine"), _rx(56946, "paclitaxel"), _rx(72962, "docetaxel")
PEMETREXED, DOXORUBICIN = _rx(68446, "pemetrexed"), _rx(3639, "doxorubicin")
CYCLOPHOSPHAMIDE = _rx(3002, "cyclophosphamide")
BEVACIZUMAB, CETUXIMAB, TRASTUZUMAB = _rx(253337, "bevacizumab"), _rx(318341, "cetuximab"), _rx(224905, "trastuzumab")
PEMBROLIZUMAB, NIVOLUMAB = _rx(1547545, "pembrolizumab"), _rx(1597876, "nivolumab")
OSIMERTINIB, PALBOCICLIB = _rx(1721560, "osimertinib"), _rx(1601374, "palbociclib")
TAMOXIFEN, LETROZOLE, ANASTROZOLE = _rx(10324, "tamoxifen"), _rx(72965, "letrozole"), _rx(84857, "anastrozole")
LEUPROLIDE, ABIRATERONE = _rx(42375, "leuprolide"), _rx(1100072, "abiraterone")
ENZALUTAMIDE = _rx(1307298, "enzalutamide")

# pulmonary embolism
CTPA = _reg("CPT4/71275", "procedure", "CT angiography, chest (pulmonary angiography), with contrast")
PE_DX = _reg("ICD10/I26.99", "condition", "Other pulmonary embolism without acute cor pulmonale")
COPD = _reg("ICD10/J44.9", "condition", "Chronic obstructive pulmonary disease, unspecified")
HF = _reg("ICD10/I50.9", "condition", "Heart failure, unspecified")
CANCER = _reg("ICD10/C80.1", "condition", "Malignant (primary) neoplasm, unspecified")
PH = _reg("SNOMED/70995007", "condition", "Pulmonary hypertension")
APIXABAN, RIVAROXABAN = _rx(1364430, "apixaban"), _rx(1114195, "rivaroxaban")
WARFARIN, ENOXAPARIN = _rx(11289, "warfarin"), _rx(67108, "enoxaparin")
DDIMER = _reg("LOINC/48065-7", "measurement", "Fibrin D-dimer FEU [Mass/volume] in Platelet poor plasma", "ng/mL FEU")
TROPONIN = _reg("LOINC/6598-7", "measurement", "Troponin T.cardiac [Mass/volume] in Serum or Plasma", "ng/mL")
BNP = _reg("LOINC/30934-4", "measurement", "Natriuretic peptide B [Mass/volume] in Serum or Plasma", "pg/mL")
CREATININE = _reg("LOINC/2160-0", "measurement", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL")

_CODES = list(_REGISTRY)
_CODE_ID = {c: i for i, c in enumerate(_CODES)}
_CODE_ARR = np.array(_CODES, dtype=object)
_TABLE_ARR = np.array([_REGISTRY[c][0] for c in _CODES], dtype=object)
_UNIT_ARR = np.array([_REGISTRY[c][1] for c in _CODES], dtype=object)


def code_metadata() -> pd.DataFrame:
    """Every code the generator can emit: code, description, parent_codes, table, unit."""
    return pd.DataFrame(
        {
            "code": _CODES,
            "description": [_REGISTRY[c][2] for c in _CODES],
            "parent_codes": [list(_REGISTRY[c][3]) for c in _CODES],
            "table": [_REGISTRY[c][0] for c in _CODES],
            "unit": [_REGISTRY[c][1] for c in _CODES],
        }
    )


# --------------------------------------------------------------------------------------------------- random draws
class _Draws:
    """Fast scalar draws for one subject from pre-drawn buffers of a seeded numpy Generator."""

    __slots__ = ("gen", "_u", "_iu", "_z", "_iz")
    BLOCK = 256

    def __init__(self, key: list[int]):
        self.gen = np.random.default_rng(key)
        self._u = self.gen.random(self.BLOCK).tolist()
        self._z = self.gen.standard_normal(self.BLOCK).tolist()
        self._iu = 0
        self._iz = 0

    def u(self) -> float:
        """Uniform [0, 1)."""
        i = self._iu
        if i == self.BLOCK:
            self._u = self.gen.random(self.BLOCK).tolist()
            i = 0
        self._iu = i + 1
        return self._u[i]

    def z(self) -> float:
        """Standard normal."""
        i = self._iz
        if i == self.BLOCK:
            self._z = self.gen.standard_normal(self.BLOCK).tolist()
            i = 0
        self._iz = i + 1
        return self._z[i]

    def expo(self, mean: float) -> float:
        """Exponential with the given mean."""
        return -mean * math.log(1.0 - self.u())

    def clock(self, rate_per_year: float) -> float:
        """Days until an event of a Poisson process with ``rate_per_year`` (inf when the rate is 0)."""
        if rate_per_year <= 0.0:
            return math.inf
        return -math.log(1.0 - self.u()) * YEAR / rate_per_year

    def pick(self, options: tuple | list):
        return options[int(self.u() * len(options))]

    def pick_cum(self, cum: list[float]) -> int:
        """Index drawn from cumulative weights ``cum`` (last entry = total)."""
        return bisect_right(cum, self.u() * cum[-1])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


# ----------------------------------------------------------------------------------------------------- the buffer
class _Buffer:
    """Flat per-column lists for the events and latent rows of all subjects."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.counts: list[int] = []
        self.lat_t: list[float] = []
        self.lat: list[tuple[float, ...]] = []
        self.lat_counts: list[int] = []


# ------------------------------------------------------------------------------------------------------ oncology
@dataclass(frozen=True)
class _Cancer:
    dx: str
    weight: float  # share of the cohort
    male: float  # P(male)
    age: float  # mean age at diagnosis
    growth: float  # mean untreated growth rate of log burden per year
    burden: float  # mean log burden at diagnosis (stage)
    sens: float  # shift of treatment sensitivity
    marker: str
    marker_log0: float  # log marker at burden 0
    marker_slope: float
    mets: tuple[tuple[str, float], ...]  # (code, relative propensity)
    regimens: tuple[tuple[tuple[str, ...], ...], ...]  # per line: options, each a tuple of drug codes
    special: tuple[str, float, float, tuple[str, ...]] | None = None  # (name, share, sensitivity bonus, line-1 drugs)


_ONCOLOGY = (
    _Cancer(
        COLON, 0.22, 0.5, 64, 0.75, 0.0, 0.05, CEA, math.log(3.0), 1.0,
        ((MET_LIVER, 0.55), (MET_LUNG, 0.30), (MET_BONE, 0.10)),
        (
            ((OXALIPLATIN, FLUOROURACIL, LEUCOVORIN), (OXALIPLATIN, CAPECITABINE),
             (OXALIPLATIN, FLUOROURACIL, LEUCOVORIN, BEVACIZUMAB)),
            ((IRINOTECAN, FLUOROURACIL, LEUCOVORIN), (IRINOTECAN, FLUOROURACIL, LEUCOVORIN, BEVACIZUMAB)),
            ((CETUXIMAB, IRINOTECAN), (CAPECITABINE,)),
        ),
        ("msi_high", 0.05, 0.35, (PEMBROLIZUMAB,)),
    ),
    _Cancer(
        LUNG, 0.28, 0.52, 67, 1.05, 0.3, -0.05, CEA, math.log(4.0), 0.9,
        ((MET_BONE, 0.40), (MET_LIVER, 0.30), (MET_LUNG, 0.30)),
        (
            ((CARBOPLATIN, PEMETREXED, PEMBROLIZUMAB), (CARBOPLATIN, PACLITAXEL), (CISPLATIN, PEMETREXED)),
            ((DOCETAXEL,), (NIVOLUMAB,), (GEMCITABINE,)),
            ((GEMCITABINE,), (DOCETAXEL,)),
        ),
        ("egfr", 0.15, 0.35, (OSIMERTINIB,)),
    ),
    _Cancer(
        BREAST, 0.22, 0.01, 58, 0.55, -0.3, 0.15, CA153, math.log(25.0), 0.8,
        ((MET_BONE, 0.50), (MET_LUNG, 0.25), (MET_LIVER, 0.25)),
        (
            ((LETROZOLE, PALBOCICLIB), (TAMOXIFEN,), (DOXORUBICIN, CYCLOPHOSPHAMIDE)),
            ((ANASTROZOLE,), (CAPECITABINE,), (PACLITAXEL,)),
            ((CAPECITABINE,), (CARBOPLATIN, GEMCITABINE)),
        ),
        ("her2", 0.18, 0.25, (TRASTUZUMAB, DOCETAXEL)),
    ),
    _Cancer(
        PROSTATE, 0.14, 1.0, 68, 0.40, -0.3, 0.20, PSA, math.log(8.0), 1.4,
        ((MET_BONE, 0.80), (MET_LUNG, 0.10), (MET_LIVER, 0.10)),
        (
            ((LEUPROLIDE,), (LEUPROLIDE, ABIRATERONE)),
            ((LEUPROLIDE, ENZALUTAMIDE),),
            ((DOCETAXEL,),),
        ),
    ),
    _Cancer(
        PANCREAS, 0.14, 0.52, 68, 1.50, 0.5, -0.15, CA199, math.log(150.0), 1.2,
        ((MET_LIVER, 0.75), (MET_LUNG, 0.20), (MET_BONE, 0.05)),
        (
            ((OXALIPLATIN, IRINOTECAN, FLUOROURACIL, LEUCOVORIN), (GEMCITABINE, PACLITAXEL)),
            ((GEMCITABINE,), (FLUOROURACIL, LEUCOVORIN)),
            ((CAPECITABINE,),),
        ),
    ),
)
_ONC_CUM = list(np.cumsum([c.weight for c in _ONCOLOGY]))
_ONC_MET_CODES = (MET_LUNG, MET_BONE, MET_LIVER)
_PRE_COMORBIDITIES = ((HTN, 0.35), (T2DM, 0.15), (HLD, 0.30))

# dynamics constants (oncology)
_ONC_DEATH0, _ONC_DEATH_B, _ONC_DEATH_R = 0.16, 0.9, 4.0  # hazard/yr = D0 * exp(B*burden + R*(0.7 - reserve))
_ONC_PROG_DELTA = 0.55  # burden rise above the line's nadir that a restaging CT calls progression
_ONC_MET_RATE = 0.35  # metastasis hazard/yr per unit propensity at burden 0.5
_ONC_LINE_DECAY = 0.65  # each later line keeps this fraction of the sensitivity


def _sim_oncology(i: int, seed: int, buf: _Buffer) -> None:
    R = _Draws([seed, 1, i])
    T, C, V = buf.t, buf.c, buf.v
    LT, L = buf.lat_t, buf.lat
    n_ev0, n_lat0 = len(T), len(LT)
    cid = _CODE_ID

    def emit(t: float, code: str, v: float = NAN) -> None:
        T.append(t)
        C.append(cid[code])
        V.append(v)

    cancer = _ONCOLOGY[R.pick_cum(_ONC_CUM)]
    male = R.u() < cancer.male
    age = _clip(cancer.age + 10.0 * R.z(), 40.0, 85.0)
    t_dx = math.floor(FIRST_INDEX_DAY + R.u() * (LAST_INDEX_DAY - FIRST_INDEX_DAY)) + (9.0 + 7.0 * R.u()) * HOUR
    birth = math.floor(t_dx - age * YEAR)
    hist_start = max(1.0, t_dx - (2.0 + 4.5 * R.u()) * YEAR)
    follow_end = min(END_DAY - 1.0, t_dx + 30.0 + R.expo(12.0 * YEAR))

    # hidden state at diagnosis
    g = max(0.05, cancer.growth + 0.35 * R.z())
    b = cancer.burden + 0.7 * R.z()
    r = _clip(0.90 - 0.006 * (age - 60.0) - 0.08 * max(b, 0.0) + 0.12 * R.z(), 0.25, 1.0)
    s = _clip(0.5 + cancer.sens + 0.22 * R.z(), 0.02, 0.98)
    special = cancer.special is not None and R.u() < cancer.special[1]
    if special:
        s = min(0.98, s + cancer.special[2])
    hgb0 = 14.2 if male else 13.0
    met_w = {code: w for code, w in cancer.mets}

    def labs(t: float, b: float, r: float, on: float, marker_p: float, hgb_p: float, alb_p: float) -> None:
        if R.u() < marker_p:
            emit(t, cancer.marker, math.exp(cancer.marker_log0 + cancer.marker_slope * b + 0.3 * R.z()))
        if R.u() < hgb_p:
            emit(t, HGB, max(6.0, hgb0 - 3.0 * (0.9 - r) - 0.4 * on + 0.6 * R.z()))
        if R.u() < alb_p:
            emit(t, ALB, max(1.5, 4.3 - 1.6 * (0.9 - r) - 0.1 * max(b, 0.0) + 0.25 * R.z()))

    def ecog(t: float, r: float) -> None:
        emit(t, ECOG, float(round(_clip(4.2 * (1.0 - r) - 0.3 + 0.45 * R.z(), 0.0, 4.0))))

    def latent(t: float, b: float, r: float, on: float) -> None:
        LT.append(t)
        L.append((b, g, r, s, on, 0.0))

    emit(birth, BIRTH)
    emit(birth, MALE if male else FEMALE)

    # --- pre-diagnosis history: routine primary care, the tumour occult and growing
    g_pre = max(g, 0.3)
    onset = {code: hist_start + R.u() * (t_dx - hist_start) for code, p in _PRE_COMORBIDITIES if R.u() < p}
    known: set[str] = set()
    t = hist_start + R.u() * 90.0
    workup = t_dx - 14.0 - 26.0 * R.u()
    while t < workup - 20.0:
        tv = math.floor(t) + (8.0 + 8.0 * R.u()) * HOUR
        yrs_before = (t_dx - tv) / YEAR
        bt, rt = b - g_pre * yrs_before, min(1.0, r + 0.02 * yrs_before)
        emit(tv, VISIT_OP)
        for code, t_on in onset.items():
            if t_on <= tv and (code not in known or R.u() < 0.3):
                known.add(code)
                emit(tv, code)
        labs(tv + 20 * MINUTE, bt, rt, 0.0, 0.03, 0.7, 0.35)
        latent(tv, bt, rt, 0.0)
        t += 60.0 + R.expo(120.0)

    # --- work-up: imaging with labs, then biopsy, then the diagnosis
    bt = b - g_pre * (t_dx - workup) / YEAR
    emit(workup, VISIT_OP)
    labs(workup + 20 * MINUTE, bt, r, 0.0, 0.6, 0.9, 0.6)
    emit(workup + HOUR, CT_ABD)
    latent(workup, bt, r, 0.0)
    t_bx = t_dx - 1.0 - 9.0 * R.u()  # the work-up is >= 14 days before the diagnosis
    emit(t_bx, VISIT_OP)
    emit(t_bx, BIOPSY)
    emit(t_dx, VISIT_OP)
    emit(t_dx, cancer.dx)
    mets: set[str] = set()
    for code in _ONC_MET_CODES:
        if R.u() < met_w[code] * _sigmoid(2.0 * (b - 0.8)):
            mets.add(code)
            emit(t_dx, code)
    ecog(t_dx, r)
    labs(t_dx + 20 * MINUTE, b, r, 0.0, 0.8, 0.8, 0.6)
    latent(t_dx, b, r, 0.0)

    # --- after diagnosis: visits, therapy lines, restaging, outcomes
    line = 0
    line_start = 0.0
    s_line = 0.0
    regimen: tuple[str, ...] = ()
    on_tx = False
    nadir = b
    last_ct = workup
    pending_line = t_dx + 14.0 + 28.0 * R.u() if (r > 0.35 or R.u() < 0.3) else math.inf
    t_prev = t_dx + HOUR
    while True:
        # next scheduled visit
        if on_tx and t_prev - line_start < 180.0:
            gap = 28.0 + 14.0 * R.u()
        elif on_tx:
            gap = 56.0 + 42.0 * R.u()
        else:
            gap = _clip(120.0 * math.exp(-0.4 * b), 28.0, 180.0) * (0.6 + 0.8 * R.u())
        t_next = max(t_prev + MINUTE, min(t_prev + gap, pending_line))
        # death clock over the interval, with the state at its start
        eff = s_line * (0.6 + g) * math.exp(-(t_prev - line_start) / YEAR / (0.4 + 0.8 * s_line)) if on_tx else 0.0
        hazard = _ONC_DEATH0 * math.exp(_ONC_DEATH_B * b + _ONC_DEATH_R * (0.7 - r))
        t_death = t_prev + R.clock(hazard)
        if t_death <= min(t_next, follow_end):
            if R.u() < 0.5 and t_death - 1.0 > t_prev:
                emit(t_death - 1.0 - 4.0 * R.u() * min(1.0, (t_death - t_prev - 1.0) / 5.0), VISIT_IP)
            emit(t_death, DEATH)
            latent(t_death, b, r, float(on_tx))
            break
        if t_next > follow_end:
            break
        # evolve the hidden state to the visit
        dt = (t_next - t_prev) / YEAR
        sq = math.sqrt(dt)
        b += (g - eff) * dt + 0.25 * sq * R.z()
        r = _clip(r + (-0.04 - 0.12 * max(b, 0.0) - 0.04 * on_tx) * dt + 0.05 * sq * R.z(), 0.02, 1.0)
        t = math.floor(t_next) + (8.0 + 8.0 * R.u()) * HOUR
        if t < t_prev:
            t = t_prev + MINUTE
        emit(t, VISIT_IP if R.u() < 0.02 + 0.5 * _sigmoid(2.0 * (b - 2.5) + 6.0 * (0.4 - r)) else VISIT_OP)
        if pending_line <= t_next + 1.0:  # the line starts at this visit
            line += 1
            pending_line = math.inf
            on_tx = True
            line_start = t
            nadir = min(nadir, b)
            if line == 1 and special:
                regimen = cancer.special[3]
                s_line = s
            else:
                regimen = R.pick(cancer.regimens[min(line, len(cancer.regimens)) - 1])
                s_line = s * _ONC_LINE_DECAY ** (line - 1)
            emit(t, LINE_CODES[line - 1])
            for drug in regimen:
                emit(t, drug)
        elif on_tx and R.u() < 0.7:
            for drug in regimen:
                emit(t + HOUR, drug)
        if R.u() < 0.6:
            ecog(t, r)
        labs(t + 20 * MINUTE, b, r, float(on_tx), 0.8, 0.75, 0.4)
        # restaging CT: progression (RECIST-like rise above the nadir) and new metastases
        if t - last_ct >= 70.0 and R.u() < 0.85:
            t_ct = t + 2.0 * HOUR
            emit(t_ct, CT_ABD)
            dt_ct = (t - last_ct) / YEAR
            last_ct = t
            for code in _ONC_MET_CODES:
                if code not in mets and R.u() < 1.0 - math.exp(
                    -_ONC_MET_RATE * met_w[code] * math.exp(b - 0.5) * dt_ct
                ):
                    mets.add(code)
                    emit(t_ct, code)
                    if code == MET_BONE and R.u() < 0.6:
                        emit(t_ct + HOUR, RADIATION)
            if b - nadir > _ONC_PROG_DELTA + 0.1 * R.z():
                emit(t_ct, PROGRESSION)
                if R.u() < 0.2:
                    emit(t_ct + HOUR, BIOPSY)
                nadir = b
                if line < MAX_LINES and r > 0.4 and R.u() < 0.8:
                    pending_line = t + 7.0 + 21.0 * R.u()
                else:
                    on_tx = False
                    s_line = 0.0
            else:
                nadir = min(nadir, b)
        latent(t, b, r, float(on_tx))
        t_prev = t + 4.0 * HOUR  # after the visit's last event (labs, drugs, CT, radiation)

    buf.counts.append(len(T) - n_ev0)
    buf.lat_counts.append(len(LT) - n_lat0)


# ------------------------------------------------------------------------------------------------------------- PE
_DOACS = ((APIXABAN, 0.45), (RIVAROXABAN, 0.25), (WARFARIN, 0.20), (ENOXAPARIN, 0.10))
_DOAC_CUM = list(np.cumsum([w for _, w in _DOACS]))
_PE_MAX_STUDIES = 4

# dynamics constants (PE)
_PE_DEATH0, _PE_DEATH_B, _PE_DEATH_R, _PE_DEATH_CLOT = 0.03, 0.9, 3.5, 4.0
_PE_EPISODE0 = 0.30  # suspected-PE episodes per year at burden 0
_PE_PH0, _PE_PH_RESIDUAL = 0.012, 1.6
_PE_ADMIT0 = 0.08  # background admissions per year at burden 0, reserve 0.6


def _sim_pe(i: int, seed: int, buf: _Buffer) -> None:
    R = _Draws([seed, 2, i])
    T, C, V = buf.t, buf.c, buf.v
    LT, L = buf.lat_t, buf.lat
    n_ev0, n_lat0 = len(T), len(LT)
    cid = _CODE_ID

    def emit(t: float, code: str, v: float = NAN) -> None:
        T.append(t)
        C.append(cid[code])
        V.append(v)

    age = _clip(62.0 + 13.0 * R.z(), 40.0, 85.0)
    male = R.u() < 0.45
    t0 = math.floor(FIRST_INDEX_DAY + R.u() * (LAST_INDEX_DAY - FIRST_INDEX_DAY)) + (7.0 + 14.0 * R.u()) * HOUR
    birth = math.floor(t0 - age * YEAR)
    hist_start = max(1.0, t0 - (2.0 + 5.0 * R.u()) * YEAR)
    follow_end = min(END_DAY - 1.0, t0 + 20.0 + R.expo(10.0 * YEAR))

    has = {
        HTN: R.u() < _sigmoid(-0.6 + 0.05 * (age - 60.0)),
        COPD: R.u() < _sigmoid(-2.0 + 0.03 * (age - 60.0)),
        HF: R.u() < _sigmoid(-2.2 + 0.04 * (age - 60.0)),
        CANCER: R.u() < 0.20,
    }
    onset = {code: hist_start + 0.9 * R.u() * (t0 - hist_start) for code, v in has.items() if v}
    cancer, hf, copd = float(has[CANCER]), float(has[HF]), float(has[COPD])
    b = -0.9 + 0.7 * copd + 0.9 * hf + 1.0 * cancer + 0.2 * has[HTN] + 0.02 * (age - 60.0) + 0.4 * R.z()
    g = max(-0.3, 0.05 + 0.30 * cancer + 0.10 * hf + 0.05 * copd + 0.6 * R.z())
    r = _clip(0.88 - 0.005 * (age - 60.0) - 0.10 * hf - 0.08 * copd - 0.05 * cancer + 0.08 * R.z(), 0.2, 1.0)
    s = _clip(0.7 + 0.2 * R.z(), 0.05, 1.0)

    # clot: load at the last PE, residue after resolution, decay rate under anticoagulation
    clot0 = 0.0
    residual = 0.0
    t_pe = -math.inf

    def clot_at(t: float) -> float:
        if clot0 == 0.0:
            return 0.0
        return residual + (clot0 - residual) * math.exp(-12.0 * s * (t - t_pe) / YEAR)

    def latent(t: float, b: float, r: float, on: float) -> None:
        LT.append(t)
        L.append((b, g, r, s, on, clot_at(t)))

    def chronic_labs(t: float, b: float, r: float, p_cr: float, p_bnp: float) -> None:
        if R.u() < p_cr:
            emit(t, CREATININE, 0.8 * math.exp(0.7 * (0.8 - r) + 0.08 * max(b, 0.0) + 0.12 * R.z()))
        if R.u() < p_bnp:
            emit(t, BNP, 60.0 * math.exp(0.8 * b + 1.0 * hf + 0.6 * clot_at(t) + 0.5 * R.z()))

    def problem_list(t: float, p_repeat: float) -> None:
        for code, t_on in onset.items():
            if t_on <= t and (code not in known or R.u() < p_repeat):
                known.add(code)
                emit(t, code)

    emit(birth, BIRTH)
    emit(birth, MALE if male else FEMALE)

    # --- history before the first study
    known: set[str] = set()
    t = hist_start + R.u() * 60.0
    while t < t0 - 20.0:
        tv = math.floor(t) + (8.0 + 8.0 * R.u()) * HOUR
        bt = b - g * (t0 - tv) / YEAR
        rt = min(1.0, r + 0.02 * (t0 - tv) / YEAR)
        emit(tv, VISIT_OP)
        problem_list(tv, 0.3)
        chronic_labs(tv + 20 * MINUTE, bt, rt, 0.6, 0.1 + 0.5 * hf)
        latent(tv, bt, rt, 0.0)
        t += 30.0 + R.expo(80.0)
    for code, t_on in onset.items():  # anything diagnosed after the last routine visit is on the list at the study
        onset[code] = min(t_on, t0)

    # --- follow-up: suspected-PE episodes, visits and outcomes as competing clocks
    n_studies = 0
    n_pe = 0
    anticoag_until = -math.inf
    doac = APIXABAN
    pending_visit = math.inf  # scheduled follow-up visit
    pending_admit = math.inf  # scheduled (re)admission
    has_ph = False
    t_prev = t0
    next_routine = math.inf
    episode_now = True
    while True:
        if episode_now:
            t = t_prev
            kind = "episode"
        else:
            on = float(t_prev < anticoag_until)
            c_now = clot_at(t_prev)
            recent = 1.0 if t_prev - t_pe < YEAR else 0.0
            soon = t_prev + MINUTE  # scheduled events that fell inside a hospital stay happen right after it
            clocks = [
                (max(next_routine, soon), "routine"),
                (max(pending_visit, soon), "followup"),
                (max(pending_admit, soon), "admit"),
                (t_prev + R.clock(_PE_DEATH0 * math.exp(_PE_DEATH_B * b + _PE_DEATH_R * (0.7 - r))
                                  + _PE_DEATH_CLOT * c_now * (1.0 - 0.5 * on)), "death"),
                (t_prev + R.clock(_PE_ADMIT0 * math.exp(0.7 * b + 2.0 * (0.6 - r))), "admit"),
            ]
            if n_studies < _PE_MAX_STUDIES:
                clocks.append((t_prev + R.clock(_PE_EPISODE0 * math.exp(0.6 * b) * (1.0 + 2.0 * recent)), "episode"))
            if not has_ph:
                clocks.append((t_prev + R.clock(_PE_PH0 * math.exp(0.9 * b) + _PE_PH_RESIDUAL * residual
                                                + 0.6 * c_now), "ph"))
            if not hf:
                clocks.append((t_prev + R.clock(0.02 * math.exp(0.8 * b)), "hf"))
            t, kind = min(clocks)
            if t > follow_end:
                break
            dt = (t - t_prev) / YEAR
            sq = math.sqrt(dt)
            b += g * dt + 0.15 * sq * R.z()
            r = _clip(r + (-0.02 - 0.06 * max(b, 0.0) - 0.2 * max(g, 0.0)) * dt + 0.04 * sq * R.z(), 0.02, 1.0)
            if kind == "death":
                emit(t, DEATH)
                latent(t, b, r, float(t < anticoag_until))
                break
            if kind in ("routine", "followup", "ph", "hf"):  # office hours
                t = max(t_prev + MINUTE, math.floor(t) + (8.0 + 8.0 * R.u()) * HOUR)
                if t > follow_end:
                    break
        episode_now = False

        if kind == "episode":
            n_studies += 1
            setting = R.u()
            if setting < 0.12 and t - 1.0 > t_prev:  # already in hospital
                emit(t - 1.0, VISIT_IP)
                inpatient = True
            else:
                emit(t, VISIT_ER if setting < 0.80 else VISIT_OP)
                inpatient = False
            pe = R.u() < _sigmoid(-1.7 + 0.8 * cancer + 0.35 * b + 0.9 * (n_pe > 0) + 0.4 * inpatient)
            if pe:
                n_pe += 1
                clot0 = max(0.2, math.exp(0.5 * R.z()))
                residual = clot0 * (1.0 - s) * 0.5
                t_pe = t
            c_now = clot_at(t)
            tl = t + 30 * MINUTE
            if R.u() < 0.85:
                dd = math.log(2500.0) + 0.4 * c_now if pe else math.log(500.0) + 0.25 * b + 0.5 * cancer
                emit(tl, DDIMER, min(20000.0, math.exp(dd + 0.45 * R.z())))
            if R.u() < 0.75:
                emit(tl, TROPONIN, 0.01 * math.exp(0.8 * c_now + 0.5 * max(b, 0.0) + 1.5 * (0.7 - r) + 0.5 * R.z()))
            chronic_labs(tl, b, r, 0.9, 0.7)
            t_ct = t + 2.0 * HOUR
            emit(t_ct, CTPA)
            admitted = inpatient or R.u() < (
                _sigmoid(0.8 + 1.0 * c_now + 2.0 * (0.6 - r)) if pe else _sigmoid(-1.3 + 0.7 * b + 3.0 * (0.6 - r))
            )
            if admitted and not inpatient:
                emit(t_ct, VISIT_IP)  # same instant as the study: the index stay is no readmission
            discharge = t_ct + (1.0 + R.expo(2.0 + 2.0 * c_now + 4.0 * max(0.0, 0.7 - r)) if admitted else 0.2)
            if pe:
                emit(t_ct + HOUR, PE_DX)
                doac = ENOXAPARIN if cancer and R.u() < 0.6 else _DOACS[R.pick_cum(_DOAC_CUM)][0]
                if admitted:
                    emit(t_ct + 2.0 * HOUR, ENOXAPARIN)
                    if doac != ENOXAPARIN and discharge <= follow_end:
                        emit(discharge, doac)
                else:
                    emit(t_ct + 2.0 * HOUR, doac)
                indefinite = cancer or n_pe > 1
                anticoag_until = max(anticoag_until, t + (10.0 * YEAR if indefinite else 90.0 + 275.0 * R.u()))
            latent(t_ct, b, r, float(t < anticoag_until))
            # return to hospital within 30 days of the study
            p_back = _sigmoid(-2.6 + 0.6 * b + 3.0 * (0.6 - r) + 0.6 * c_now + 0.4 * cancer + 0.4 * admitted)
            if R.u() < p_back:
                pending_admit = min(pending_admit, discharge + 1.0 + R.u() * max(1.0, t_ct + 29.0 - discharge))
            pending_visit = discharge + 7.0 + 14.0 * R.u()
            next_routine = pending_visit + 60.0 + R.expo(60.0)
            t_prev = max(t_ct + 2.0 * HOUR, discharge if admitted else t_ct)
            continue

        if kind == "admit":
            pending_admit = math.inf if t >= pending_admit else pending_admit
            emit(t, VISIT_IP)
            tl = t + 30 * MINUTE
            if R.u() < 0.6:
                emit(tl, TROPONIN, 0.01 * math.exp(0.8 * clot_at(t) + 0.5 * max(b, 0.0) + 1.5 * (0.7 - r)
                                                  + 0.5 * R.z()))
            chronic_labs(tl, b, r, 0.95, 0.6)
            problem_list(t, 0.5)
            if t < anticoag_until and R.u() < 0.5:
                emit(t + HOUR, doac)
            latent(t, b, r, float(t < anticoag_until))
            t_prev = t + 1.0 + R.expo(3.0)  # length of stay
            next_routine = min(next_routine, t_prev + 10.0 + 20.0 * R.u())
            continue

        # an office visit: routine, scheduled follow-up, or one where PH / HF is diagnosed
        if kind == "followup":
            pending_visit = math.inf
        emit(t, VISIT_OP)
        if kind == "hf":
            hf = 1.0
            onset[HF] = t
        problem_list(t, 0.3)
        if kind == "ph":
            has_ph = True
            emit(t, PH)
        chronic_labs(t + 20 * MINUTE, b, r, 0.6, 0.2 + 0.5 * hf + 0.5 * (kind == "ph"))
        if t < anticoag_until and R.u() < 0.8:
            emit(t + HOUR, doac)
        latent(t, b, r, float(t < anticoag_until))
        if kind != "followup" or next_routine <= t:
            next_routine = t + _clip(120.0 * math.exp(-0.5 * b), 30.0, 180.0) * (0.6 + 0.8 * R.u())
        t_prev = t + 2.0 * HOUR  # after the visit's last event

    buf.counts.append(len(T) - n_ev0)
    buf.lat_counts.append(len(LT) - n_lat0)


_SIMULATORS = {"oncology": _sim_oncology, "pe": _sim_pe}


# ------------------------------------------------------------------------------------------------------ generate
def _to_time(days: np.ndarray) -> np.ndarray:
    """Float days since EPOCH -> datetime64[us], rounded to the minute."""
    minutes = np.round(np.asarray(days, dtype=np.float64) * 1440.0).astype(np.int64)
    return EPOCH + (minutes * 60_000_000).astype("timedelta64[us]")


def generate(
    profile: str, n_subjects: int, seed: int, id_start: int | None = None, *, start: int = 0
) -> SyntheticCohort:
    """Generate ``n_subjects`` synthetic subjects of ``profile`` ("oncology" or "pe"): subjects ``start`` ..
    ``start + n_subjects - 1`` of the cohort (``start`` > 0 yields a later chunk of a larger cohort, identical to the
    same subjects generated in one call).

    Returns the MEDS events (columns ``subject_id, time, code, numeric_value, text_value, table, unit``; sorted by
    subject then time, birth first) and the hidden per-visit state. ``subject_id`` = ``id_start + i`` with
    ``id_start`` defaulting to :data:`DEFAULT_ID_START` ``[profile]``. Same arguments, same result.
    """
    if profile not in _SIMULATORS:
        raise ValueError(f"unknown synthetic profile {profile!r}; allowed profiles: {', '.join(map(repr, PROFILES))}")
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) or n_subjects <= 0:
        raise ValueError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if id_start is None:
        id_start = DEFAULT_ID_START[profile]
    if id_start < 0:
        raise ValueError(f"id_start must be >= 0, got {id_start!r}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")

    sim = _SIMULATORS[profile]
    buf = _Buffer()
    for i in range(int(start), int(start) + int(n_subjects)):
        sim(i, int(seed), buf)

    ids = np.int64(id_start) + np.arange(start, start + n_subjects, dtype=np.int64)
    sid = np.repeat(ids, buf.counts)
    t_days = np.asarray(buf.t, dtype=np.float64)
    times = _to_time(t_days)
    order = np.lexsort((times.view(np.int64), sid))  # stable: ties keep emission order (birth before gender)
    code_idx = np.asarray(buf.c, dtype=np.int32)[order]
    n = len(order)
    events = pd.DataFrame(
        {
            "subject_id": sid[order],
            "time": times[order],
            "code": _CODE_ARR[code_idx],
            "numeric_value": np.asarray(buf.v, dtype=np.float32)[order],
            "text_value": pd.Series(np.full(n, None, dtype=object), dtype=object),
            "table": _TABLE_ARR[code_idx],
            "unit": pd.Series(_UNIT_ARR[code_idx], dtype=object),
        }
    )

    lat_sid = np.repeat(ids, buf.lat_counts)
    lat_times = _to_time(np.asarray(buf.lat_t, dtype=np.float64))
    lat_vals = np.asarray(buf.lat, dtype=np.float64).reshape(-1, len(LATENT_COLUMNS))
    lorder = np.lexsort((lat_times.view(np.int64), lat_sid))
    latent = pd.DataFrame({"subject_id": lat_sid[lorder], "time": lat_times[lorder]})
    for k, col in enumerate(LATENT_COLUMNS):
        latent[col] = lat_vals[lorder, k]
    return SyntheticCohort(events=events, latent=latent)


def iter_chunks(
    profile: str, n_subjects: int, seed: int, id_start: int | None = None, chunk_subjects: int = 2_500
) -> Iterator[SyntheticCohort]:
    """The cohort of :func:`generate` as consecutive chunks of at most ``chunk_subjects`` subjects (bounded memory)."""
    if isinstance(chunk_subjects, bool) or not isinstance(chunk_subjects, (int, np.integer)) or chunk_subjects <= 0:
        raise ValueError(f"chunk_subjects must be a positive integer, got {chunk_subjects!r}")
    for start in range(0, int(n_subjects), int(chunk_subjects)):
        yield generate(profile, min(int(chunk_subjects), int(n_subjects) - start), seed, id_start, start=start)


# ----------------------------------------------------------------------------------------------------- MEDS output
def _aligned(schema, table: pa.Table) -> pa.Table:
    out = schema.align(table)
    schema.validate(out)
    return out


def _prepare_dirs(out_dir: Path, *subdirs: str) -> None:
    """Create ``data/``, ``metadata/`` and the given sub-folders; remove stale ``*.parquet`` shards from the shard
    folders so no old shard survives a rewrite."""
    (out_dir / Path(meds.code_metadata_filepath).parent).mkdir(parents=True, exist_ok=True)
    for sub in (meds.data_subdirectory, *subdirs):
        d = out_dir / sub
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.parquet"):
            old.unlink()


def _ordered_columns(ev: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in MEDS_COLUMNS if c in ev.columns] + [c for c in ev.columns if c not in MEDS_COLUMNS]
    return ev[cols]


def _write_data_shard(part: pd.DataFrame, path: Path) -> None:
    """One shard of whole subjects, aligned to and validated with :class:`meds.DataSchema` (extra columns kept)."""
    table = _aligned(meds.DataSchema, pa.Table.from_pandas(part, preserve_index=False))
    pq.write_table(table, path)


def _write_code_metadata(data_codes, out_dir: Path) -> None:
    meta = code_metadata().set_index("code")
    data_codes = sorted(set(map(str, data_codes)))
    codes = pa.table(
        {
            "code": pa.array(data_codes, pa.string()),
            "description": pa.array([meta["description"].get(c) for c in data_codes], pa.string()),
            "parent_codes": pa.array(
                [list(meta["parent_codes"][c]) if c in meta.index else [] for c in data_codes],
                pa.list_(pa.string()),
            ),
        }
    )
    pq.write_table(_aligned(meds.CodeMetadataSchema, codes), out_dir / meds.code_metadata_filepath)


def _write_dataset_json(out_dir: Path, dataset_name: str, columns) -> None:
    try:
        from importlib.metadata import version

        etl_version = version("ehr-assets")
    except Exception:  # not installed as a distribution
        etl_version = None
    info = {
        "dataset_name": dataset_name,
        "dataset_version": "1.0",
        "etl_name": "ehr_assets.synthetic",
        "meds_version": getattr(meds, "__version__", None),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "code_modifier_columns": ["unit"] if "unit" in columns else [],
        "other_extension_columns": [c for c in columns if c not in MEDS_COLUMNS and c != "unit"],
    }
    if etl_version:
        info["etl_version"] = etl_version
    info = {k: v for k, v in info.items() if v is not None}
    meds.DatasetMetadataSchema.validate(info)
    (out_dir / meds.dataset_metadata_filepath).write_text(json.dumps(info, indent=2) + "\n")


def _write_splits(splits: pd.DataFrame, out_dir: Path) -> None:
    sp = splits[["subject_id", "split"]]
    dup = sp["subject_id"].duplicated()
    if dup.any():
        example = sp.loc[dup, "subject_id"].iloc[0]
        raise ValueError(f"splits list {int(dup.sum())} subject_id(s) more than once, e.g. {example}")
    table = pa.table(
        {
            "subject_id": pa.array(sp["subject_id"].to_numpy(dtype=np.int64), pa.int64()),
            "split": pa.array(sp["split"].astype(str).tolist(), pa.string()),
        }
    )
    pq.write_table(_aligned(meds.SubjectSplitSchema, table), out_dir / meds.subject_splits_filepath)


def write_meds_dataset(
    events: pd.DataFrame,
    splits: pd.DataFrame | None,
    out_dir: Path,
    dataset_name: str,
    *,
    subjects_per_shard: int = 10_000,
) -> None:
    """Write ``events`` as a MEDS dataset folder ``out_dir``.

    * ``data/<k>.parquet``: shards of whole subjects (each subject in exactly one shard), rows sorted by subject then
      time, aligned to and validated with :class:`meds.DataSchema` (extra columns such as ``table``/``unit`` kept).
      Existing ``data/*.parquet`` files in ``out_dir`` are removed first so no stale shard survives.
    * ``metadata/codes.parquet``: every code in the data, with description and parent codes
      (:class:`meds.CodeMetadataSchema`); codes unknown to the generator get a null description.
    * ``metadata/dataset.json``: :class:`meds.DatasetMetadataSchema`.
    * ``metadata/subject_splits.parquet`` when ``splits`` (``subject_id``, ``split``) is given
      (:class:`meds.SubjectSplitSchema`); a subject listed twice is an error.
    """
    out_dir = Path(out_dir)
    if subjects_per_shard <= 0:
        raise ValueError(f"subjects_per_shard must be positive, got {subjects_per_shard}")
    missing = [c for c in ("subject_id", "time", "code") if c not in events.columns]
    if missing:
        raise ValueError(f"events lack required MEDS column(s) {missing}")
    _prepare_dirs(out_dir)
    data_dir = out_dir / meds.data_subdirectory

    ev = _ordered_columns(events.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True))
    sids = ev["subject_id"].to_numpy()
    uniq = np.unique(sids)
    bounds = np.searchsorted(sids, uniq[::subjects_per_shard])
    bounds = np.append(bounds, len(ev))
    for k in range(len(bounds) - 1):
        _write_data_shard(ev.iloc[bounds[k] : bounds[k + 1]], data_dir / f"{k}.parquet")
    _write_code_metadata(pd.unique(ev["code"].astype(str)), out_dir)
    _write_dataset_json(out_dir, dataset_name, list(ev.columns))
    if splits is not None:
        _write_splits(splits, out_dir)


@dataclass
class DatasetStats:
    """What :func:`write_meds_dataset_chunked` wrote."""

    subjects: int = 0
    events: int = 0
    latent_rows: int = 0
    deaths: int = 0
    shards: int = 0
    codes: int = 0
    lifetime_years: float = 0.0  # sum over subjects of (last event - birth)
    record_years: float = 0.0  # sum over subjects of (last event - first event other than birth/gender)
    generate_s: float = 0.0
    write_s: float = 0.0


def _span_years(ev: pd.DataFrame) -> tuple[float, float]:
    """(lifetime, record) patient-years of a chunk sorted by subject then time (see :class:`DatasetStats`)."""
    sid = ev["subject_id"].to_numpy()
    t = ev["time"].to_numpy().view(np.int64)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    ends = np.r_[starts[1:], sid.size] - 1
    us_per_year = YEAR * DAY_US
    lifetime = float((t[ends] - t[starts]).sum()) / us_per_year
    clinical = (ev["table"] != "person").to_numpy() if "table" in ev.columns else np.ones(sid.size, bool)
    first = pd.Series(t[clinical]).groupby(sid[clinical]).min()
    last = pd.Series(t[ends], index=sid[starts])
    record = float((last.reindex(first.index) - first).sum()) / us_per_year
    return lifetime, record


def write_meds_dataset_chunked(
    chunks, out_dir: Path, dataset_name: str, splits: pd.DataFrame | None = None, *, latent: bool = True
) -> DatasetStats:
    """Stream :class:`SyntheticCohort` chunks (e.g. from :func:`iter_chunks`) into a MEDS dataset folder: one
    ``data/<k>.parquet`` shard per chunk (validated with :class:`meds.DataSchema`), and with ``latent`` the hidden
    state in ``latent/<k>.parquet`` (outside the MEDS layout: no model may read it). The metadata files are written
    after the last chunk, as in :func:`write_meds_dataset`. Only one chunk is in memory at a time."""
    out_dir = Path(out_dir)
    _prepare_dirs(out_dir, "latent") if latent else _prepare_dirs(out_dir)
    stats = DatasetStats()
    codes: set[str] = set()
    columns: list[str] = []
    it = iter(chunks)
    k = 0
    while True:
        t0 = _time.perf_counter()
        chunk = next(it, None)
        t1 = _time.perf_counter()
        stats.generate_s += t1 - t0
        if chunk is None:
            break
        ev = _ordered_columns(chunk.events)
        _write_data_shard(ev, out_dir / meds.data_subdirectory / f"{k}.parquet")
        if latent:
            pq.write_table(pa.Table.from_pandas(chunk.latent, preserve_index=False), out_dir / "latent" / f"{k}.parquet")
        columns = list(ev.columns)
        codes.update(pd.unique(ev["code"]).tolist())
        life, rec = _span_years(ev)
        stats.subjects += int(ev["subject_id"].nunique())
        stats.events += len(ev)
        stats.latent_rows += len(chunk.latent)
        stats.deaths += int((ev["code"] == meds.death_code).sum())
        stats.lifetime_years += life
        stats.record_years += rec
        stats.shards += 1
        k += 1
        del chunk, ev
        stats.write_s += _time.perf_counter() - t1
    t0 = _time.perf_counter()
    _write_code_metadata(codes, out_dir)
    _write_dataset_json(out_dir, dataset_name, columns)
    if splits is not None:
        _write_splits(splits, out_dir)
    stats.codes = len(codes)
    stats.write_s += _time.perf_counter() - t0
    return stats


def random_splits(subject_ids, seed: int, fractions=(0.7, 0.1, 0.2)) -> pd.DataFrame:
    """A seeded random train/tuning/held_out split of the unique ``subject_ids`` (default 70/10/20).

    The same algorithm as :func:`ehr_assets.cohort.assign_splits` (sorted ids, one seeded permutation), so a cohort's
    declared fractions and seed give the pipeline's split (tested)."""
    ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_tune = int(round(fractions[1] * len(ids)))
    split = np.empty(len(ids), dtype=object)
    split[perm[:n_train]] = meds.train_split
    split[perm[n_train : n_train + n_tune]] = meds.tuning_split
    split[perm[n_train + n_tune :]] = meds.held_out_split
    return pd.DataFrame({"subject_id": ids, "split": split})


# ------------------------------------------------------------------------------------------------------------ CLI
@dataclass(frozen=True)
class _Target:
    """What the CLI generates: a profile, its seed and id range, the split fractions/seed and a dataset name."""

    profile: str
    seed: int
    id_start: int | None
    fractions: tuple[float, float, float]
    split_seed: int
    name: str
    subjects: int | None  # the cohort's declared size (None for a bare profile)


def _resolve_target(name: str, seed: int | None, project_dir: Path | None) -> _Target:
    """A cohort name from ``cohorts/*.yaml`` (its synthetic source and splits), else a profile name."""
    from ..specs import default_project_dir, load_project

    project = load_project(project_dir or default_project_dir())
    if name in project.cohorts:
        spec = project.cohorts[name]
        where = project.root / "cohorts" / f"{name}.yaml"
        if spec.is_union:
            raise SystemExit(
                f"error: {where}: cohort {name!r} is the union of {', '.join(spec.union)}; generate each member, "
                f"e.g. python -m ehr_assets.synthetic {spec.union[0]} --subjects N --out DIR"
            )
        src = spec.source
        if getattr(src, "kind", None) != "synthetic":
            raise SystemExit(f"error: {where}: source.kind is {getattr(src, 'kind', None)!r}, not 'synthetic'; "
                             "only synthetic cohorts can be generated")
        sp = spec.splits
        return _Target(src.profile, src.seed if seed is None else seed, src.id_start,
                       (sp.train, sp.tuning, sp.held_out), sp.seed, f"synthetic_{name}", src.subjects)
    if name in PROFILES:
        s = 0 if seed is None else seed
        return _Target(name, s, None, (0.7, 0.1, 0.2), s, f"synthetic_{name}", None)
    raise SystemExit(
        f"error: {name!r} is neither a cohort of {project.root / 'cohorts'} ({', '.join(sorted(project.cohorts))}) "
        f"nor a synthetic profile ({', '.join(PROFILES)})"
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ehr_assets.synthetic", description="Write a synthetic MEDS dataset (see module docstring)."
    )
    p.add_argument("cohort", help="a cohort of cohorts/*.yaml (msk, inspect, ...) or a profile (oncology, pe)")
    p.add_argument("--subjects", type=int, default=None,
                   help="number of subjects (default: the cohort's declared size; 600 for a bare profile)")
    p.add_argument("--out", type=Path, required=True, help="output MEDS dataset folder")
    p.add_argument("--seed", type=int, default=None, help="override the random seed (default: the cohort's; 0)")
    p.add_argument("--chunk-subjects", type=int, default=2_500, help="subjects per chunk and shard (default 2500)")
    p.add_argument("--id-start", type=int, default=None, help="first subject_id (default: the cohort's / profile's)")
    p.add_argument("--name", default=None, help="dataset name (default synthetic_<cohort>)")
    p.add_argument("--project", type=Path, default=None, help="project folder with cohorts/ (default: this repo)")
    p.add_argument("--no-latent", action="store_true", help="do not write the hidden state (latent/)")
    args = p.parse_args(argv)
    if args.subjects is not None and args.subjects <= 0:
        p.error(f"--subjects must be a positive integer, got {args.subjects}")
    if args.chunk_subjects <= 0:
        p.error(f"--chunk-subjects must be a positive integer, got {args.chunk_subjects}")

    t0 = _time.perf_counter()
    target = _resolve_target(args.cohort, args.seed, args.project)
    n = args.subjects or target.subjects or 600
    id_start = args.id_start if args.id_start is not None else target.id_start
    first_id = DEFAULT_ID_START[target.profile] if id_start is None else id_start
    splits = random_splits(first_id + np.arange(n, dtype=np.int64), target.split_seed, target.fractions)
    chunks = iter_chunks(target.profile, n, target.seed, id_start, args.chunk_subjects)
    stats = write_meds_dataset_chunked(chunks, args.out, args.name or target.name, splits, latent=not args.no_latent)
    total = _time.perf_counter() - t0

    print(f"cohort={args.cohort} profile={target.profile} seed={target.seed} subjects={stats.subjects} "
          f"events={stats.events} events/subject={stats.events / max(stats.subjects, 1):.1f} codes={stats.codes} "
          f"deaths={stats.deaths} latent_rows={stats.latent_rows}")
    print(f"patient-years: lifetime (birth to last event) {stats.lifetime_years:,.0f}, "
          f"record (first clinical event to last) {stats.record_years:,.0f}")
    print("splits: " + ", ".join(f"{k}={v}" for k, v in splits["split"].value_counts().sort_index().items()))
    print(f"wrote {args.out} ({stats.shards} shard(s) of <= {args.chunk_subjects} subjects) | generate "
          f"{stats.generate_s:.2f}s, write {stats.write_s:.2f}s, total {total:.2f}s | peak RSS {peak_rss_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
