"""The oncology profile (MSK-like): one subject's story from routine primary care to death or loss to follow-up.

A primary cancer diagnosis (colon, lung, breast, prostate, pancreas; each with its own growth, stage, treatment
response, marker and metastatic pattern) preceded by 2-6.5 years of routine primary-care history and a work-up (CT,
biopsy). Line 1 starts 2-6 weeks after diagnosis; each line adds a treatment effect proportional to the subject's
sensitivity that wanes as resistance develops (later lines are weaker). Restaging CTs every ~3 months detect
progression (burden above the line's nadir by a noisy threshold, RECIST-like), which records ``SNOMED/444391001``
and triggers the next line if the subject is fit enough; metastases appear with a hazard rising with burden and are
recorded at imaging.

:func:`simulate_oncology` tells the story in four steps, each a method of :class:`_OncologySubject`: the subject
and its hidden state at diagnosis, the occult history, the work-up and diagnosis, then the treatment course (visits,
therapy lines, restaging and death as competing clocks). The order of random draws is part of the cohort's
definition: a change here changes every cohort generated with this profile.
"""

from __future__ import annotations

import math

from ..constants import DAYS_PER_YEAR
from .cancers import CANCER_CUM, CANCERS
from .codes import (
    ALB,
    BIOPSY,
    CT_ABD,
    DEATH,
    ECOG,
    HGB,
    HLD,
    HTN,
    LINE_CODES,
    MAX_LINES,
    MET_BONE,
    MET_LIVER,
    MET_LUNG,
    PROGRESSION,
    RADIATION,
    T2DM,
    VISIT_IP,
    VISIT_OP,
)
from .subject import (
    HOUR,
    MINUTE,
    Draws,
    EventBuffer,
    ProblemList,
    SubjectRecorder,
    clip,
    office_hours,
    routine_visits,
    sigmoid,
    start_subject,
)

_ONC_MET_CODES = (MET_LUNG, MET_BONE, MET_LIVER)
_PRE_COMORBIDITIES = ((HTN, 0.35), (T2DM, 0.15), (HLD, 0.30))

# dynamics constants (oncology)
_ONC_DEATH0, _ONC_DEATH_B, _ONC_DEATH_R = 0.16, 0.9, 4.0  # hazard/yr = D0 * exp(B*burden + R*(0.7 - reserve))
_ONC_PROG_DELTA = 0.55  # burden rise above the line's nadir that a restaging CT calls progression
_ONC_MET_RATE = 0.35  # metastasis hazard/yr per unit propensity at burden 0.5
_ONC_LINE_DECAY = 0.65  # each later line keeps this fraction of the sensitivity


def simulate_oncology(i: int, seed: int, buf: EventBuffer) -> None:
    """Subject ``i`` of an oncology cohort drawn with ``seed``: its events and hidden-state rows, appended to
    ``buf``."""
    subject = _OncologySubject(i, seed, buf)
    subject.history()
    subject.diagnosis()
    subject.treatment_course()
    subject.rec.close()


class _OncologySubject:
    """One oncology subject: the hidden state (``b`` burden, ``g`` growth rate, ``r`` reserve, ``s`` sensitivity)
    and the treatment bookkeeping, advanced step by step by the methods below."""

    def __init__(self, i: int, seed: int, buf: EventBuffer) -> None:
        """The cancer, the subject (sex, age, the diagnosis time, the record window) and the hidden state at
        diagnosis."""
        rnd = self.rnd = Draws([seed, 1, i])
        self.rec = SubjectRecorder(buf)
        self.emit = self.rec.emit
        cancer = self.cancer = CANCERS[rnd.pick_cum(CANCER_CUM)]
        self.base = start_subject(
            rnd,
            self.rec,
            p_male=cancer.male,
            age_mean=cancer.age,
            age_sd=10.0,
            index_hour=9.0,
            index_hours=7.0,
            history_years=4.5,
            follow_min_days=30.0,
            follow_mean_years=12.0,
        )
        age = self.base.age
        self.g = max(0.05, cancer.growth + 0.35 * rnd.z())
        self.b = b = cancer.burden + 0.7 * rnd.z()
        self.r = clip(0.90 - 0.006 * (age - 60.0) - 0.08 * max(b, 0.0) + 0.12 * rnd.z(), 0.25, 1.0)
        s = clip(0.5 + cancer.sens + 0.22 * rnd.z(), 0.02, 0.98)
        self.special = cancer.special is not None and rnd.u() < cancer.special[1]
        if self.special:
            s = min(0.98, s + cancer.special[2])
        self.s = s
        self.hgb0 = 14.2 if self.base.male else 13.0
        self.met_w = {code: w for code, w in cancer.mets}
        self.mets: set[str] = set()
        self.line = 0
        self.line_start = 0.0
        self.s_line = 0.0
        self.regimen: tuple[str, ...] = ()
        self.on_tx = False
        self.pending_line = math.inf  # when the next line starts
        self.nadir = b  # the burden's lowest value since the current line started
        self.workup = math.nan  # the work-up day, drawn with the history
        self.last_ct = math.nan  # the day of the last CT

    # ------------------------------------------------------------------------------------- what a visit records
    def labs(self, t: float, b: float, r: float, on: float, marker_p: float, hgb_p: float, alb_p: float) -> None:
        """The tumour marker, haemoglobin and albumin, each drawn with its probability."""
        rnd, emit, cancer = self.rnd, self.emit, self.cancer
        if rnd.u() < marker_p:
            emit(t, cancer.marker, math.exp(cancer.marker_log0 + cancer.marker_slope * b + 0.3 * rnd.z()))
        if rnd.u() < hgb_p:
            emit(t, HGB, max(6.0, self.hgb0 - 3.0 * (0.9 - r) - 0.4 * on + 0.6 * rnd.z()))
        if rnd.u() < alb_p:
            emit(t, ALB, max(1.5, 4.3 - 1.6 * (0.9 - r) - 0.1 * max(b, 0.0) + 0.25 * rnd.z()))

    def ecog(self, t: float, r: float) -> None:
        """The ECOG performance status, worse as reserve falls."""
        self.emit(t, ECOG, float(round(clip(4.2 * (1.0 - r) - 0.3 + 0.45 * self.rnd.z(), 0.0, 4.0))))

    def latent(self, t: float, b: float, r: float, on: float) -> None:
        """A hidden-state row (no clot load in this profile)."""
        self.rec.latent(t, b, self.g, r, self.s, on, 0.0)

    # ------------------------------------------------------------------------------------------------ the story
    def history(self) -> None:
        """Before the diagnosis: routine primary care (comorbidities, labs) while the tumour is occult and growing
        (its burden back-extrapolated along the growth rate, at least 0.3 per year); fixes the work-up day."""
        rnd, emit = self.rnd, self.emit
        t_dx, hist_start = self.base.index_day, self.base.history_start
        b, r = self.b, self.r
        g_pre = max(self.g, 0.3)
        onset = {code: hist_start + rnd.u() * (t_dx - hist_start) for code, p in _PRE_COMORBIDITIES if rnd.u() < p}
        problems = ProblemList(onset)
        first = hist_start + rnd.u() * 90.0
        self.workup = t_dx - 14.0 - 26.0 * rnd.u()
        for tv in routine_visits(rnd, first, self.workup - 20.0, 60.0, 120.0):
            yrs_before = (t_dx - tv) / DAYS_PER_YEAR
            bt, rt = b - g_pre * yrs_before, min(1.0, r + 0.02 * yrs_before)
            emit(tv, VISIT_OP)
            problems.record(rnd, self.rec, tv, 0.3)
            self.labs(tv + 20 * MINUTE, bt, rt, 0.0, 0.03, 0.7, 0.35)
            self.latent(tv, bt, rt, 0.0)

    def diagnosis(self) -> None:
        """The work-up (imaging with labs), the biopsy, then the diagnosis with the metastases found at staging."""
        rnd, emit = self.rnd, self.emit
        t_dx, workup = self.base.index_day, self.workup
        b, r = self.b, self.r
        bt = b - max(self.g, 0.3) * (t_dx - workup) / DAYS_PER_YEAR
        emit(workup, VISIT_OP)
        self.labs(workup + 20 * MINUTE, bt, r, 0.0, 0.6, 0.9, 0.6)
        emit(workup + HOUR, CT_ABD)
        self.latent(workup, bt, r, 0.0)
        t_bx = t_dx - 1.0 - 9.0 * rnd.u()  # the work-up is >= 14 days before the diagnosis
        emit(t_bx, VISIT_OP)
        emit(t_bx, BIOPSY)
        emit(t_dx, VISIT_OP)
        emit(t_dx, self.cancer.dx)
        for code in _ONC_MET_CODES:
            if rnd.u() < self.met_w[code] * sigmoid(2.0 * (b - 0.8)):
                self.mets.add(code)
                emit(t_dx, code)
        self.ecog(t_dx, r)
        self.labs(t_dx + 20 * MINUTE, b, r, 0.0, 0.8, 0.8, 0.6)
        self.latent(t_dx, b, r, 0.0)

    def treatment_course(self) -> None:
        """After the diagnosis: visits until death or the end of follow-up. Line 1 is planned 2-6 weeks after the
        diagnosis for a fit subject (reserve > 0.35) and for 30 % of the others."""
        rnd = self.rnd
        t_dx, follow_end = self.base.index_day, self.base.follow_end
        self.nadir = self.b
        self.last_ct = self.workup
        self.pending_line = t_dx + 14.0 + 28.0 * rnd.u() if (self.r > 0.35 or rnd.u() < 0.3) else math.inf
        t_prev = t_dx + HOUR
        while True:
            t_next = max(t_prev + MINUTE, min(t_prev + self.visit_gap(t_prev), self.pending_line))
            if self.dies(t_prev, min(t_next, follow_end)):
                break
            if t_next > follow_end:
                break
            t = self.visit(t_prev, t_next)
            t_prev = t + 4.0 * HOUR  # after the visit's last event (labs, drugs, CT, radiation)

    def visit_gap(self, t_prev: float) -> float:
        """Days to the next scheduled visit: every 4-6 weeks in a line's first 180 days, every 8-14 weeks later in
        a line, off treatment more often as burden rises."""
        if self.on_tx and t_prev - self.line_start < 180.0:
            return 28.0 + 14.0 * self.rnd.u()
        if self.on_tx:
            return 56.0 + 42.0 * self.rnd.u()
        return clip(120.0 * math.exp(-0.4 * self.b), 28.0, 180.0) * (0.6 + 0.8 * self.rnd.u())

    def dies(self, t_prev: float, horizon: float) -> bool:
        """The death clock over the interval, with the state at its start: when it rings before ``horizon``, record
        the death (half the time after a terminal admission) and say so."""
        rnd, emit = self.rnd, self.emit
        hazard = _ONC_DEATH0 * math.exp(_ONC_DEATH_B * self.b + _ONC_DEATH_R * (0.7 - self.r))
        t_death = t_prev + rnd.clock(hazard)
        if t_death > horizon:
            return False
        if rnd.u() < 0.5 and t_death - 1.0 > t_prev:
            emit(t_death - 1.0 - 4.0 * rnd.u() * min(1.0, (t_death - t_prev - 1.0) / 5.0), VISIT_IP)
        emit(t_death, DEATH)
        self.latent(t_death, self.b, self.r, float(self.on_tx))
        return True

    def evolve(self, t_prev: float, t_next: float) -> None:
        """One Euler step of the hidden state from ``t_prev`` to ``t_next``: the burden grows at ``g`` less the
        line's waning treatment effect; reserve falls with burden and treatment."""
        eff = 0.0
        if self.on_tx:
            waning = math.exp(-(t_prev - self.line_start) / DAYS_PER_YEAR / (0.4 + 0.8 * self.s_line))
            eff = self.s_line * (0.6 + self.g) * waning
        dt = (t_next - t_prev) / DAYS_PER_YEAR
        sq = math.sqrt(dt)
        self.b = b = self.b + ((self.g - eff) * dt + 0.25 * sq * self.rnd.z())
        self.r = clip(
            self.r + (-0.04 - 0.12 * max(b, 0.0) - 0.04 * self.on_tx) * dt + 0.05 * sq * self.rnd.z(), 0.02, 1.0
        )

    def visit(self, t_prev: float, t_next: float) -> float:
        """A visit on the day of ``t_next``: the state evolved to it, the encounter (an admission more likely as
        burden rises and reserve falls), a line start or the current regimen, ECOG, labs, restaging; its time."""
        rnd, emit = self.rnd, self.emit
        self.evolve(t_prev, t_next)
        b, r = self.b, self.r
        t = office_hours(rnd, t_next)
        if t < t_prev:
            t = t_prev + MINUTE
        emit(t, VISIT_IP if rnd.u() < 0.02 + 0.5 * sigmoid(2.0 * (b - 2.5) + 6.0 * (0.4 - r)) else VISIT_OP)
        if self.pending_line <= t_next + 1.0:  # the line starts at this visit
            self.start_line(t)
        elif self.on_tx and rnd.u() < 0.7:
            for drug in self.regimen:
                emit(t + HOUR, drug)
        if rnd.u() < 0.6:
            self.ecog(t, r)
        self.labs(t + 20 * MINUTE, b, r, float(self.on_tx), 0.8, 0.75, 0.4)
        if t - self.last_ct >= 70.0 and rnd.u() < 0.85:
            self.restage(t)
        self.latent(t, b, r, float(self.on_tx))
        return t

    def start_line(self, t: float) -> None:
        """The next line of therapy starts at ``t``: line 1 of a subject with the cancer's special subtype gets its
        targeted drugs at full sensitivity, any other line a regimen of its line with decayed sensitivity."""
        self.line += 1
        line = self.line
        self.pending_line = math.inf
        self.on_tx = True
        self.line_start = t
        self.nadir = min(self.nadir, self.b)
        if line == 1 and self.special:
            self.regimen = self.cancer.special[3]
            self.s_line = self.s
        else:
            self.regimen = self.rnd.pick(self.cancer.regimens[min(line, len(self.cancer.regimens)) - 1])
            self.s_line = self.s * _ONC_LINE_DECAY ** (line - 1)
        self.emit(t, LINE_CODES[line - 1])
        for drug in self.regimen:
            self.emit(t, drug)

    def restage(self, t: float) -> None:
        """A restaging CT after the visit at ``t``: new metastases (hazard rising with burden over the time since
        the last CT), then progression (RECIST-like rise above the nadir) or a new nadir."""
        rnd, emit = self.rnd, self.emit
        b = self.b
        t_ct = t + 2.0 * HOUR
        emit(t_ct, CT_ABD)
        dt_ct = (t - self.last_ct) / DAYS_PER_YEAR
        self.last_ct = t
        for code in _ONC_MET_CODES:
            if code not in self.mets and rnd.u() < 1.0 - math.exp(
                -_ONC_MET_RATE * self.met_w[code] * math.exp(b - 0.5) * dt_ct
            ):
                self.mets.add(code)
                emit(t_ct, code)
                if code == MET_BONE and rnd.u() < 0.6:
                    emit(t_ct + HOUR, RADIATION)
        if b - self.nadir > _ONC_PROG_DELTA + 0.1 * rnd.z():
            self.progress(t, t_ct)
        else:
            self.nadir = min(self.nadir, b)

    def progress(self, t: float, t_ct: float) -> None:
        """Progression found at the CT ``t_ct``: record it (sometimes with a biopsy) and plan the next line 1-4
        weeks later if lines remain and the subject is fit enough, else stop treatment."""
        rnd = self.rnd
        self.emit(t_ct, PROGRESSION)
        if rnd.u() < 0.2:
            self.emit(t_ct + HOUR, BIOPSY)
        self.nadir = self.b
        if self.line < MAX_LINES and self.r > 0.4 and rnd.u() < 0.8:
            self.pending_line = t + 7.0 + 21.0 * rnd.u()
        else:
            self.on_tx = False
            self.s_line = 0.0
