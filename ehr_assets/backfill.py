"""``python -m ehr_assets.backfill``: forwards to :mod:`ehr_assets.defs.backfill` (a backfill followed to its end,
with a daemon for its duration when none runs)."""

import sys

from .defs.backfill import main

if __name__ == "__main__":
    sys.exit(main())
