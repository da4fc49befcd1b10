"""``python -m ehr_assets.serialize``: print one subject's serialized timeline (docs/how-to/backbones.md), forwarding to
:mod:`ehr_assets.text.__main__` (``python -m ehr_assets.text`` is the same command). The formats live in
:mod:`ehr_assets.text.delimited` and :mod:`ehr_assets.text.smb_v1`."""

import sys

from .text.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
