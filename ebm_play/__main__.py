"""``python -m ebm_play``: the command line (see :mod:`ebm_play.cli`)."""

from .cli import main

raise SystemExit(main())
