"""What every source reader returns (:class:`SourceData`) and raises (:class:`SourceError`).

Apart from the readers so that each reader module and the dispatch in ``sources/__init__.py`` import it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


class SourceError(ValueError):
    """A source file breaks its format; the message names the file and the column, line or subject."""


@dataclass
class SourceData:
    """A source read into MEDS events: the events (MEDS DataSchema columns, ``table`` and ``unit``, plus any extra
    columns the source carries), the subject splits the source ships and a report for the asset's metadata."""

    events: pd.DataFrame
    splits: pd.DataFrame | None = None  # subject_id, split; None: split by the cohort's seed
    report: dict = field(default_factory=dict)  # JSON-able, shown as asset metadata
