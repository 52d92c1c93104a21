"""``probabilistic``: OpenTelemetry consistent probability sampling.

Kept when the trace's randomness R >= T, T derived from
``sampling_percentage``. Every instance, region and restart decides a trace
the same way, and the kept spans carry ``th:T`` so counts can be re-weighted.
``hash_salt`` is accepted for Collector compatibility and has no effect: a
salt would break the consistency with upstream samplers that the threshold
scheme exists for.
"""
from fractions import Fraction

from ..accel import compiled
from ..cfgtypes import _Base
from ..tracestate import threshold_for_percentage
from .base import NO, SAMPLED, YES

TYPE = "probabilistic"


class ProbabilisticCfg(_Base):
    # 0..100 in our semantics (check); any number in the Collector's, which
    # clamps: >= 100 keeps all, <= 0 only a trace whose hash is 0
    sampling_percentage: float
    # Collector semantics: the salt of its FNV-1a hash. Ours: accepted and
    # without effect, since consistent sampling uses the trace's randomness
    # value and a salt would break the consistency with upstream samplers.
    hash_salt: str = ""


Config = ProbabilisticCfg


def check(c: ProbabilisticCfg, path: str, problems: list[str]) -> None:
    if c.sampling_percentage < 0:
        problems.append(f"{path}.sampling_percentage: must be >= 0.0")
    elif c.sampling_percentage > 100:
        problems.append(f"{path}.sampling_percentage: must be <= 100.0")


def check_collector(c: ProbabilisticCfg, path: str, problems: list[str]) -> None:
    """The Collector accepts any percentage and clamps it."""


# --- Collector semantics (internal/sampling/probabilistic.go, v0.161.0)
DEFAULT_HASH_SALT = "default-hash-seed"
MAX_U64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a64_py(data: bytes, h: int = _FNV_OFFSET) -> int:
    """FNV-1a 64 of data, continuing from h (pure twin of ext/_shard.pyx)."""
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & MAX_U64
    return h


_c = compiled("shard")
fnv1a64 = _c.fnv1a64 if _c is not None else fnv1a64_py


def collector_threshold(ratio: float) -> int:
    """calculateThreshold: MaxUint64 * ratio in a big.Float of 64 bits of
    mantissa (rounded to nearest even), then Uint64() (truncated, clamped
    to [0, MaxUint64])."""
    x = MAX_U64 * Fraction(ratio)
    if x <= 0:
        return 0
    # exponent k with 2**(k-1) <= x < 2**k
    e = x.numerator.bit_length() - x.denominator.bit_length()
    k = e + 1 if Fraction(2) ** e <= x else e
    ulp = Fraction(2) ** (k - 64)
    q = x / ulp
    n = q.numerator // q.denominator
    rem = q - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2 == 1):
        n += 1
    r = n * ulp
    v = r.numerator // r.denominator
    return MAX_U64 if v > MAX_U64 else v


class CollectorProbabilistic:
    """Kept when FNV-1a-64(hash_salt + trace ID) <= MaxUint64 * ratio, as the
    Collector with its usetracestate gate off (the default)."""

    def __init__(self, name: str, sampling_percentage: float, hash_salt: str = ""):
        self.name = name
        self.salt = (hash_salt or DEFAULT_HASH_SALT).encode()
        self.limit = collector_threshold(sampling_percentage / 100)
        # the hash of the salt, continued per trace
        self._h0 = fnv1a64(self.salt)

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        return YES if fnv1a64(trace.trace_id, self._h0) <= self.limit else NO


def build_collector(cfg, build_sub, clock=None):
    c = cfg.probabilistic
    return CollectorProbabilistic(cfg.name, c.sampling_percentage, c.hash_salt)


class Probabilistic:
    def __init__(self, name: str, sampling_percentage: float):
        self.name = name
        self.threshold = threshold_for_percentage(sampling_percentage)

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        if trace.randomness >= self.threshold:
            return (SAMPLED, self.threshold)
        return NO


def build(cfg, build_sub, clock=None):
    return Probabilistic(cfg.name, cfg.probabilistic.sampling_percentage)
