"""Shared pieces of the declaration models: the strict base class, name and regex validators, the error type."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class SpecError(ValueError):
    """A declaration file is invalid. The message names the file and the key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def check_name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"{v!r} is not a valid name (lowercase letters, digits, '_', starting with a letter)")
    return v


def check_replicate_seeds(v: list[int]) -> list[int]:
    """Replicate training seeds: non-negative, each once."""
    if any(s < 0 for s in v):
        raise ValueError(f"seeds must be >= 0 (got {v})")
    if len(set(v)) != len(v):
        raise ValueError(f"each seed once (got {v})")
    return v


def check_regexes(v: list[str]) -> list[str]:
    for pat in v:
        try:
            re.compile(pat)
        except re.error as e:
            raise ValueError(f"invalid regular expression {pat!r}: {e}") from None
    return v


def check_iso_date(v):
    """YAML reads an unquoted 2000-01-01 as a date; accept it and a quoted ISO string alike."""
    import datetime as _dt

    if isinstance(v, _dt.date):
        return v.isoformat()
    if isinstance(v, str):
        try:
            _dt.date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an ISO date (YYYY-MM-DD)") from None
    return v
