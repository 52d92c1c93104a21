"""``simulate --report OUT.html``: the simulation (or comparison) as one
self-contained HTML file: plotly.js inlined (nothing is fetched, it opens
offline from disk), follows the system's light/dark setting, one column on
a phone. The report's JSON is embedded as ``<script type="application/json"
id="report-data">`` so the file carries its own numbers; every chart and
table is drawn from that same dict.
"""
from __future__ import annotations

import datetime as _dt
import html
import json

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

# colours legible on both a light and a dark background
ALL = "#8a94a6"
KEPT = "#2f6fed"
OTHER = "#e8833a"
TRIGGER_COLOURS = {"root": "#2f6fed", "idle": "#20a386", "max_wait": "#e8833a",
                   "max_spans": "#b04fc4", "memory": "#d64545", "shutdown": "#8a94a6"}
GRID = "rgba(128,128,128,0.25)"
TOP = 30        # services drawn in a chart; the tables list all


def _layout(title: str, **kw) -> go.Figure:
    """A figure with the report's look; ``title`` is shown as an HTML
    heading above the chart (it wraps on a phone, a plotly title does not)."""
    base = dict(
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
        font=dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12),
        margin=dict(l=8, r=8, t=8, b=8), height=320, autosize=True,
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0, bgcolor="rgba(0,0,0,0)"),
        hovermode="x unified", meta={"title": title},
    )
    base.update(kw)
    fig = go.Figure(layout=base)
    fig.update_xaxes(gridcolor=GRID, zerolinecolor=GRID, automargin=True)
    fig.update_yaxes(gridcolor=GRID, zerolinecolor=GRID, automargin=True)
    return fig


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _ratio(a: list[int], b: list[int]) -> list[float | None]:
    return [round(100 * x / y, 2) if y else None for x, y in zip(a, b)]


def fig_timeline(rep: dict, other: dict | None = None, names=("current", "proposed")) -> go.Figure:
    tl = rep["timeline"]
    x = [_iso(t) for t in tl["start_unix_s"]]
    fig = _layout(f"Keep rate over the capture's time (buckets of {tl['bucket_s']:g} s)",
                  yaxis=dict(title="% kept", rangemode="tozero"),
                  yaxis2=dict(title="traces", overlaying="y", side="right", showgrid=False,
                              rangemode="tozero"),
                  xaxis=dict(nticks=6))
    fig.add_bar(x=x, y=tl["traces"], name="traces started", marker_color=ALL, opacity=0.35,
                yaxis="y2")
    label = f" ({names[0]})" if other else ""
    fig.add_scatter(x=x, y=_ratio(tl["traces_kept"], tl["traces"]), name="traces kept %" + label,
                    mode="lines+markers", line=dict(color=KEPT))
    fig.add_scatter(x=x, y=_ratio(tl["spans_kept"], tl["spans"]), name="spans kept %" + label,
                    mode="lines", line=dict(color=KEPT, dash="dot"))
    if other:
        ot = other["timeline"]
        ox = [_iso(t) for t in ot["start_unix_s"]]
        fig.add_scatter(x=ox, y=_ratio(ot["traces_kept"], ot["traces"]),
                        name=f"traces kept % ({names[1]})", mode="lines+markers",
                        line=dict(color=OTHER))
        fig.add_scatter(x=ox, y=_ratio(ot["spans_kept"], ot["spans"]),
                        name=f"spans kept % ({names[1]})", mode="lines", line=dict(color=OTHER, dash="dot"))
    return fig


def _top_services(per_service: dict, key: str) -> list[str]:
    return sorted(per_service, key=lambda s: -per_service[s][key])[:TOP]


def fig_services(rep: dict) -> go.Figure:
    ps = rep["per_service"]
    names = _top_services(ps, "bytes_before")[::-1]
    fig = _layout("Per service, before and after sampling", height=max(260, 90 + 34 * len(names)),
                  barmode="group", hovermode="y unified")
    metrics = (("spans", "spans_before", "spans_after"), ("bytes", "bytes_before", "bytes_after"),
               ("dollars", "usd_before", "usd_after"))
    for i, (label, before, after) in enumerate(metrics):
        fig.add_bar(y=names, x=[ps[s][before] for s in names], orientation="h", name=f"{label} before",
                    marker_color=ALL, visible=i == 0)
        fig.add_bar(y=names, x=[ps[s][after] for s in names], orientation="h", name=f"{label} after",
                    marker_color=KEPT, visible=i == 0)
    fig.update_layout(updatemenus=[dict(
        type="buttons", direction="right", x=0, y=1.0, xanchor="left", yanchor="bottom",
        pad=dict(t=4, b=4), showactive=True, bgcolor="#d5d9e0", font=dict(color="#16181d"),
        buttons=[dict(label=label, method="update",
                      args=[{"visible": [j // 2 == i for j in range(6)]}])
                 for i, (label, _b, _a) in enumerate(metrics)])])
    return fig


def fig_policy_trigger(rep: dict) -> go.Figure:
    by = rep["kept_by_policy_trigger"]
    policies = sorted(by, key=lambda p: -sum(by[p].values()))
    triggers = sorted({t for v in by.values() for t in v})
    fig = _layout("Kept traces by policy and trigger", barmode="stack",
                  yaxis=dict(title="traces"))
    for t in triggers:
        fig.add_bar(x=policies, y=[by[p].get(t, 0) for p in policies], name=t,
                    marker_color=TRIGGER_COLOURS.get(t, ALL))
    return fig


def _lat_x(edges: list[float]) -> list[float]:
    """A point inside each latency bin (geometric middle) for a log axis."""
    out = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else lo * 10 ** 0.1
        out.append(round((max(lo, 1e-4) * hi) ** 0.5, 9))
    return out


def fig_latency(rep: dict, other: dict | None = None, names=("current", "proposed")) -> go.Figure:
    lat = rep["latency"]
    x = _lat_x(lat["bin_lower_ms"])
    used = [i for i, n in enumerate(lat["all"]) if n]
    lo, hi = (used[0], used[-1] + 1) if used else (0, 0)
    x = x[lo:hi]
    fig = _layout("Trace duration, all vs kept (log scales: the tail stays visible)",
                  xaxis=dict(type="log", title="trace duration (ms)", dtick=1),
                  yaxis=dict(type="log", title="traces", dtick=1, rangemode="tozero"))
    fig.add_scatter(x=x, y=lat["all"][lo:hi], name="all traces", mode="lines",
                    line=dict(color=ALL, shape="hvh"), fill="tozeroy")
    fig.add_scatter(x=x, y=lat["kept"][lo:hi], name="kept" + (f" ({names[0]})" if other else ""),
                    mode="lines", line=dict(color=KEPT, shape="hvh", width=2), fill="tozeroy")
    if other:
        fig.add_scatter(x=x, y=other["latency"]["kept"][lo:hi], name=f"kept ({names[1]})",
                        mode="lines", line=dict(color=OTHER, shape="hvh", width=2))
    return fig


def _consistency_rows(rep: dict) -> list[tuple[str, float]]:
    c = rep["consistency"]
    rows = [(k.replace("_", " "), c[k]) for k in c if k != "per_service"]
    rows += [("late spans (kept)", rep["late_spans"]["sampled"]),
             ("late spans (dropped)", rep["late_spans"]["not_sampled"]),
             ("invalid requests", rep["invalid_requests"])]
    return rows


def fig_consistency(rep: dict) -> go.Figure:
    rows = _consistency_rows(rep)[::-1]
    fig = _layout("Consistency findings", height=300, hovermode="closest")
    fig.add_bar(y=[r[0] for r in rows], x=[r[1] for r in rows], orientation="h",
                marker_color=[OTHER if r[1] else ALL for r in rows], name="count",
                text=[f"{r[1]:,.0f}" for r in rows], textposition="auto")
    return fig


def fig_forecast(rep: dict) -> go.Figure:
    f = rep["forecast"]
    svcs = f["services"]
    names = sorted(svcs, key=lambda s: -(svcs[s]["usd_received_month"] or 0))[:TOP][::-1]
    fig = _layout("Projected monthly cost per service (at the capture's rate)",
                  height=max(260, 90 + 30 * len(names)), barmode="group", hovermode="y unified", xaxis=dict(title="$ / month"))
    fig.add_bar(y=names, x=[svcs[s]["usd_received_month"] for s in names], orientation="h",
                name="received", marker_color=ALL)
    fig.add_bar(y=names, x=[svcs[s]["usd_exported_month"] for s in names], orientation="h",
                name="exported", marker_color=KEPT)
    return fig


def fig_budget(rep: dict) -> go.Figure | None:
    f = rep["forecast"]
    if f["usd_received_month"] is None:
        return None
    fig = _layout("Monthly total against the budget", height=220, hovermode="closest", xaxis=dict(title="$ / month"))
    fig.add_bar(y=["exported", "received"], x=[f["usd_exported_month"], f["usd_received_month"]],
                orientation="h", marker_color=[KEPT, ALL], name="total",
                text=[f"${f['usd_exported_month']:,.2f}", f"${f['usd_received_month']:,.2f}"],
                textposition="auto")
    if f["budget_usd_month"]:
        fig.add_vline(x=f["budget_usd_month"], line=dict(color=OTHER, dash="dash", width=2),
                      annotation_text=f"budget ${f['budget_usd_month']:,.2f}",
                      annotation_position="top")
    return fig


def fig_compare_policies(a: dict, b: dict, d: dict, names) -> go.Figure:
    pols = list(d["per_policy"])
    fig = _layout("Kept traces per policy, side by side", barmode="group", yaxis=dict(title="traces"))
    fig.add_bar(x=pols, y=[d["per_policy"][p]["current"] for p in pols], name=names[0], marker_color=KEPT)
    fig.add_bar(x=pols, y=[d["per_policy"][p]["proposed"] for p in pols], name=names[1],
                marker_color=OTHER)
    return fig


def fig_compare_only(d: dict, names) -> go.Figure:
    oa, ob = d["only_current"]["by_policy"], d["only_proposed"]["by_policy"]
    pols = sorted(set(oa) | set(ob))
    fig = _layout("Traces one keeps and the other does not, by the keeping policy",
                  barmode="group", yaxis=dict(title="traces"))
    fig.add_bar(x=pols, y=[oa.get(p, 0) for p in pols], name=f"only {names[0]}", marker_color=KEPT)
    fig.add_bar(x=pols, y=[ob.get(p, 0) for p in pols], name=f"only {names[1]}", marker_color=OTHER)
    return fig


def fig_compare_services(d: dict, names) -> go.Figure:
    ps = d["per_service"]
    svcs = sorted(ps, key=lambda s: -max(ps[s]["spans_after_current"], ps[s]["spans_after_proposed"]))
    svcs = svcs[:TOP][::-1]
    fig = _layout("Spans kept per service, side by side", barmode="group", hovermode="y unified",
                  height=max(260, 90 + 34 * len(svcs)))
    fig.add_bar(y=svcs, x=[ps[s]["spans_after_current"] for s in svcs], orientation="h",
                name=names[0], marker_color=KEPT)
    fig.add_bar(y=svcs, x=[ps[s]["spans_after_proposed"] for s in svcs], orientation="h",
                name=names[1], marker_color=OTHER)
    return fig


# ------------------------------------------------------------------ HTML
def _n(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{int(v):,}"


def _usd(v) -> str:
    if v is None:
        return "–"
    return f"${v:,.2f}" if abs(v) >= 0.01 or v == 0 else f"${v:.3g}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _table(head: list[str], rows: list[list], cls: str = "") -> str:
    e = html.escape
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _card(key: str, value: str, label: str) -> str:
    return (f'<div class="card"><div class="num" data-key="{html.escape(key)}">{html.escape(value)}</div>'
            f'<div class="lbl">{html.escape(label)}</div></div>')


def _summary(rep: dict, prefix: str = "") -> str:
    f = rep["forecast"]
    cards = [
        _card(prefix + "traces", _n(rep["traces"]), "traces decided"),
        _card(prefix + "traces_kept", _n(rep["traces_kept"]), "traces kept"),
        _card(prefix + "keep_rate_traces", _pct(rep["keep_rate_traces"]), "of traces kept"),
        _card(prefix + "spans_before", _n(rep["spans_before"]), "spans before"),
        _card(prefix + "spans_after", _n(rep["spans_after"]), "spans after"),
        _card(prefix + "bytes_after", _n(rep["bytes_after"]), f"bytes after (of {_n(rep['bytes_before'])})"),
        _card(prefix + "usd_exported_month", _usd(f["usd_exported_month"]), "exported $ / month"),
        _card(prefix + "errors_kept", f"{rep['errors']['kept']:,} / {rep['errors']['traces']:,}",
              "error traces kept"),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _service_table(rep: dict) -> str:
    ps = rep["per_service"]
    fs = rep["forecast"]["services"]
    rows = [[s, _n(v["spans_before"]), _n(v["spans_after"]), _pct(v["keep_rate_spans"]),
             _n(v["bytes_before"]), _n(v["bytes_after"]), _usd(v["usd_before"]), _usd(v["usd_after"]),
             _usd(fs.get(s, {}).get("usd_received_month")), _usd(fs.get(s, {}).get("usd_exported_month"))]
            for s, v in sorted(ps.items(), key=lambda kv: -kv[1]["bytes_before"])]
    return _table(["service", "spans before", "spans after", "kept", "bytes before", "bytes after",
                   "$ before", "$ after", "$ received / month", "$ exported / month"], rows, "services")


def _policy_table(rep: dict) -> str:
    rows = [[p, _n(v["traces"]), _pct(v["share_of_traces"]),
             ", ".join(f"{t}: {n:,}" for t, n in rep["kept_by_policy_trigger"].get(p, {}).items())]
            for p, v in rep["per_policy"].items()]
    return _table(["policy", "traces kept", "of decided", "by trigger"], rows, "policies")


def _forecast_block(rep: dict) -> str:
    f = rep["forecast"]
    if f["usd_received_month"] is None:
        return f'<p class="note">{html.escape(f.get("note", ""))}</p>'
    budget = "no budget set (cost.monthly_budget_usd)"
    if f["budget_usd_month"]:
        verdict = "over" if f["over_budget"] else "within"
        budget = (f'<span class="{"bad" if f["over_budget"] else "ok"}" data-key="budget_verdict">'
                  f"{verdict} budget</span>: {_usd(f['usd_exported_month'])} of "
                  f"{_usd(f['budget_usd_month'])} ({_pct(f['budget_used'])})")
    return (f"<p>At the capture's rate ({_n(rep['capture']['seconds'])} s of traffic scaled to an "
            f"average month of {f['month_s'] / 86400:.2f} days): received "
            f"<b>{_usd(f['usd_received_month'])}</b>, exported <b>{_usd(f['usd_exported_month'])}</b> "
            f"a month. {budget}.</p>")


def _errors_line(rep: dict) -> str:
    e = rep["errors"]
    if e["all_kept"]:
        return f'<p class="ok" data-key="errors_verdict">Every error trace is kept ({e["traces"]:,}).</p>'
    ids = ", ".join(e["not_kept_trace_ids"])
    return (f'<p class="bad" data-key="errors_verdict">{e["traces"] - e["kept"]:,} of {e["traces"]:,} '
            f"error traces are not kept</p>" + _ids("not kept, e.g.", ids))


def _ids(label: str, ids: str) -> str:
    n = ids.count(",") + 1
    return (f'<details class="note"><summary>{html.escape(label)} {n} trace IDs</summary>'
            f"<code>{html.escape(ids)}</code></details>")


def _compare_block(d: dict, names) -> str:
    e = d["errors"]
    c = d["cost_month"]
    oa, ob = d["only_current"], d["only_proposed"]
    verdict = ('<p class="ok" data-key="compare_errors">Every error trace is still kept.</p>'
               if e["all_kept_proposed"] else
               f'<p class="bad" data-key="compare_errors">{e["traces"] - e["kept_proposed"]:,} of '
               f'{e["traces"]:,} error traces are not kept by {html.escape(names[1])}</p>')
    if e["lost_by_proposed_trace_ids"]:
        verdict += _ids("kept now, lost by the proposal, e.g.", ", ".join(e["lost_by_proposed_trace_ids"]))
    change = c["change"]
    cost = ("–" if change is None else ("+" if change > 0 else "−" if change < 0 else "±")
            + _usd(abs(change)))
    cards = [
        _card("diff_traces_kept_current", _n(d["traces_kept"]["current"]), f"kept by {names[0]}"),
        _card("diff_traces_kept_proposed", _n(d["traces_kept"]["proposed"]), f"kept by {names[1]}"),
        _card("diff_only_current", _n(oa["traces"]), f"only {names[0]} keeps"),
        _card("diff_only_proposed", _n(ob["traces"]), f"only {names[1]} keeps"),
        _card("diff_both", _n(d["kept_by_both"]), "kept by both"),
        _card("diff_cost_change", cost, "exported $ / month, proposed − current"),
    ]
    svc_rows = []
    for s, v in d["per_service"].items():
        svc_rows.append([s, _n(v["spans_after_current"]), _n(v["spans_after_proposed"]),
                         _n(v["spans_after_proposed"] - v["spans_after_current"]),
                         _n(oa["by_service"].get(s, 0)), _n(ob["by_service"].get(s, 0)),
                         _usd(v["usd_month_current"]), _usd(v["usd_month_proposed"])])
    pol_rows = [[p, _n(v["current"]), _n(v["proposed"]), _n(oa["by_policy"].get(p, 0)),
                 _n(ob["by_policy"].get(p, 0))] for p, v in d["per_policy"].items()]
    unp = d["unpaired_decisions"]
    note = ""
    if unp["current"] or unp["proposed"]:
        note = (f'<p class="note">{unp["current"]:,} / {unp["proposed"]:,} decisions had no partner in '
                "the other set (their timers split a trace differently); they are not in the diff.</p>")
    return (
        '<div class="cards">' + "".join(cards) + "</div>" + verdict + note
        + '<h3>Per policy</h3><div class="scroll">' + _table(
            ["policy", f"kept by {names[0]}", f"kept by {names[1]}", f"only {names[0]}", f"only {names[1]}"],
            pol_rows, "cmp-policies")
        + '</div><h3>Per service</h3><div class="scroll">' + _table(
            ["service", f"spans {names[0]}", f"spans {names[1]}", "change", f"traces only {names[0]}",
             f"traces only {names[1]}", f"$ / month {names[0]}", f"$ / month {names[1]}"],
            svc_rows, "cmp-services") + "</div>")


CSS = """
:root { color-scheme: light dark; --bg:#f7f7f9; --fg:#16181d; --card:#fff; --muted:#667; --line:#e3e5ea;
        --ok:#1b7f4b; --bad:#c62828; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#111317; --fg:#e8eaef; --card:#1b1e24; --muted:#9aa3b2; --line:#2a2e36; --ok:#5fd39a; --bad:#ff6b6b; }
}
* { box-sizing:border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; background:var(--bg); color:var(--fg); }
header { padding:14px 16px; border-bottom:1px solid var(--line); }
header h1 { font-size:19px; margin:0 0 4px; }
header p { margin:2px 0; color:var(--muted); font-size:13px; overflow-wrap:anywhere; }
main { padding:12px; max-width:1200px; margin:0 auto; display:grid; gap:12px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; min-width:0; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:0 0 8px; }
h3 { font-size:14px; margin:14px 0 6px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(140px,1fr)); gap:10px; }
.num { font-size:21px; font-weight:600; font-variant-numeric:tabular-nums; }
.lbl, .note { font-size:12px; color:var(--muted); }
.ok { color:var(--ok); font-weight:600; } .bad { color:var(--bad); font-weight:600; }
.charts { display:grid; gap:12px; grid-template-columns:repeat(auto-fit,minmax(min(100%,520px),1fr)); }
.chart { min-height:220px; min-width:0; }
.scroll { overflow-x:auto; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; font-size:13px; }
th, td { text-align:left; padding:3px 8px 3px 0; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:500; }
figure { margin:0; min-width:0; }
code { font-size:12px; overflow-wrap:anywhere; white-space:normal; }
"""

BOOT = """
"use strict";
(function () {
  const figs = JSON.parse(document.getElementById("figures").textContent);
  const config = {responsive: true, displaylogo: false, displayModeBar: false, scrollZoom: false};
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  const fg = () => getComputedStyle(document.body).color;
  const drawn = figs.map((f) => Plotly.newPlot(f.id, f.figure.data, f.figure.layout, config));
  function theme() {
    const c = fg();
    for (const f of figs) Plotly.relayout(f.id, {"font.color": c});
  }
  Promise.all(drawn).then(() => { theme(); document.body.dataset.charts = String(figs.length); });
  dark.addEventListener("change", theme);
})();
"""


def _script_json(obj) -> str:
    # inside <script>: "</" must not appear (it would end the element)
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def render(out: dict, config_names: tuple[str, ...]) -> str:
    """The HTML page for ``simulate``'s output dict (one run, or a
    comparison ``{"current", "proposed", "diff"}``)."""
    e = html.escape
    cmp_ = "diff" in out
    rep = out["current"] if cmp_ else out
    other: dict | None = out["proposed"] if cmp_ else None
    names = ("current", "proposed")
    figs: list[tuple[str, go.Figure]] = []

    def chart(fig) -> str:
        if fig is None:
            return ""
        fid = f"chart-{len(figs)}"
        figs.append((fid, fig))
        return (f'<figure><h3>{e(fig.layout.meta["title"])}</h3><div class="chart" id="{fid}"></div>'
                "</figure>")

    cap = rep["capture"]
    when = (f"{_iso(cap['start_unix_s'])} → {_iso(cap['end_unix_s'])} UTC ({_n(cap['seconds'])} s)"
            if cap["start_unix_s"] is not None else "no spans")
    cfgs = " vs ".join(f"{n}: <code>{e(c)}</code>" for n, c in zip(names, config_names)) if cmp_ \
        else f"<code>{e(config_names[0])}</code>"
    parts = [f"""<header><h1>Traceo Sampler — {"what-if comparison" if cmp_ else "simulation report"}</h1>
<p>policies: {cfgs}</p><p>capture: {e(", ".join(rep["inputs"]))}</p><p>{e(when)}</p></header><main>"""]
    if other is not None:
        parts.append('<section id="compare"><h2>What-if: current vs proposed</h2>'
                     + _compare_block(out["diff"], names) + '<div class="charts">'
                     + chart(fig_compare_only(out["diff"], names))
                     + chart(fig_compare_policies(rep, other, out["diff"], names))
                     + chart(fig_compare_services(out["diff"], names)) + "</div></section>")
    for label, r, prefix in ((names[0], rep, ""), (names[1], other, "proposed.")) if cmp_ else \
            (("", rep, ""),):
        if r is None:
            continue
        head = f" — {label}" if label else ""
        parts.append(f'<section><h2>Summary{e(head)}</h2>{_summary(r, prefix)}{_errors_line(r)}</section>')
    parts.append('<section><h2>Over time and by latency</h2><div class="charts">'
                 + chart(fig_timeline(rep, other, names)) + chart(fig_latency(rep, other, names))
                 + "</div></section>")
    for label, r in ((names[0], rep), (names[1], other)) if cmp_ else (("", rep),):
        if r is None:
            continue
        head = f" — {label}" if label else ""
        parts.append(f'<section><h2>Policies and services{e(head)}</h2><div class="charts">'
                     + chart(fig_policy_trigger(r)) + chart(fig_services(r)) + "</div>"
                     + '<div class="scroll">' + _policy_table(r) + "</div>"
                     + '<div class="scroll">' + _service_table(r) + "</div></section>")
        parts.append(f'<section><h2>Cost forecast{e(head)}</h2>{_forecast_block(r)}<div class="charts">'
                     + chart(fig_budget(r)) + chart(fig_forecast(r)) + "</div></section>")
    crow = [[k, _n(v)] for k, v in _consistency_rows(rep)]
    psc = rep["consistency"]["per_service"]
    svc_rows = [[s, _n(v.get("orphan_spans", 0)), _n(v.get("clock_skew_spans", 0))]
                for s, v in sorted(psc.items())]
    parts.append('<section><h2>Consistency findings</h2><div class="charts">'
                 + chart(fig_consistency(rep)) + '<div class="scroll">' + _table(["check", "count"], crow, "consistency")
                 + (_table(["service", "orphan spans", "clock-skewed spans"], svc_rows, "consistency-services")
                    if svc_rows else "") + "</div></div></section>")
    parts.append("</main>")
    figures = [{"id": fid, "figure": json.loads(fig.to_json())} for fid, fig in figs]
    title = "what-if comparison" if cmp_ else "simulation report"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Traceo Sampler — {title}</title><style>{CSS}</style></head><body>"
            + "".join(parts)
            + f'<script type="application/json" id="report-data">{_script_json(out)}</script>'
            + f'<script type="application/json" id="figures">{_script_json(figures)}</script>'
            + f"<script>{get_plotlyjs()}</script><script>{BOOT}</script></body></html>")


def write(path: str, out: dict, config_names: tuple[str, ...]) -> None:
    page = render(out, config_names)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)
