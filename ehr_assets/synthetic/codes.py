"""The code registry: every code the simulators can emit, with its table (the event's OMOP-style category, which
the SMB-v1 serialization reads), unit, description and parent codes.

Codes are registered in a fixed order at import; that order is the row order of :func:`code_metadata` and the
integer code ids the simulators append to the event buffer (:data:`CODE_ID`), which :func:`ehr_assets.synthetic.
generator.generate` maps back to strings through :data:`CODE_ARR`, :data:`TABLE_ARR` and :data:`UNIT_ARR`.
"""

from __future__ import annotations

import meds
import numpy as np
import pandas as pd

# code -> (table, unit, description, parent_codes)
_REGISTRY: dict[str, tuple[str, str | None, str, list[str]]] = {}


def _reg(code: str, table: str, description: str, unit: str | None = None, parents: list[str] | None = None) -> str:
    if parents is None:
        parents = [code.rsplit(".", 1)[0]] if code.startswith("ICD10/") and "." in code else []
    _REGISTRY[code] = (table, unit, description, parents)
    return code


def _rx(cui: int, name: str) -> str:
    return _reg(f"RXNORM/{cui}", "drug_exposure", name)


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

CODES: list[str] = list(_REGISTRY)
"""Every registered code, in registration order (a code's index is its id)."""
CODE_ID: dict[str, int] = {c: i for i, c in enumerate(CODES)}
"""Code -> integer id, as the simulators store codes in the event buffer."""
CODE_ARR = np.array(CODES, dtype=object)
"""Code id -> code string."""
TABLE_ARR = np.array([_REGISTRY[c][0] for c in CODES], dtype=object)
"""Code id -> the event's table (``person``, ``condition``, ``measurement``, ...)."""
UNIT_ARR = np.array([_REGISTRY[c][1] for c in CODES], dtype=object)
"""Code id -> unit (None for codes without a value)."""


def code_metadata() -> pd.DataFrame:
    """Every code the generator can emit: code, description, parent_codes, table, unit."""
    return pd.DataFrame(
        {
            "code": CODES,
            "description": [_REGISTRY[c][2] for c in CODES],
            "parent_codes": [list(_REGISTRY[c][3]) for c in CODES],
            "table": [_REGISTRY[c][0] for c in CODES],
            "unit": [_REGISTRY[c][1] for c in CODES],
        }
    )
