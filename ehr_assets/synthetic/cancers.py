"""The five primary cancers of the oncology profile (colon, lung, breast, prostate, pancreas): each with its share
of the cohort, sex ratio and age, untreated growth, stage at diagnosis, treatment response, tumour marker, metastatic
pattern and regimens per line, and for three of them a subtype with a targeted first line (MSI-high colon, EGFR lung,
HER2 breast). :mod:`.oncology` draws a subject's cancer from :data:`CANCER_CUM` and follows its parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .codes import (
    ABIRATERONE,
    ANASTROZOLE,
    BEVACIZUMAB,
    BREAST,
    CA153,
    CA199,
    CAPECITABINE,
    CARBOPLATIN,
    CEA,
    CETUXIMAB,
    CISPLATIN,
    COLON,
    CYCLOPHOSPHAMIDE,
    DOCETAXEL,
    DOXORUBICIN,
    ENZALUTAMIDE,
    FLUOROURACIL,
    GEMCITABINE,
    IRINOTECAN,
    LETROZOLE,
    LEUCOVORIN,
    LEUPROLIDE,
    LUNG,
    MET_BONE,
    MET_LIVER,
    MET_LUNG,
    NIVOLUMAB,
    OSIMERTINIB,
    OXALIPLATIN,
    PACLITAXEL,
    PALBOCICLIB,
    PANCREAS,
    PEMBROLIZUMAB,
    PEMETREXED,
    PROSTATE,
    PSA,
    TAMOXIFEN,
    TRASTUZUMAB,
)


@dataclass(frozen=True)
class Cancer:
    """A primary cancer of the oncology profile: its share of the cohort, who has it, how it grows and responds,
    its marker, where it spreads and how it is treated."""

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


# fmt: off
CANCERS = (  # one row per cancer, in the order of the draw
    Cancer(
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
    Cancer(
        LUNG, 0.28, 0.52, 67, 1.05, 0.3, -0.05, CEA, math.log(4.0), 0.9,
        ((MET_BONE, 0.40), (MET_LIVER, 0.30), (MET_LUNG, 0.30)),
        (
            ((CARBOPLATIN, PEMETREXED, PEMBROLIZUMAB), (CARBOPLATIN, PACLITAXEL), (CISPLATIN, PEMETREXED)),
            ((DOCETAXEL,), (NIVOLUMAB,), (GEMCITABINE,)),
            ((GEMCITABINE,), (DOCETAXEL,)),
        ),
        ("egfr", 0.15, 0.35, (OSIMERTINIB,)),
    ),
    Cancer(
        BREAST, 0.22, 0.01, 58, 0.55, -0.3, 0.15, CA153, math.log(25.0), 0.8,
        ((MET_BONE, 0.50), (MET_LUNG, 0.25), (MET_LIVER, 0.25)),
        (
            ((LETROZOLE, PALBOCICLIB), (TAMOXIFEN,), (DOXORUBICIN, CYCLOPHOSPHAMIDE)),
            ((ANASTROZOLE,), (CAPECITABINE,), (PACLITAXEL,)),
            ((CAPECITABINE,), (CARBOPLATIN, GEMCITABINE)),
        ),
        ("her2", 0.18, 0.25, (TRASTUZUMAB, DOCETAXEL)),
    ),
    Cancer(
        PROSTATE, 0.14, 1.0, 68, 0.40, -0.3, 0.20, PSA, math.log(8.0), 1.4,
        ((MET_BONE, 0.80), (MET_LUNG, 0.10), (MET_LIVER, 0.10)),
        (
            ((LEUPROLIDE,), (LEUPROLIDE, ABIRATERONE)),
            ((LEUPROLIDE, ENZALUTAMIDE),),
            ((DOCETAXEL,),),
        ),
    ),
    Cancer(
        PANCREAS, 0.14, 0.52, 68, 1.50, 0.5, -0.15, CA199, math.log(150.0), 1.2,
        ((MET_LIVER, 0.75), (MET_LUNG, 0.20), (MET_BONE, 0.05)),
        (
            ((OXALIPLATIN, IRINOTECAN, FLUOROURACIL, LEUCOVORIN), (GEMCITABINE, PACLITAXEL)),
            ((GEMCITABINE,), (FLUOROURACIL, LEUCOVORIN)),
            ((CAPECITABINE,),),
        ),
    ),
)
# fmt: on
CANCER_CUM = list(np.cumsum([c.weight for c in CANCERS]))
"""Cumulative weights of :data:`CANCERS`, for :meth:`~.subject.Draws.pick_cum`."""
