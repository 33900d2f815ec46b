#!/usr/bin/env python3
"""Writes flightrec-agents.json, the Grafana dashboard of the four layers of agent metrics
(outcome, loop, tool, safety) and the daemon's own, each panel segmented by version, tool,
tier or tenant through the dashboard's variables. Run it after changing a panel:
    python3 Deploy/grafana/generate.py
"""
import json
import os

SEL = 'tenant=~"$tenant",agent_version=~"$agent_version"'
TOOL_SEL = SEL + ',tool=~"$tool",risk_tier=~"$risk_tier"'

panels = []
y = 0


def row(title):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                   "id": len(panels) + 1, "panels": []})
    y += 1


def panel(title, exprs, unit="short", w=8, kind="timeseries", legend="{{agent_version}}", description=""):
    global y
    x = sum(p["gridPos"]["w"] for p in panels if p["gridPos"]["y"] == y and p["type"] != "row")
    if x + w > 24:
        y += 8
        x = 0
    panels.append({
        "type": kind, "title": title, "description": description, "id": len(panels) + 1,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}},
        "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": l}
                    for i, (e, l) in enumerate(exprs if isinstance(exprs[0], tuple) else [(exprs[0], legend)])],
    })


def p50_p95(bucket, window):
    """The median and 95th percentile of a histogram per agent version."""
    return [(f'histogram_quantile({q}, sum by (agent_version, le) (rate({bucket}{{{SEL}}}[{window}])))',
             f"{name} {{{{agent_version}}}}") for q, name in (("0.5", "p50"), ("0.95", "p95"))]


def next_row():
    global y
    y += 8


row("Outcome")
panel("Runs per minute by outcome", [(f'sum by (agent_version, outcome) (rate(flightrec_agent_runs_total{{{SEL}}}[5m])) * 60',
                                      "{{agent_version}} {{outcome}}")])
panel("Run error rate", [(f'sum by (agent_version) (rate(flightrec_agent_runs_total{{{SEL},outcome="error"}}[15m])) / '
                          f'sum by (agent_version) (rate(flightrec_agent_runs_total{{{SEL}}}[15m]))', "{{agent_version}}")],
      unit="percentunit")
panel("Escalation rate (runs with approval_required)",
      [(f'sum by (agent_version) (rate(flightrec_agent_run_escalations_total{{{SEL}}}[15m])) / '
        f'sum by (agent_version) (rate(flightrec_agent_runs_total{{{SEL}}}[15m]))', "{{agent_version}}")], unit="percentunit")
next_row()
panel("Run duration p50 / p95", p50_p95("flightrec_agent_run_duration_seconds_bucket", "15m"), unit="s", w=12)
panel("Runs by task type", [(f'sum by (task_type) (rate(flightrec_agent_runs_total{{{SEL}}}[15m])) * 60', "{{task_type}}")], w=12)
next_row()

row("Loop")
panel("Steps per run p50 / p95", p50_p95("flightrec_agent_run_steps_bucket", "1h"))
panel("Repeated tool calls per minute", [(f'sum by (agent_version, tool) (rate(flightrec_tool_repeated_calls_total{{{SEL},tool=~"$tool"}}[15m])) * 60',
                                          "{{agent_version}} {{tool}}")])
panel("Tokens per minute by type", [(f'sum by (agent_version, token_type) (rate(flightrec_gen_ai_client_token_usage_sum{{{SEL}}}[5m])) * 60',
                                     "{{agent_version}} {{token_type}}")])
next_row()
panel("Model call duration p95 by model", [(f'histogram_quantile(0.95, sum by (model, le) (rate(flightrec_gen_ai_client_operation_duration_seconds_bucket{{{SEL}}}[5m])))',
                                            "{{model}}")], unit="s", w=12)
panel("Cost per hour (USD)", [(f'sum by (agent_version, model) (rate(flightrec_agent_cost_usd_total{{{SEL}}}[1h])) * 3600',
                               "{{agent_version}} {{model}}")], unit="currencyUSD", w=12)
next_row()

row("Tool and dependency")
panel("Tool calls per minute by outcome", [(f'sum by (tool, outcome) (rate(flightrec_tool_calls_total{{{TOOL_SEL}}}[5m])) * 60',
                                            "{{tool}} {{outcome}}")])
panel("Tool timeout rate", [(f'sum by (tool, agent_version) (rate(flightrec_tool_calls_total{{{TOOL_SEL},outcome="timeout"}}[15m])) / '
                             f'sum by (tool, agent_version) (rate(flightrec_tool_calls_total{{{TOOL_SEL}}}[15m]))', "{{tool}} {{agent_version}}")],
      unit="percentunit")
panel("Tool call duration p95", [(f'histogram_quantile(0.95, sum by (tool, le) (rate(flightrec_tool_call_duration_seconds_bucket{{{TOOL_SEL}}}[5m])))',
                                  "{{tool}}")], unit="s")
next_row()
panel("Uncertain writes (timed out or unknown)", [(f'sum by (tool, risk_tier) (increase(flightrec_tool_uncertain_writes_total{{{TOOL_SEL}}}[1h]))',
                                                   "{{tool}} {{risk_tier}}")], w=24)
next_row()

row("Safety")
panel("Policy decisions per minute", [(f'sum by (outcome, risk_tier) (rate(flightrec_policy_decisions_total{{{TOOL_SEL}}}[5m])) * 60',
                                       "{{outcome}} {{risk_tier}}")])
panel("Blocked decisions by rule", [(f'sum by (rule) (increase(flightrec_policy_decisions_total{{{TOOL_SEL},outcome="blocked"}}[1h]))',
                                     "{{rule}}")])
panel("Approval denial rate", [(f'sum by (agent_version) (rate(flightrec_approvals_total{{{SEL},decision="denied"}}[1h])) / '
                                f'sum by (agent_version) (rate(flightrec_approvals_total{{{SEL}}}[1h]))', "{{agent_version}}")],
      unit="percentunit")
next_row()
panel("Findings by kind", [(f'sum by (kind) (increase(flightrec_findings_total{{{SEL}}}[1h]))', "{{kind}}")], w=12)
panel("Redactions by rule", [('sum by (rule) (increase(flightrec_redactions_total{tenant=~"$tenant"}[1h]))', "{{rule}}")], w=12)
next_row()

row("The daemon")
panel("Spans accepted per second", [("rate(flightrec_spans_accepted_total[1m])", "accepted"),
                                    ("sum by (reason) (rate(flightrec_requests_refused_total[1m]))", "refused {{reason}}")])
panel("fsync p99", [("histogram_quantile(0.99, rate(flightrec_fsync_duration_seconds_bucket[5m]))", "fsync p99")], unit="s")
panel("Index lag and analyser lag", [("flightrec_index_lag_spans", "unindexed spans"),
                                     ("flightrec_run_analyser_lag_seconds", "analyser lag (s)")])
next_row()
panel("Stored bytes", [("flightrec_stored_bytes", "bytes")], unit="bytes", w=12)
panel("Series per agent metric family", [("flightrec_metric_series", "{{family}}")], w=12)
next_row()
panel("Retention: bytes expired per hour", [("increase(flightrec_retention_expired_bytes_total[1h])", "expired")],
      unit="bytes")
panel("Retention: ingest refused at max_bytes", [("flightrec_retention_refusing_ingest", "refusing")],
      description="1 while the store is over retention.max_bytes with nothing past the floor to expire")
panel("Legal holds in force", [("flightrec_legal_holds", "holds")])
panel("Erasures pending", [("flightrec_erasures_pending", "pending")],
      description="Erasures hiding their data whose bytes are not all gone yet (normally seconds)")


def variable(name, query):
    return {"name": name, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "includeAll": True, "multi": True,
            "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "sort": 1}


dashboard = {
    "title": "FlightRecorder: agents", "uid": "flightrec-agents", "schemaVersion": 39, "version": 1,
    "tags": ["flightrec", "agents"], "timezone": "", "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
    "description": "The four layers of agent metrics FlightRecorder derives from stored spans, segmented by "
                   "tenant, version, tool and risk tier.",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
        variable("tenant", "label_values(flightrec_agent_runs_total, tenant)"),
        variable("agent_version", "label_values(flightrec_agent_runs_total, agent_version)"),
        variable("tool", "label_values(flightrec_tool_calls_total, tool)"),
        variable("risk_tier", "label_values(flightrec_tool_calls_total, risk_tier)"),
    ]},
    "panels": panels,
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flightrec-agents.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
print("wrote", out)
