"""``python -m ehr_assets.synthetic``: see :func:`ehr_assets.synthetic.main`."""

from . import main

raise SystemExit(main())
