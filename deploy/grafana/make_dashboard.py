"""Writes traceo-sampler.json, the Grafana dashboard. Run it after changing
the panels: `python deploy/grafana/make_dashboard.py`."""
import json
import os

P = "traceo_sampler_"
PANELS = [
    # title, unit, [(expr, legend)]
    ("Spans in / out", "ops", [
        (f"sum(rate({P}spans_received_total[1m]))", "received"),
        (f"sum(rate({P}spans_exported_total[1m]))", "exported")]),
    ("Keep ratio (spans)", "percentunit", [
        (f"sum(rate({P}spans_exported_total[5m])) / sum(rate({P}spans_received_total[5m]))", "kept")]),
    ("Decisions by trigger", "ops", [
        (f"sum by (trigger) (rate({P}traces_decided_total[1m]))", "{{trigger}}")]),
    ("Kept traces by policy", "ops", [
        (f'sum by (policy) (rate({P}traces_decided_total{{decision="sampled"}}[1m]))', "{{policy}}")]),
    ("Buffer occupancy", "percentunit", [
        (f"{P}buffer_bytes / {P}buffer_limit_bytes", "bytes / limit")]),
    ("Buffered traces and spans", "short", [
        (f"{P}buffer_traces", "traces"), (f"{P}buffer_spans", "spans")]),
    ("Decision latency (trigger → export ack)", "s", [
        (f"histogram_quantile(0.5, sum by (le) (rate({P}decision_latency_seconds_bucket[5m])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate({P}decision_latency_seconds_bucket[5m])))", "p99")]),
    ("Late spans", "ops", [
        (f"sum by (decision) (rate({P}late_spans_total[1m]))", "{{decision}}")]),
    ("Consistency", "ops", [
        (f"sum(rate({P}orphan_spans_total[5m]))", "orphans"),
        (f"sum(rate({P}clock_skew_spans_total[5m]))", "clock skew"),
        (f"sum(rate({P}duplicate_spans_total[5m]))", "duplicates"),
        (f"sum(rate({P}traces_without_root_total[5m]))", "traces without root"),
        (f"sum by (reason) (rate({P}invalid_spans_total[5m]))", "invalid: {{reason}}")]),
    ("Clock skew of skewed spans, p90 by service", "s", [
        (f"histogram_quantile(0.9, sum by (service, le) (rate({P}clock_skew_seconds_bucket[5m])))", "{{service}}")]),
    ("Exporters", "ops", [
        (f"sum by (exporter) (rate({P}export_failures_total[1m]))", "failures {{exporter}}"),
        (f"sum by (exporter) (rate({P}export_dropped_spans_total[1m]))", "dropped {{exporter}}"),
        (f"sum by (exporter) ({P}exporter_queue_bytes)", "queue bytes {{exporter}}")]),
    ("Cost per day, received vs exported", "currencyUSD", [
        (f"sum by (stage) (rate({P}cost_usd_total[1h])) * 86400", "{{stage}}")]),
    ("Cost per day by service (exported)", "currencyUSD", [
        (f'topk(10, sum by (service) (rate({P}cost_usd_total{{stage="exported"}}[1h])) * 86400)', "{{service}}")]),
    ("Receiver requests", "ops", [
        (f"sum by (receiver, outcome) (rate({P}receiver_requests_total[1m]))", "{{receiver}} {{outcome}}")]),
]


def build() -> dict:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "expr": e, "legendFormat": lg}
                        for j, (e, lg) in enumerate(targets)],
        })
    return {
        "title": "Traceo Sampler", "uid": "traceo-sampler", "schemaVersion": 39,
        "tags": ["tracing", "sampling"], "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traceo-sampler.json")
    with open(out, "w") as fh:
        json.dump(build(), fh, indent=1)
        fh.write("\n")
