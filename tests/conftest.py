import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

PURE = os.environ.get("TRACEO_SAMPLER_PURE") == "1"


def implementations(name: str):
    """[pure, compiled] implementations of one accelerated part, for
    parametrized tests. The compiled one must load unless PURE is asked."""
    import importlib
    out = []
    if not PURE:
        mod = importlib.import_module(f"traceo_sampler._{name}")
        out.append(pytest.param(mod, id="cython"))
    return out
