"""``python -m ehr_assets.build``: forwards to :mod:`ehr_assets.defs.build` (build only what is out of date)."""

import sys

from .defs.build import main

if __name__ == "__main__":
    sys.exit(main())
