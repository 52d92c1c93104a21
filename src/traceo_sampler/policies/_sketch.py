"""A small relative-error quantile sketch with exponential decay.

DDSketch's layout (Masson, Rim, Lee, VLDB 2019): a value x > 0 goes to
bucket ``i = ceil(log_gamma(x))`` with ``gamma = (1 + a) / (1 - a)``, so a
bucket spans ``(gamma**(i-1), gamma**i]`` and any value in the bucket holding
the q-quantile is within relative error ``a`` of a point of it. Buckets are
a dense array between the lowest and highest index seen, capped at
``max_buckets`` by folding the lowest ones together (only upper quantiles
are asked for, so the low end may lose resolution).

Decay: an observation at time t weighs ``2 ** ((t - t_ref) / half_life)``
(forward decay), so older observations count half as much per half-life;
weights are rescaled now and then to stay finite, and buckets whose weight
became negligible are trimmed from the ends.

Written here rather than taken from the ``ddsketch`` package: that package
has no decay (its stores hold raw counts), and the policy needs the index of
the quantile's bucket, not a value — forty lines of arithmetic.
"""
from __future__ import annotations

import math
from array import array

_RESCALE_EXP = 40.0          # rescale once weights reach 2**40
_NEGLIGIBLE = 1e-12


class DecayingSketch:
    __slots__ = ("ln_gamma", "max_buckets", "inv_half_life", "offset", "bins", "zero",
                 "total", "count", "t_ref")

    def __init__(self, relative_accuracy: float, half_life: float, max_buckets: int,
                 now: float):
        a = relative_accuracy
        self.ln_gamma = math.log((1 + a) / (1 - a))
        self.max_buckets = max_buckets
        self.inv_half_life = 1.0 / half_life
        self.offset = 0
        self.bins = array("d")
        self.zero = 0.0
        self.total = 0.0
        self.count = 0                  # observations, undecayed
        self.t_ref = now

    def index(self, x: float) -> int:
        return math.ceil(math.log(x) / self.ln_gamma)

    def lower_edge(self, i: int) -> float:
        return math.exp((i - 1) * self.ln_gamma)

    def add(self, x: float, now: float) -> None:
        e = (now - self.t_ref) * self.inv_half_life
        if e > _RESCALE_EXP:
            self._rescale(now)
            e = 0.0
        w = 2.0 ** e
        self.count += 1
        self.total += w
        if x <= 0:
            self.zero += w
            return
        i = self.index(x)
        bins = self.bins
        n = len(bins)
        if n == 0:
            self.offset = i
            bins.append(w)
            return
        off = self.offset
        if i < off:
            bins[0:0] = array("d", bytes(8 * (off - i)))
            self.offset = off = i
        elif i >= off + n:
            bins.extend(array("d", bytes(8 * (i - off - n + 1))))
        bins[i - off] += w
        if len(bins) > self.max_buckets:
            self._fold_lowest()

    def _fold_lowest(self) -> None:
        bins = self.bins
        extra = len(bins) - self.max_buckets
        s = sum(bins[:extra + 1])
        del bins[:extra]
        bins[0] = s
        self.offset += extra

    def _rescale(self, now: float) -> None:
        f = 2.0 ** (-(now - self.t_ref) * self.inv_half_life)
        bins = self.bins
        for j in range(len(bins)):
            bins[j] *= f
        self.zero *= f
        self.total *= f
        self.t_ref = now
        cut = self.total * _NEGLIGIBLE
        lo, hi = 0, len(bins)
        while lo < hi and bins[lo] <= cut:
            lo += 1
        while hi > lo and bins[hi - 1] <= cut:
            hi -= 1
        if lo or hi < len(bins):
            self.zero += sum(bins[:lo])    # keep the mass below where it was
            del bins[hi:]
            del bins[:lo]
            self.offset += lo

    def quantile_index(self, q: float) -> int | None:
        """Index of the bucket holding the q-quantile (None: the zero bucket)."""
        need = (1.0 - q) * self.total
        s = 0.0
        bins = self.bins
        for j in range(len(bins) - 1, -1, -1):
            s += bins[j]
            if s > need:
                return self.offset + j
        return None

    def quantile(self, q: float) -> float:
        """The q-quantile estimate (bucket midpoint in DDSketch's sense)."""
        i = self.quantile_index(q)
        if i is None:
            return 0.0
        return 2.0 * math.exp(i * self.ln_gamma) / (1.0 + math.exp(self.ln_gamma))
