"""Monthly cost forecast: dollars received and exported per service over an
observed window, scaled to an average month and set against
``cost.monthly_budget_usd``.

Used by ``simulate`` (the window is the capture's time range) and by the
running sampler (the window is its recent history, server.py). It is a
linear projection of the window's rate: traffic with a weekly or daily cycle
is over- or under-estimated by as much as the window differs from the
month's average.
"""
from __future__ import annotations

MONTH_S = 365.25 / 12 * 86400      # an average month: 30.44 days


def monthly(services: dict[str, tuple[float, float]], window_s: float, budget_usd: float,
            basis: str) -> dict:
    """``services``: name → (dollars received, dollars exported) during the
    ``window_s`` seconds observed. Returns the projection; its monthly
    figures are None when the window is empty (nothing to scale)."""
    scale = MONTH_S / window_s if window_s > 0 else None

    def month(usd: float) -> float | None:
        return round(usd * scale, 6) if scale is not None else None

    per = {name: {"usd_received_month": month(i), "usd_exported_month": month(o)}
           for name, (i, o) in sorted(services.items())}
    usd_in = sum(i for i, _ in services.values())
    usd_out = sum(o for _, o in services.values())
    total_in, total_out = month(usd_in), month(usd_out)
    out = {
        "basis": basis,
        "window_s": round(window_s, 6),
        "month_s": MONTH_S,
        "services": per,
        "usd_received_month": total_in,
        "usd_exported_month": total_out,
        "budget_usd_month": budget_usd or None,
        "budget_used": None,
        "over_budget": None,
    }
    if budget_usd and total_out is not None:
        out["budget_used"] = round(total_out / budget_usd, 6)
        out["over_budget"] = total_out > budget_usd
    if scale is None:
        out["note"] = "the window has no duration: nothing to project"
    return out
