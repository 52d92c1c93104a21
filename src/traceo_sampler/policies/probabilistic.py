"""``probabilistic``: OpenTelemetry consistent probability sampling.

Kept when the trace's randomness R >= T, T derived from
``sampling_percentage``. Every instance, region and restart decides a trace
the same way, and the kept spans carry ``th:T`` so counts can be re-weighted.
``hash_salt`` is accepted for Collector compatibility and has no effect: a
salt would break the consistency with upstream samplers that the threshold
scheme exists for.
"""
from ..cfgtypes import Percent, _Base
from ..tracestate import threshold_for_percentage
from .base import NO, SAMPLED

TYPE = "probabilistic"


class ProbabilisticCfg(_Base):
    sampling_percentage: Percent
    # Accepted so Collector configs load unchanged; consistent sampling uses
    # the trace's randomness value, so the salt cannot change the outcome.
    hash_salt: str = ""


Config = ProbabilisticCfg


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
