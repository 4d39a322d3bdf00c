"""Make `mlgate_runtime` importable for the training tests.

In a user's repository `mlgate train` provides it (it puts the helper's folder on PYTHONPATH of the
training command). Here, inside mlgate's own repository, the tests take it from mlgate's source tree
when nothing else provides it; where neither exists, the training tests skip.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MLGATE_RUNTIME_DIR = Path(__file__).resolve().parents[2] / "scripts" / "mlgate" / "_runtime"

if importlib.util.find_spec("mlgate_runtime") is None and MLGATE_RUNTIME_DIR.is_dir():
    sys.path.append(str(MLGATE_RUNTIME_DIR))
