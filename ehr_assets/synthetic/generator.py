"""Cohorts from the simulators: :func:`generate` runs a profile's simulator for a range of subjects and turns the
flat event buffer into MEDS events and the hidden-state table; :func:`iter_chunks` streams a large cohort.

Determinism: subject ``i`` draws from ``numpy.random.default_rng([seed, profile, i])``, so a cohort is a pure function
of ``(profile, n_subjects, seed, id_start)`` and the first ``k`` subjects of a larger cohort equal a ``k``-subject
cohort (up to ``subject_id`` when ``id_start`` differs); ``generate(..., start=s)`` makes subjects ``s, s+1, ...``
exactly as a larger cohort would, which is how :func:`iter_chunks` streams a big cohort in bounded memory.
Per-subject draws are taken from pre-drawn numpy buffers so that the per-subject Python loop stays lean; columns are
built as flat lists and become a DataFrame once per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .codes import CODE_ARR, TABLE_ARR, UNIT_ARR
from .oncology import simulate_oncology
from .pe import simulate_pe
from .subject import EPOCH, LATENT_COLUMNS, EventBuffer

DEFAULT_ID_START = {"oncology": 1_000_000, "pe": 2_000_000}
"""The first ``subject_id`` of each profile, unless a cohort declares its own ``id_start``."""
PROFILES = tuple(DEFAULT_ID_START)
_SIMULATORS = {"oncology": simulate_oncology, "pe": simulate_pe}


@dataclass
class SyntheticCohort:
    """A generated cohort: MEDS ``events`` and the hidden ``latent`` state (one row per visit / time step)."""

    events: pd.DataFrame
    latent: pd.DataFrame


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
    id_start = _checked_arguments(profile, n_subjects, seed, id_start, start)
    sim = _SIMULATORS[profile]
    buf = EventBuffer()
    for i in range(int(start), int(start) + int(n_subjects)):
        sim(i, int(seed), buf)
    ids = np.int64(id_start) + np.arange(start, start + n_subjects, dtype=np.int64)
    return SyntheticCohort(events=_events_frame(buf, ids), latent=_latent_frame(buf, ids))


def iter_chunks(
    profile: str, n_subjects: int, seed: int, id_start: int | None = None, chunk_subjects: int = 2_500
) -> Iterator[SyntheticCohort]:
    """The cohort of :func:`generate` as consecutive chunks of at most ``chunk_subjects`` subjects (bounded memory)."""
    if isinstance(chunk_subjects, bool) or not isinstance(chunk_subjects, (int, np.integer)) or chunk_subjects <= 0:
        raise ValueError(f"chunk_subjects must be a positive integer, got {chunk_subjects!r}")
    for start in range(0, int(n_subjects), int(chunk_subjects)):
        yield generate(profile, min(int(chunk_subjects), int(n_subjects) - start), seed, id_start, start=start)


def _checked_arguments(profile: str, n_subjects: int, seed: int, id_start: int | None, start: int) -> int:
    """Raise a ValueError for an unknown profile or a bad count, seed, id_start or start; the first subject_id."""
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
    return id_start


def _to_time(days: np.ndarray) -> np.ndarray:
    """Float days since EPOCH -> datetime64[us], rounded to the minute."""
    minutes = np.round(np.asarray(days, dtype=np.float64) * 1440.0).astype(np.int64)
    return EPOCH + (minutes * 60_000_000).astype("timedelta64[us]")


def _events_frame(buf: EventBuffer, ids: np.ndarray) -> pd.DataFrame:
    """The buffer's events as a MEDS frame (with ``table`` and ``unit``), sorted by subject then time."""
    sid = np.repeat(ids, buf.counts)
    times = _to_time(np.asarray(buf.t, dtype=np.float64))
    order = np.lexsort((times.view(np.int64), sid))  # stable: ties keep emission order (birth before gender)
    code_idx = np.asarray(buf.c, dtype=np.int32)[order]
    n = len(order)
    return pd.DataFrame(
        {
            "subject_id": sid[order],
            "time": times[order],
            "code": CODE_ARR[code_idx],
            "numeric_value": np.asarray(buf.v, dtype=np.float32)[order],
            "text_value": pd.Series(np.full(n, None, dtype=object), dtype=object),
            "table": TABLE_ARR[code_idx],
            "unit": pd.Series(UNIT_ARR[code_idx], dtype=object),
        }
    )


def _latent_frame(buf: EventBuffer, ids: np.ndarray) -> pd.DataFrame:
    """The buffer's hidden-state rows (``subject_id``, ``time``, :data:`LATENT_COLUMNS`), sorted by subject then
    time."""
    lat_sid = np.repeat(ids, buf.lat_counts)
    lat_times = _to_time(np.asarray(buf.lat_t, dtype=np.float64))
    lat_vals = np.asarray(buf.lat, dtype=np.float64).reshape(-1, len(LATENT_COLUMNS))
    lorder = np.lexsort((lat_times.view(np.int64), lat_sid))
    latent = pd.DataFrame({"subject_id": lat_sid[lorder], "time": lat_times[lorder]})
    for k, col in enumerate(LATENT_COLUMNS):
        latent[col] = lat_vals[lorder, k]
    return latent
