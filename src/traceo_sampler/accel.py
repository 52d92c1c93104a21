"""Picks the compiled or the pure-Python implementation of each hot part.

Like aiokafka: the Cython classes are used when they import, the pure twins
otherwise. ``TRACEO_SAMPLER_PURE=1`` asks for the pure ones on purpose; the
test suite fails when the compiled ones were expected but did not load
(``LOAD_ERRORS`` says why).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("TRACEO_SAMPLER_PURE", "") == "1"
LOAD_ERRORS: dict[str, str] = {}


def compiled(name: str) -> ModuleType | None:
    """Return the compiled module ``traceo_sampler._<name>``, or None."""
    if PURE:
        return None
    try:
        return importlib.import_module(f"traceo_sampler._{name}")
    except ImportError as exc:  # not built, or built for another Python
        LOAD_ERRORS[name] = str(exc)
        return None
