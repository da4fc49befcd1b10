"""``python -m ehr_assets.demo``: forwards to :mod:`ehr_assets.defs.demo` (materialize everything, print metrics)."""

import sys

from .defs.demo import main

if __name__ == "__main__":
    sys.exit(main())
