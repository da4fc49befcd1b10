"""``python -m ehr_assets.synthetic``: the command line of :mod:`ehr_assets.synthetic.cli`."""

from .cli import main

raise SystemExit(main())
