"""Compatibility shim: moved to :mod:`ehr_assets.text` (``smb_v1``, ``delimited``, and the command in
``text/__main__.py``); removed once the Dagster layer imports the new modules.

``python -m ehr_assets.serialize`` stays (README): it runs the command of :mod:`ehr_assets.text.__main__`."""

from .text.__main__ import main
from .text.delimited import delimited_char_ends
from .text.smb_v1 import smb_v1_blocks, smb_v1_cohort, smb_v1_text

__all__ = ["delimited_char_ends", "main", "smb_v1_blocks", "smb_v1_cohort", "smb_v1_text"]

if __name__ == "__main__":
    raise SystemExit(main())
