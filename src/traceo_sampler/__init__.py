"""Traceo Sampler: tail sampling for OpenTelemetry traces."""
__version__ = "0.1.0"
