"""Tables as text that fits a terminal: the report command's human formats, the demo's ending and its files.

* :func:`fit_columns` -- a table as one or more column blocks, each repeating the key columns, each line at most
  ``width`` characters where the cells allow (a block holds as many value columns as fit);
* :func:`per_cohort` -- one titled block per cohort (``== msk ==``), the cohort column dropped;
* :func:`aligned` -- a small text table: the first columns left-aligned (names), the others right-aligned (numbers);
* :func:`check_width` -- the lines of a text wider than a width.

Nothing here imports Dagster.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

__all__ = ["REPORT_WIDTH", "aligned", "check_width", "fit_columns", "per_cohort", "plain"]

REPORT_WIDTH = 120  # every human format of ``python -m ehr_assets.report`` fits this many columns


def plain(df: pd.DataFrame) -> str:
    """``df`` as plain text, no index."""
    return df.to_string(index=False)


def aligned(df: pd.DataFrame, left: int = 1, gap: int = 2) -> str:
    """``df`` as text: a header line, then a line per row; the first ``left`` columns left-aligned, the others
    right-aligned, ``gap`` spaces between columns, no trailing spaces."""
    cols = [str(c) for c in df.columns]
    rows = [["" if v is None else str(v) for v in r] for r in df.itertuples(index=False)]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return (" " * gap).join(parts).rstrip()

    return "\n".join([line(cols), *(line(r) for r in rows)])


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def fit_columns(
    df: pd.DataFrame,
    keys: list[str],
    width: int = REPORT_WIDTH,
    render: Callable[[pd.DataFrame], str] = plain,
) -> str:
    """``df`` rendered by ``render``; when that is wider than ``width``, its non-key columns are split, in order,
    into consecutive blocks (each with the ``keys`` columns first) separated by an empty line. A block takes at
    least one value column even when that alone is too wide."""
    keys = [k for k in keys if k in df.columns]
    text = render(df)
    values = [c for c in df.columns if c not in keys]
    if _widest(text) <= width or len(values) <= 1:
        return text
    blocks: list[str] = []
    chosen: list[str] = []
    for c in values:
        trial = render(df[keys + chosen + [c]])
        if chosen and _widest(trial) > width:
            blocks.append(render(df[keys + chosen]))
            chosen = [c]
        else:
            chosen.append(c)
    blocks.append(render(df[keys + chosen]))
    return "\n\n".join(blocks)


def per_cohort(df: pd.DataFrame, body: Callable[[pd.DataFrame], str], title: str = "== {cohort} ==") -> str:
    """One block per cohort of ``df`` (in order of appearance): ``title`` then ``body`` of its rows without the
    cohort column; ``body(df)`` when there is no cohort column."""
    if "cohort" not in df.columns:
        return body(df)
    parts = []
    for cohort in dict.fromkeys(df["cohort"]):
        rows = df[df["cohort"] == cohort].drop(columns=["cohort"]).reset_index(drop=True)
        parts.append(title.format(cohort=cohort) + "\n" + body(rows))
    return "\n\n".join(parts)


def check_width(text: str, width: int) -> list[str]:
    """The lines of ``text`` longer than ``width`` characters."""
    return [line for line in text.splitlines() if len(line) > width]
