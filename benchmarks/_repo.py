"""Imported first by every benchmark so that `python benchmarks/<name>.py` finds ebm_play and ui
without installing the project."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
