import importlib
import os
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

PURE = os.environ.get("TRACEO_SAMPLER_PURE") == "1"


def twins(name: str, **pure: object) -> list:
    """Both implementations of one accelerated part as pytest params (as
    multidict's conftest gives both of its modules): ``python``, a namespace
    of the pure twins given as ``pure`` (``scan=scan_py``), and ``cython``,
    the same names taken from the compiled ``traceo_sampler._<name>``. The
    compiled one must import: a broken build fails the run (its tests are
    not skipped) unless TRACEO_SAMPLER_PURE=1 asks for the pure
    twins only."""
    out = [pytest.param(SimpleNamespace(**pure), id="python")]
    if PURE:
        return out
    # an ImportError here is a collection error: the run fails
    mod = importlib.import_module(f"traceo_sampler._{name}")
    out.append(pytest.param(SimpleNamespace(**{k: getattr(mod, k) for k in pure}), id="cython"))
    return out

