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

Time: the data window is 2008-01-01 .. 2024-12-31; follow-up ends at death or at a random loss-to-follow-up date
(never after 2024-12-31, no event after ``MEDS_DEATH``). Birth and gender rows carry the birth time.

Where things live
-----------------
* :mod:`.codes` -- the code registry (code, table, unit, description, parents) and :func:`code_metadata`;
* :mod:`.subject` -- what both simulators share: the time axis, the seeded draws, the event buffer, and the
  preamble of every subject (sex, age, birth, the index time, the record window, routine visits, the problem list);
* :mod:`.oncology`, :mod:`.pe` -- one simulator each, told as the steps of the disease story;
* :mod:`.generator` -- :func:`generate` and :func:`iter_chunks` (determinism and chunking);
* :mod:`.writer` -- the MEDS dataset folder (:func:`write_meds_dataset`, :func:`write_meds_dataset_chunked`) and
  :func:`random_splits`;
* :mod:`.cli` -- ``python -m ehr_assets.synthetic <cohort|profile> --subjects N --out DIR`` (:func:`main`).

The package imports neither torch nor dagster; it reads the project's YAML only in the CLI (``ehr_assets.specs``).
"""

from .cli import main
from .codes import code_metadata
from .generator import DEFAULT_ID_START, PROFILES, SyntheticCohort, generate, iter_chunks
from .subject import LATENT_COLUMNS
from .writer import DatasetStats, random_splits, write_meds_dataset, write_meds_dataset_chunked

__all__ = [
    "DEFAULT_ID_START",
    "LATENT_COLUMNS",
    "PROFILES",
    "DatasetStats",
    "SyntheticCohort",
    "code_metadata",
    "generate",
    "iter_chunks",
    "main",
    "random_splits",
    "write_meds_dataset",
    "write_meds_dataset_chunked",
]
