"""Builds the Cython hot path (ext/) into traceo_sampler._scan, _buffer and _shard.

TRACEO_SAMPLER_DEBUG=1 builds with line tracing and writes `cython -a`
annotation HTML next to the sources, the way uvloop's debug builds do.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("TRACEO_SAMPLER_DEBUG") == "1"
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
}
macros = []
if debug:
    directives["linetrace"] = True
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

# One extension module per accelerated part (scan, buffer), each with a
# pure-Python twin in src/traceo_sampler/ picked at import (accel.py).
exts = [
    Extension(
        f"traceo_sampler._{name}",
        sources=[f"ext/_{name}.pyx"],
        include_dirs=["ext"],
        define_macros=macros,
        extra_compile_args=["-O0", "-g"] if debug else ["-O3"],
    )
    for name in ("scan", "buffer", "shard")
]

setup(
    ext_modules=cythonize(exts, compiler_directives=directives, annotate=debug),
)
