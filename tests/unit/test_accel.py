"""The compiled hot path must really be in use unless asked otherwise."""
import importlib

from conftest import PURE


def test_compiled_extensions_loaded():
    from traceo_sampler import accel, buffer, scan
    if PURE:
        assert scan.IMPLEMENTATION == "python"
        assert buffer.IMPLEMENTATION == "python"
        return
    assert not accel.LOAD_ERRORS, f"compiled modules failed to load: {accel.LOAD_ERRORS}"
    assert scan.IMPLEMENTATION == "cython"
    assert buffer.IMPLEMENTATION == "cython"
    for name in ("_scan", "_buffer", "_shard"):
        mod = importlib.import_module(f"traceo_sampler.{name}")
        assert mod.__file__.endswith(".so"), mod.__file__
