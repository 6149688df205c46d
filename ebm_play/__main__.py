"""``python -m ebm_play``: the command line (see :mod:`ebm_play.cli`)."""

import signal
import sys

from .cli import main

try:
    code = main()
except KeyboardInterrupt:  # a Ctrl-C in the moment between main's own handling and here
    code = 130
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a late Ctrl-C must not become a traceback at exit
sys.exit(code)
