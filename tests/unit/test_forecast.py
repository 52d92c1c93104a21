"""The monthly cost forecast's arithmetic (forecast.py)."""
import pytest

from traceo_sampler.forecast import MONTH_S, monthly


def test_scales_the_window_to_an_average_month():
    assert MONTH_S == pytest.approx(30.4375 * 86400)
    f = monthly({"a": (1.0, 0.25), "b": (3.0, 0.5)}, window_s=3600, budget_usd=1000, basis="capture")
    per_hour_to_month = MONTH_S / 3600          # 730.5 hours in an average month
    assert f["services"]["a"] == {"usd_received_month": pytest.approx(1.0 * per_hour_to_month),
                                  "usd_exported_month": pytest.approx(0.25 * per_hour_to_month)}
    assert f["usd_received_month"] == pytest.approx(4.0 * 730.5)
    assert f["usd_exported_month"] == pytest.approx(0.75 * 730.5)
    assert f["budget_used"] == pytest.approx(0.75 * 730.5 / 1000)
    assert f["over_budget"] is False
    assert f["basis"] == "capture" and f["window_s"] == 3600


def test_over_budget_and_no_budget():
    f = monthly({"a": (2.0, 1.0)}, window_s=86400, budget_usd=20, basis="live")
    assert f["usd_exported_month"] == pytest.approx(30.4375)
    assert f["over_budget"] is True and f["budget_used"] == pytest.approx(30.4375 / 20)
    g = monthly({"a": (2.0, 1.0)}, window_s=86400, budget_usd=0, basis="live")
    assert g["budget_usd_month"] is None and g["over_budget"] is None and g["budget_used"] is None


def test_an_empty_window_projects_nothing():
    f = monthly({"a": (2.0, 1.0)}, window_s=0, budget_usd=5, basis="capture")
    assert f["usd_received_month"] is None and f["services"]["a"]["usd_exported_month"] is None
    assert f["over_budget"] is None and "nothing to project" in f["note"]
    e = monthly({}, window_s=60, budget_usd=0, basis="live")
    assert e["usd_received_month"] == 0 and e["services"] == {}
