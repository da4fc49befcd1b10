"""Conventions shared by every stage: the MEDS column names and splits (taken from the ``meds`` package, never
retyped), the project's extra event columns, and time units. Pure Python and ``meds``; importing it loads nothing
else of the project.
"""

import meds

# MEDS DataSchema columns, in the schema's order: subject_id, time, code, numeric_value, text_value
MEDS_COLUMNS: tuple[str, ...] = tuple(meds.DataSchema.schema().names)
# optional event columns this project reads (the SMB-v1 category of an event and its unit)
EXTRA_COLUMNS: tuple[str, ...] = ("table", "unit")
EVENT_COLUMNS: tuple[str, ...] = (*MEDS_COLUMNS, *EXTRA_COLUMNS)
SPLITS: tuple[str, ...] = (meds.train_split, meds.tuning_split, meds.held_out_split)
# the code suffix of an interval's end event (a cBioPortal row's STOP_DATE): ``<code>/STOP``
STOP_SUFFIX = "/STOP"

DAYS_PER_YEAR = 365.25  # a Julian year: ages, follow-up in years, cBioPortal's OS_MONTHS
DAYS_PER_MONTH = DAYS_PER_YEAR / 12
US_PER_DAY = 86_400_000_000  # microseconds per day (MEDS times are timestamp[us])
US_PER_YEAR = DAYS_PER_YEAR * US_PER_DAY
