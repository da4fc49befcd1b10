"""What every simulated subject shares, whatever its profile: the time axis, the random draws, the buffer its rows go
to, and the preamble of its story (sex, age, birth, the index time, the history window and the end of follow-up,
routine office visits and the problem list).

Times are simulated as float days since :data:`EPOCH` and rounded to the minute only when a chunk becomes a
DataFrame (:func:`ehr_assets.synthetic.generator.generate`).

Random draws: subject ``i`` of a profile owns one seeded numpy Generator (:class:`Draws`), read through two
pre-drawn buffers, one of uniforms and one of standard normals, each refilled from the Generator when used up. The
uniform and the normal streams are independent sequences, so a subject's output depends on the order of draws
*within* each stream (and on when refills happen), not on how ``u()`` and ``z()`` calls interleave while both
buffers are far from a refill. :func:`start_subject` relies on this: the two simulators drew sex and age in
opposite orders, and it draws them in one order for both without changing either cohort.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..constants import DAYS_PER_YEAR
from .codes import BIRTH, CODE_ID, FEMALE, MALE

# ------------------------------------------------------------------------------------------------------- time axis
EPOCH = np.datetime64("2008-01-01T00:00:00", "us")
"""Day 0 of the simulation."""
END_DAY = float((np.datetime64("2024-12-31") - np.datetime64("2008-01-01")).astype(int))  # last allowed instant
FIRST_INDEX_DAY = float((np.datetime64("2010-06-01") - np.datetime64("2008-01-01")).astype(int))
LAST_INDEX_DAY = float((np.datetime64("2024-06-30") - np.datetime64("2008-01-01")).astype(int))
HOUR = 1.0 / 24.0
MINUTE = HOUR / 60.0
NAN = float("nan")

LATENT_COLUMNS = ["burden", "growth_rate", "reserve", "treatment_sensitivity", "on_treatment", "clot_load"]
"""The hidden state's columns, in the order of :meth:`SubjectRecorder.latent`'s arguments."""


# --------------------------------------------------------------------------------------------------- random draws
class Draws:
    """Fast scalar draws for one subject from pre-drawn buffers of a seeded numpy Generator."""

    __slots__ = ("_iu", "_iz", "_u", "_z", "gen")
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
        return -math.log(1.0 - self.u()) * DAYS_PER_YEAR / rate_per_year

    def pick(self, options: tuple | list):
        """One of ``options``, uniformly."""
        return options[int(self.u() * len(options))]

    def pick_cum(self, cum: list[float]) -> int:
        """Index drawn from cumulative weights ``cum`` (last entry = total)."""
        return bisect_right(cum, self.u() * cum[-1])


def sigmoid(x: float) -> float:
    """The logistic function."""
    return 1.0 / (1.0 + math.exp(-x))


def clip(x: float, lo: float, hi: float) -> float:
    """``x`` limited to ``[lo, hi]``."""
    return lo if x < lo else hi if x > hi else x


# ----------------------------------------------------------------------------------------------------- the buffer
class EventBuffer:
    """Flat per-column lists for the events and latent rows of all subjects of a chunk."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.counts: list[int] = []
        self.lat_t: list[float] = []
        self.lat: list[tuple[float, ...]] = []
        self.lat_counts: list[int] = []


class SubjectRecorder:
    """One subject's rows in an :class:`EventBuffer`: events by :attr:`emit`, hidden-state rows by :meth:`latent`;
    :meth:`close` records how many of each the subject added."""

    __slots__ = ("_buf", "_lat", "_lat_t", "_n_ev0", "_n_lat0", "emit")

    def __init__(self, buf: EventBuffer) -> None:
        self._buf = buf
        self._n_ev0, self._n_lat0 = len(buf.t), len(buf.lat_t)
        self._lat_t, self._lat = buf.lat_t.append, buf.lat.append
        add_t, add_c, add_v, code_id = buf.t.append, buf.c.append, buf.v.append, CODE_ID

        def emit(t: float, code: str, v: float = NAN) -> None:
            """An event: ``code`` at day ``t`` with numeric value ``v``."""
            add_t(t)
            add_c(code_id[code])
            add_v(v)

        # a closure rather than a method: the simulators call it for every event, and a closure over the lists'
        # append methods is the cheapest call Python offers
        self.emit = emit

    def latent(
        self, t: float, burden: float, growth_rate: float, reserve: float, sensitivity: float, on: float, clot: float
    ) -> None:
        """A row of the hidden state at day ``t`` (the columns of :data:`LATENT_COLUMNS`)."""
        self._lat_t(t)
        self._lat((burden, growth_rate, reserve, sensitivity, on, clot))

    def close(self) -> None:
        """The subject is complete: count its events and latent rows."""
        self._buf.counts.append(len(self._buf.t) - self._n_ev0)
        self._buf.lat_counts.append(len(self._buf.lat_t) - self._n_lat0)


# ------------------------------------------------------------------------------------------------ the preamble
@dataclass(frozen=True)
class Baseline:
    """Who a subject is and the window their record covers (days since :data:`EPOCH`)."""

    male: bool
    age: float  # at the index time
    index_day: float  # the index event: the cancer diagnosis, the first CT pulmonary angiography
    birth: float
    history_start: float  # the first routine visit is shortly after this
    follow_end: float  # loss to follow-up (death may come first)


def start_subject(
    rnd: Draws,
    rec: SubjectRecorder,
    *,
    p_male: float,
    age_mean: float,
    age_sd: float,
    index_hour: float,
    index_hours: float,
    history_years: float,
    follow_min_days: float,
    follow_mean_years: float,
) -> Baseline:
    """Draw a subject's sex, age (40-85) and index time (a day between 2010-06-01 and 2024-06-30, at a time
    between ``index_hour`` and ``index_hour + index_hours``); the history starts 2 to ``2 + history_years`` years
    before the index (never before the data window), follow-up ends ``follow_min_days`` plus an exponential time with
    mean ``follow_mean_years`` after it (never after 2024-12-30). Records the birth and gender rows."""
    male = rnd.u() < p_male
    age = clip(age_mean + age_sd * rnd.z(), 40.0, 85.0)
    index_day = (
        math.floor(FIRST_INDEX_DAY + rnd.u() * (LAST_INDEX_DAY - FIRST_INDEX_DAY))
        + (index_hour + index_hours * rnd.u()) * HOUR
    )
    birth = math.floor(index_day - age * DAYS_PER_YEAR)
    history_start = max(1.0, index_day - (2.0 + history_years * rnd.u()) * DAYS_PER_YEAR)
    follow_end = min(END_DAY - 1.0, index_day + follow_min_days + rnd.expo(follow_mean_years * DAYS_PER_YEAR))
    rec.emit(birth, BIRTH)
    rec.emit(birth, MALE if male else FEMALE)
    return Baseline(male, age, index_day, birth, history_start, follow_end)


def office_hours(rnd: Draws, day: float) -> float:
    """A time between 08:00 and 16:00 on the day of ``day``."""
    return math.floor(day) + (8.0 + 8.0 * rnd.u()) * HOUR


def routine_visits(rnd: Draws, first: float, until: float, gap_days: float, extra_gap_mean: float) -> Iterator[float]:
    """Routine office visits before the index: the first on the day of ``first``, then every ``gap_days`` plus an
    exponential time with mean ``extra_gap_mean`` while before ``until``. The visit time is drawn when the visit is
    reached, the next gap after the caller has recorded the visit, so the draws keep the visits' order."""
    t = first
    while t < until:
        yield office_hours(rnd, t)
        t += gap_days + rnd.expo(extra_gap_mean)


class ProblemList:
    """Chronic conditions and their onset days; a visit records those with onset at or before it: each the first
    time it is seen, and again with probability ``p_repeat``."""

    __slots__ = ("known", "onset")

    def __init__(self, onset: dict[str, float]) -> None:
        self.onset = onset
        self.known: set[str] = set()

    def record(self, rnd: Draws, rec: SubjectRecorder, t: float, p_repeat: float) -> None:
        """Record the problem list at a visit at day ``t``."""
        for code, t_on in self.onset.items():
            if t_on <= t and (code not in self.known or rnd.u() < p_repeat):
                self.known.add(code)
                rec.emit(t, code)
