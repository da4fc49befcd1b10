"""The pulmonary-embolism profile (INSPECT-like): one subject's story from the first suspected PE to death or loss to
follow-up.

2-7 years of history (hypertension, COPD, heart failure, cancer, creatinine/BNP) before a first CT pulmonary
angiography (``CPT4/71275``, the decision event); later suspected-PE episodes recur with a hazard rising with burden
and after a PE (at most 4 studies). Each episode: emergency or outpatient encounter, D-dimer, troponin, BNP and
creatinine, the CT study, admission (``Visit/IP`` at the study time, so only *later* admissions count as
readmissions), a PE diagnosis when positive and anticoagulation (enoxaparin in hospital, then a DOAC or warfarin).
Readmission, death (with an acute clot term), heart failure and pulmonary hypertension follow the state.

:func:`simulate_pe` tells the story in steps, each a method of :class:`_PESubject`: the subject, its comorbidities
and hidden state, the history before the first study, then the follow-up, where the next event is the first of
competing clocks (routine and scheduled visits, admissions, episodes, PH and HF diagnoses, death) and each kind of
event has its own method. The order of random draws is part of the cohort's definition: a change here changes every
cohort generated with this profile.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import DAYS_PER_YEAR
from .codes import (
    APIXABAN,
    BNP,
    CANCER,
    COPD,
    CREATININE,
    CTPA,
    DDIMER,
    DEATH,
    ENOXAPARIN,
    HF,
    HTN,
    PE_DX,
    PH,
    RIVAROXABAN,
    TROPONIN,
    VISIT_ER,
    VISIT_IP,
    VISIT_OP,
    WARFARIN,
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

_DOACS = ((APIXABAN, 0.45), (RIVAROXABAN, 0.25), (WARFARIN, 0.20), (ENOXAPARIN, 0.10))
_DOAC_CUM = list(np.cumsum([w for _, w in _DOACS]))
_PE_MAX_STUDIES = 4

# dynamics constants (PE)
_PE_DEATH0, _PE_DEATH_B, _PE_DEATH_R, _PE_DEATH_CLOT = 0.03, 0.9, 3.5, 4.0
_PE_EPISODE0 = 0.30  # suspected-PE episodes per year at burden 0
_PE_PH0, _PE_PH_RESIDUAL = 0.012, 1.6
_PE_ADMIT0 = 0.08  # background admissions per year at burden 0, reserve 0.6
_OFFICE_KINDS = ("routine", "followup", "ph", "hf")  # events that happen in office hours


def simulate_pe(i: int, seed: int, buf: EventBuffer) -> None:
    """Subject ``i`` of a PE cohort drawn with ``seed``: its events and hidden-state rows, appended to ``buf``."""
    subject = _PESubject(i, seed, buf)
    subject.history()
    subject.follow_up()
    subject.rec.close()


class _PESubject:
    """One PE subject: the hidden state (``b`` burden, ``g`` growth rate, ``r`` reserve, ``s`` sensitivity, the
    clot), the comorbidities and the follow-up bookkeeping, advanced step by step by the methods below."""

    def __init__(self, i: int, seed: int, buf: EventBuffer) -> None:
        """The subject (sex, age, the first study's time, the record window), comorbidities with their onsets, and
        the hidden state at the first study."""
        rnd = self.rnd = Draws([seed, 2, i])
        self.rec = SubjectRecorder(buf)
        self.emit = self.rec.emit
        self.base = start_subject(
            rnd,
            self.rec,
            p_male=0.45,
            age_mean=62.0,
            age_sd=13.0,
            index_hour=7.0,
            index_hours=14.0,
            history_years=5.0,
            follow_min_days=20.0,
            follow_mean_years=10.0,
        )
        age, t0, hist_start = self.base.age, self.base.index_day, self.base.history_start
        has = {
            HTN: rnd.u() < sigmoid(-0.6 + 0.05 * (age - 60.0)),
            COPD: rnd.u() < sigmoid(-2.0 + 0.03 * (age - 60.0)),
            HF: rnd.u() < sigmoid(-2.2 + 0.04 * (age - 60.0)),
            CANCER: rnd.u() < 0.20,
        }
        self.problems = ProblemList(
            {code: hist_start + 0.9 * rnd.u() * (t0 - hist_start) for code, v in has.items() if v}
        )
        cancer, hf, copd = float(has[CANCER]), float(has[HF]), float(has[COPD])
        self.cancer, self.hf = cancer, hf  # hf becomes 1.0 when heart failure is diagnosed later
        self.b = -0.9 + 0.7 * copd + 0.9 * hf + 1.0 * cancer + 0.2 * has[HTN] + 0.02 * (age - 60.0) + 0.4 * rnd.z()
        self.g = max(-0.3, 0.05 + 0.30 * cancer + 0.10 * hf + 0.05 * copd + 0.6 * rnd.z())
        self.r = clip(0.88 - 0.005 * (age - 60.0) - 0.10 * hf - 0.08 * copd - 0.05 * cancer + 0.08 * rnd.z(), 0.2, 1.0)
        self.s = clip(0.7 + 0.2 * rnd.z(), 0.05, 1.0)
        # the clot: load at the last PE, residue after resolution, time of the last PE (see clot_at)
        self.clot0 = 0.0
        self.residual = 0.0
        self.t_pe = -math.inf
        # follow-up bookkeeping
        self.n_studies = 0
        self.n_pe = 0
        self.anticoag_until = -math.inf
        self.doac = APIXABAN
        self.pending_visit = math.inf  # scheduled follow-up visit
        self.pending_admit = math.inf  # scheduled (re)admission
        self.next_routine = math.inf
        self.has_ph = False
        self.t_prev = t0

    # ------------------------------------------------------------------------------------- what a visit records
    def clot_at(self, t: float) -> float:
        """The clot load at day ``t``: it decays from the last PE's load to its residue."""
        if self.clot0 == 0.0:
            return 0.0
        return self.residual + (self.clot0 - self.residual) * math.exp(-12.0 * self.s * (t - self.t_pe) / DAYS_PER_YEAR)

    def latent(self, t: float, b: float, r: float, on: float) -> None:
        """A hidden-state row, with the clot load at ``t``."""
        self.rec.latent(t, b, self.g, r, self.s, on, self.clot_at(t))

    def chronic_labs(self, t: float, b: float, r: float, p_cr: float, p_bnp: float) -> None:
        """Creatinine (rises as reserve falls) and BNP (rises with burden, heart failure and clot), each drawn with
        its probability."""
        rnd, emit = self.rnd, self.emit
        if rnd.u() < p_cr:
            emit(t, CREATININE, 0.8 * math.exp(0.7 * (0.8 - r) + 0.08 * max(b, 0.0) + 0.12 * rnd.z()))
        if rnd.u() < p_bnp:
            emit(t, BNP, 60.0 * math.exp(0.8 * b + 1.0 * self.hf + 0.6 * self.clot_at(t) + 0.5 * rnd.z()))

    def troponin(self, t: float, clot: float) -> None:
        """Troponin, rising with the clot load and burden and as reserve falls."""
        value = 0.01 * math.exp(0.8 * clot + 0.5 * max(self.b, 0.0) + 1.5 * (0.7 - self.r) + 0.5 * self.rnd.z())
        self.emit(t, TROPONIN, value)

    def anticoagulant_at(self, t: float, p: float) -> None:
        """While anticoagulated, the current drug at ``t`` plus an hour, recorded with probability ``p``."""
        if t < self.anticoag_until and self.rnd.u() < p:
            self.emit(t + HOUR, self.doac)

    # ------------------------------------------------------------------------------------------------ the story
    def history(self) -> None:
        """Before the first study: routine visits with the problem list and chronic labs, the state
        back-extrapolated along the growth rate; whatever is diagnosed after the last routine visit is on the list
        at the study."""
        b, r, g, t0 = self.b, self.r, self.g, self.base.index_day
        first = self.base.history_start + self.rnd.u() * 60.0
        for tv in routine_visits(self.rnd, first, t0 - 20.0, 30.0, 80.0):
            bt = b - g * (t0 - tv) / DAYS_PER_YEAR
            rt = min(1.0, r + 0.02 * (t0 - tv) / DAYS_PER_YEAR)
            self.emit(tv, VISIT_OP)
            self.problems.record(self.rnd, self.rec, tv, 0.3)
            self.chronic_labs(tv + 20 * MINUTE, bt, rt, 0.6, 0.1 + 0.5 * self.hf)
            self.latent(tv, bt, rt, 0.0)
        onset = self.problems.onset
        for code, t_on in onset.items():
            onset[code] = min(t_on, t0)

    def follow_up(self) -> None:
        """From the first study (the index event) on: one event after another until death or the end of
        follow-up."""
        t, kind = self.base.index_day, "episode"
        while True:
            if kind == "episode":
                self.episode(t)
            elif kind == "admit":
                self.admission(t)
            else:
                self.office_visit(t, kind)
            event = self.next_event()
            if event is None:
                break
            t, kind = event

    def clocks(self) -> list[tuple[float, str]]:
        """The competing clocks after the last event: scheduled visits and admissions, and the hazards of death,
        admission, a new episode, pulmonary hypertension and heart failure (state at the last event)."""
        rnd, b, r, t_prev = self.rnd, self.b, self.r, self.t_prev
        on = float(t_prev < self.anticoag_until)
        c_now = self.clot_at(t_prev)
        recent = 1.0 if t_prev - self.t_pe < DAYS_PER_YEAR else 0.0
        soon = t_prev + MINUTE  # scheduled events that fell inside a hospital stay happen right after it
        chronic_death = _PE_DEATH0 * math.exp(_PE_DEATH_B * b + _PE_DEATH_R * (0.7 - r))
        clocks = [
            (max(self.next_routine, soon), "routine"),
            (max(self.pending_visit, soon), "followup"),
            (max(self.pending_admit, soon), "admit"),
            (t_prev + rnd.clock(chronic_death + _PE_DEATH_CLOT * c_now * (1.0 - 0.5 * on)), "death"),
            (t_prev + rnd.clock(_PE_ADMIT0 * math.exp(0.7 * b + 2.0 * (0.6 - r))), "admit"),
        ]
        if self.n_studies < _PE_MAX_STUDIES:
            clocks.append((t_prev + rnd.clock(_PE_EPISODE0 * math.exp(0.6 * b) * (1.0 + 2.0 * recent)), "episode"))
        if not self.has_ph:
            ph_rate = _PE_PH0 * math.exp(0.9 * b) + _PE_PH_RESIDUAL * self.residual + 0.6 * c_now
            clocks.append((t_prev + rnd.clock(ph_rate), "ph"))
        if not self.hf:
            clocks.append((t_prev + rnd.clock(0.02 * math.exp(0.8 * b)), "hf"))
        return clocks

    def next_event(self) -> tuple[float, str] | None:
        """The first clock to ring, with the hidden state evolved to it and office events moved into office hours;
        None when follow-up ends first or the subject dies (the death is recorded here)."""
        t_prev, follow_end = self.t_prev, self.base.follow_end
        t, kind = min(self.clocks())
        if t > follow_end:
            return None
        dt = (t - t_prev) / DAYS_PER_YEAR
        sq = math.sqrt(dt)
        self.b = b = self.b + (self.g * dt + 0.15 * sq * self.rnd.z())
        self.r = clip(
            self.r + (-0.02 - 0.06 * max(b, 0.0) - 0.2 * max(self.g, 0.0)) * dt + 0.04 * sq * self.rnd.z(), 0.02, 1.0
        )
        if kind == "death":
            self.emit(t, DEATH)
            self.latent(t, self.b, self.r, float(t < self.anticoag_until))
            return None
        if kind in _OFFICE_KINDS:
            t = max(t_prev + MINUTE, office_hours(self.rnd, t))
            if t > follow_end:
                return None
        return t, kind

    def episode(self, t: float) -> None:
        """A suspected PE at ``t``: the encounter (in hospital, emergency or outpatient), whether it is a PE (a new
        clot), the labs, the CT study, admission, anticoagulation, and what is planned after discharge."""
        rnd, emit, b, r = self.rnd, self.emit, self.b, self.r
        self.n_studies += 1
        setting = rnd.u()
        inpatient = setting < 0.12 and t - 1.0 > self.t_prev  # already in hospital
        if inpatient:
            emit(t - 1.0, VISIT_IP)
        else:
            emit(t, VISIT_ER if setting < 0.80 else VISIT_OP)
        pe = rnd.u() < sigmoid(-1.7 + 0.8 * self.cancer + 0.35 * b + 0.9 * (self.n_pe > 0) + 0.4 * inpatient)
        if pe:
            self.n_pe += 1
            self.clot0 = max(0.2, math.exp(0.5 * rnd.z()))
            self.residual = self.clot0 * (1.0 - self.s) * 0.5
            self.t_pe = t
        c_now = self.clot_at(t)
        tl = t + 30 * MINUTE
        if rnd.u() < 0.85:
            dd = math.log(2500.0) + 0.4 * c_now if pe else math.log(500.0) + 0.25 * b + 0.5 * self.cancer
            emit(tl, DDIMER, min(20000.0, math.exp(dd + 0.45 * rnd.z())))
        if rnd.u() < 0.75:
            self.troponin(tl, c_now)
        self.chronic_labs(tl, b, r, 0.9, 0.7)
        t_ct = t + 2.0 * HOUR
        emit(t_ct, CTPA)
        admitted = inpatient or rnd.u() < (
            sigmoid(0.8 + 1.0 * c_now + 2.0 * (0.6 - r)) if pe else sigmoid(-1.3 + 0.7 * b + 3.0 * (0.6 - r))
        )
        if admitted and not inpatient:
            emit(t_ct, VISIT_IP)  # same instant as the study: the index stay is no readmission
        discharge = t_ct + (1.0 + rnd.expo(2.0 + 2.0 * c_now + 4.0 * max(0.0, 0.7 - r)) if admitted else 0.2)
        if pe:
            self.anticoagulate(t, t_ct, discharge, admitted)
        self.latent(t_ct, b, r, float(t < self.anticoag_until))
        self.after_study(t_ct, discharge, admitted, c_now)

    def anticoagulate(self, t: float, t_ct: float, discharge: float, admitted: bool) -> None:
        """A PE diagnosed at the study ``t_ct``: enoxaparin in hospital then the chosen drug at discharge (or the
        drug at once), for 3-12 months, indefinitely with cancer or after a recurrence."""
        rnd, emit = self.rnd, self.emit
        emit(t_ct + HOUR, PE_DX)
        self.doac = ENOXAPARIN if self.cancer and rnd.u() < 0.6 else _DOACS[rnd.pick_cum(_DOAC_CUM)][0]
        if admitted:
            emit(t_ct + 2.0 * HOUR, ENOXAPARIN)
            if self.doac != ENOXAPARIN and discharge <= self.base.follow_end:
                emit(discharge, self.doac)
        else:
            emit(t_ct + 2.0 * HOUR, self.doac)
        indefinite = self.cancer or self.n_pe > 1
        duration = 10.0 * DAYS_PER_YEAR if indefinite else 90.0 + 275.0 * rnd.u()
        self.anticoag_until = max(self.anticoag_until, t + duration)

    def after_study(self, t_ct: float, discharge: float, admitted: bool, c_now: float) -> None:
        """After the study: maybe a return to hospital within 30 days, a follow-up visit 1-3 weeks after discharge
        and routine care after that."""
        rnd, b, r = self.rnd, self.b, self.r
        p_back = sigmoid(-2.6 + 0.6 * b + 3.0 * (0.6 - r) + 0.6 * c_now + 0.4 * self.cancer + 0.4 * admitted)
        if rnd.u() < p_back:
            self.pending_admit = min(self.pending_admit, discharge + 1.0 + rnd.u() * max(1.0, t_ct + 29.0 - discharge))
        self.pending_visit = discharge + 7.0 + 14.0 * rnd.u()
        self.next_routine = self.pending_visit + 60.0 + rnd.expo(60.0)
        self.t_prev = max(t_ct + 2.0 * HOUR, discharge if admitted else t_ct)

    def admission(self, t: float) -> None:
        """A (re)admission at ``t``: labs, the problem list, the anticoagulant, then a stay of 1 + ~3 days and a
        routine visit 10-30 days after discharge at the latest."""
        rnd, b, r = self.rnd, self.b, self.r
        self.pending_admit = math.inf if t >= self.pending_admit else self.pending_admit
        self.emit(t, VISIT_IP)
        tl = t + 30 * MINUTE
        if rnd.u() < 0.6:
            self.troponin(tl, self.clot_at(t))
        self.chronic_labs(tl, b, r, 0.95, 0.6)
        self.problems.record(rnd, self.rec, t, 0.5)
        self.anticoagulant_at(t, 0.5)
        self.latent(t, b, r, float(t < self.anticoag_until))
        self.t_prev = t + 1.0 + rnd.expo(3.0)  # length of stay
        self.next_routine = min(self.next_routine, self.t_prev + 10.0 + 20.0 * rnd.u())

    def office_visit(self, t: float, kind: str) -> None:
        """An office visit at ``t``: routine, the scheduled follow-up, or one where PH or HF is diagnosed; the next
        routine visit comes sooner as burden rises."""
        rnd, emit, b, r = self.rnd, self.emit, self.b, self.r
        if kind == "followup":
            self.pending_visit = math.inf
        emit(t, VISIT_OP)
        if kind == "hf":
            self.hf = 1.0
            self.problems.onset[HF] = t
        self.problems.record(rnd, self.rec, t, 0.3)
        if kind == "ph":
            self.has_ph = True
            emit(t, PH)
        self.chronic_labs(t + 20 * MINUTE, b, r, 0.6, 0.2 + 0.5 * self.hf + 0.5 * (kind == "ph"))
        self.anticoagulant_at(t, 0.8)
        self.latent(t, b, r, float(t < self.anticoag_until))
        if kind != "followup" or self.next_routine <= t:
            self.next_routine = t + clip(120.0 * math.exp(-0.5 * b), 30.0, 180.0) * (0.6 + 0.8 * rnd.u())
        self.t_prev = t + 2.0 * HOUR  # after the visit's last event
