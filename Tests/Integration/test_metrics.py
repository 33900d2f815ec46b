"""Agent metrics derived from stored spans, scraped by a real Prometheus server (Debian's
package) and checked through Prometheus's own query API against the workload's known counts,
before and after a restart of the daemon."""

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from agents import Agent
from conftest import ROOT, Daemon
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from prometheus_server import Prometheus

RUNS = 6


def export_workload(daemon, prefix="metrics-run"):
    """Six runs through the real SDK. Runs 0-2 name no agent version (the resource's
    service.version, 2.1.0, applies); runs 3 and 4 name gen_ai.agent.version v2 on their root
    span alone, which the SDK's batch processor exports last, after its children; run 5 on
    every span. Every span of runs 3-5 counts under v2 (the span's version, then its run's
    root's, then the resource's)."""
    agent = Agent(daemon.otlp_url)
    t = agent.tracer
    for i in range(RUNS):
        common = {"agent.run.id": f"{prefix}-{i}"}
        if i == 5:
            common["gen_ai.agent.version"] = "v2"
        root = {**common, "gen_ai.operation.name": "invoke_agent"}
        if i in (3, 4):
            root["gen_ai.agent.version"] = "v2"
        with t.start_as_current_span("invoke_agent", attributes=root):
            with t.start_as_current_span("chat claude-sonnet-4", attributes={
                    **common, "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4",
                    "gen_ai.usage.input_tokens": 1000 + i, "gen_ai.usage.output_tokens": 100,
                    "gen_ai.prompt": f"customer bob{i}@example.com asks for a reset"}):
                pass
            with t.start_as_current_span("policy.check", attributes={
                    **common, "policy.outcome": "allowed", "policy.rule": "rule-1",
                    "gen_ai.tool.name": "lookup_user", "tool.risk_tier": "read"}):
                pass
            with t.start_as_current_span("execute_tool lookup_user", attributes={
                    **common, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_user",
                    "tool.risk_tier": "read"}):
                pass
            if i % 2 == 1:
                with t.start_as_current_span("execute_tool reset_password", attributes={
                        **common, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "reset_password",
                        "tool.risk_tier": "low_write", "tool.execution.status": "timed_out"}) as s:
                    s.set_status(Status(StatusCode.ERROR, "backend timed out"))
            if i % 3 == 0:
                with t.start_as_current_span("policy.check", attributes={
                        **common, "policy.outcome": "blocked", "policy.rule": "rule-7",
                        "gen_ai.tool.name": "disable_device", "tool.risk_tier": "privileged_write"}):
                    pass
            if i % 2 == 0 or i == 5:
                with t.start_as_current_span("approval.decided", attributes={
                        **common, "approval.decision": "denied" if i == 5 else "granted",
                        "gen_ai.tool.name": "disable_device"}):
                    pass
    spans = len(agent.spans())
    agent.shutdown()
    return spans


# What Prometheus must answer for the workload: (query, value).
EXPECTED = [
    ('sum(flightrec_tool_calls_total{outcome="ok",tool="lookup_user"})', RUNS),
    ('sum(flightrec_tool_calls_total{outcome="ok",agent_version="2.1.0"})', 3),
    ('sum(flightrec_tool_calls_total{outcome="ok",agent_version="v2"})', 3),
    ('sum(flightrec_policy_decisions_total{agent_version="v2"})', 3 + 1),
    ('sum(flightrec_gen_ai_client_token_usage_count{token_type="input",agent_version="v2"})', 3),
    ('sum(flightrec_tool_calls_total{outcome="timeout",tool="reset_password"})', 3),
    ('sum(flightrec_tool_calls_total{outcome="error"})', 0),
    ('sum(flightrec_tool_uncertain_writes_total{risk_tier="low_write"})', 3),
    ('sum(flightrec_tool_call_duration_seconds_count)', RUNS + 3),
    ('sum(flightrec_policy_decisions_total{outcome="allowed",rule="rule-1"})', RUNS),
    ('sum(flightrec_policy_decisions_total{outcome="blocked",rule="rule-7",risk_tier="privileged_write"})', 2),
    ('sum(flightrec_approvals_total{decision="granted"})', 3),
    ('sum(flightrec_approvals_total{decision="denied"})', 1),
    ('sum(flightrec_gen_ai_client_token_usage_sum{token_type="input",model="claude-sonnet-4"})',
     sum(1000 + i for i in range(RUNS))),
    ('sum(flightrec_gen_ai_client_token_usage_count{token_type="output"})', RUNS),
    ('sum(flightrec_gen_ai_client_operation_duration_seconds_count{model="claude-sonnet-4"})', RUNS),
    ('sum(flightrec_redactions_total{rule="email"})', RUNS),
]


def check(prom, spans):
    for expr, value in EXPECTED:
        prom.wait_for(expr, value)
    prom.wait_for("flightrec_spans_accepted_total", spans)


def test_prometheus_scrapes_the_agent_metrics_and_they_survive_a_restart(workdir):
    # Spans that name no version of their own are counted once their run has settled.
    daemon = Daemon(workdir, extra_config="metrics:\n  run_settle: 1s\n").start()
    prom = Prometheus(workdir, daemon.api_port).start()
    try:
        spans = export_workload(daemon)
        check(prom, spans)
        # Label values are bounded identifiers: no attribute value (the e-mail address in the
        # prompt, a run ID) appears in the text format.
        with urllib.request.urlopen(daemon.api_url + "/metrics") as r:
            text = r.read().decode()
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "example.com" not in text and "metrics-run-" not in text
        assert 'flightrec_metric_series{family="flightrec_tool_calls_total"} ' in text
        # Prometheus's own linter passes the exposition: every family has HELP and TYPE, the
        # counters end in _total, no name breaks a convention.
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr

        # Prometheus asked for OpenMetrics: the exemplars carry run IDs, and only run IDs.
        deadline = time.time() + 30
        exemplars = []
        while time.time() < deadline and not exemplars:
            now = time.time()
            data = prom.api("query_exemplars", query="flightrec_tool_call_duration_seconds_bucket",
                            start=now - 600, end=now + 60)
            exemplars = [e for series in data for e in series["exemplars"]]
            time.sleep(0.5)
        assert exemplars, prom.target_health()
        assert {e["labels"]["run_id"] for e in exemplars} <= {f"metrics-run-{i}" for i in range(RUNS)}

        # Every query of the shipped Grafana dashboard runs on this Prometheus, and the
        # layers the workload exercises have data.
        with open(os.path.join(ROOT, "Deploy", "grafana", "flightrec-agents.json")) as f:
            dashboard = json.load(f)
        wanted = ["Tool calls per minute by outcome", "Policy decisions per minute", "Tokens per minute by type",
                  "Redactions by rule", "Spans accepted per second"]
        deadline = time.time() + 30
        while True:
            # (A rate needs two scrapes of a series; a query that does not parse fails here.)
            answered = {}
            for p in dashboard["panels"]:
                for target in p.get("targets", []):
                    expr = target["expr"].replace("$tenant", ".*").replace("$agent_version", ".*") \
                        .replace("$tool", ".*").replace("$risk_tier", ".*")
                    answered[p["title"]] = answered.get(p["title"], 0) + len(prom.query(expr))
            if all(answered[t] > 0 for t in wanted) or time.time() > deadline:
                break
            time.sleep(1)
        for title in wanted:
            assert answered[title] > 0, title

        # A restart: the counters come back from the index with the same values.
        daemon.stop()
        daemon.start()
        check(prom, 0)  # the ingest counter is the process's own and starts again
        for expr, value in EXPECTED:
            assert sum(prom.query(expr).values()) == value, expr

        # The same workload again (new runs), then SIGKILL as soon as the daemon shows it: the
        # index's metric rows are written at most once a second, so they may count less than
        # the index; start-up recounts the rest from the segment, and the runs' own counts are
        # stored with their aggregates. Every count doubles, exactly.
        spans = export_workload(daemon, prefix="again-run")
        for expr, value in EXPECTED:
            prom.wait_for(expr, 2 * value)
        daemon.stop(sig=signal.SIGKILL)
        daemon.start()
        for expr, value in EXPECTED:
            prom.wait_for(expr, 2 * value)

        # A span arriving after its run settled (run 3, whose root names v2) adds to the
        # counters, under its run's root's version.
        agent = Agent(daemon.otlp_url)
        with agent.tracer.start_as_current_span("execute_tool lookup_user", attributes={
                "agent.run.id": "metrics-run-3", "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_user", "tool.risk_tier": "read"}):
            pass
        agent.shutdown()
        prom.wait_for('sum(flightrec_tool_calls_total{outcome="ok",agent_version="v2"})', 2 * 3 + 1)
        prom.wait_for('sum(flightrec_tool_calls_total{outcome="ok",tool="lookup_user"})', 2 * RUNS + 1)

        # A run waiting on a human: its tool call ends, nothing more comes for ten settle
        # times, so the run is observed without its root (the resource's version); then the
        # root ends, naming v9. The call stays counted once, under the version it was counted
        # with.
        agent = Agent(daemon.otlp_url)
        root = agent.tracer.start_span("invoke_agent", attributes={
            "agent.run.id": "waiting-run", "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.version": "v9"})
        ctx = trace.set_span_in_context(root)
        with agent.tracer.start_as_current_span("execute_tool open_ticket", context=ctx, attributes={
                "agent.run.id": "waiting-run", "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "open_ticket", "tool.risk_tier": "low_write"}):
            pass
        agent.provider.force_flush()
        prom.wait_for('sum(flightrec_tool_calls_total{tool="open_ticket",agent_version="2.1.0"})', 1, timeout=60)
        root.end()
        agent.shutdown()
        deadline = time.time() + 30
        while time.time() < deadline:
            status, body = daemon.get("/api/v1/runs/waiting-run")
            if status == 200 and len(body["spans"]) == 2:
                break
            time.sleep(0.5)
        assert len(body["spans"]) == 2, body
        time.sleep(6)  # settled again (1 s) and observed again, scraped since
        assert sum(prom.query('sum(flightrec_tool_calls_total{tool="open_ticket"})').values()) == 1
        assert not prom.query('flightrec_tool_calls_total{tool="open_ticket",agent_version="v9"}')
    finally:
        prom.stop()
        daemon.stop()


def test_metrics_endpoint_needs_the_metrics_or_admin_role(workdir):
    tokens = {"scraper": ("tok-scraper-51", "metrics"), "responder": ("tok-resp-52", "responder"),
              "ingest": ("tok-ingest-53", "ingest"), "ingest-globex": ("tok-ingest-54", "ingest"),
              "scraper-globex": ("tok-scraper-55", "metrics")}
    lines = ["auth:\n  tokens:\n"]
    for name, (tok, role) in tokens.items():
        digest = hashlib.sha256(tok.encode()).hexdigest()
        tenant = "globex" if name.endswith("globex") else "acme"
        tenants = f"tenant: {tenant}" if role == "ingest" else \
            "tenants: [globex]" if name == "scraper-globex" else "tenants: ['*']"
        lines.append(f"    - name: {name}\n      sha256: {digest}\n      {tenants}\n      roles: [{role}]\n")
    lines.append("metrics:\n  run_settle: 1s\n")
    daemon = Daemon(workdir, extra_config="".join(lines)).start()
    prom = None
    try:
        def status(tok):
            request = urllib.request.Request(daemon.api_url + "/metrics")
            if tok:
                request.add_header("Authorization", "Bearer " + tok)
            try:
                with urllib.request.urlopen(request) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert status(None) == 401
        assert status("wrong") == 401
        assert status(tokens["responder"][0]) == 403
        assert status(tokens["scraper"][0]) == 200
        # The metrics role reads /metrics and nothing else.
        code, _ = daemon.get("/api/v1/runs", token=tokens["scraper"][0])
        assert code == 403
        prom = Prometheus(workdir, daemon.api_port, token=tokens["scraper"][0]).start()
        prom.wait_for('up{job="flightrec"}', 1)
        prom.wait_for("count(flightrec_metric_series)", 15)  # one per agent metric family
        assert all(h == "up" for h, _ in prom.target_health())

        # Tenants stay apart: a metrics token bound to globex reads globex's series only (and
        # not the daemon's own families, which count every tenant); the '*' token reads both.
        for name in ("ingest", "ingest-globex"):
            agent = Agent(daemon.otlp_url, token=tokens[name][0])
            with agent.tracer.start_as_current_span("execute_tool lookup", attributes={
                    "agent.run.id": f"scoped-{name}", "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "lookup", "tool.risk_tier": "read"}):
                pass
            agent.shutdown()

        def scrape(tok, accept=None):
            request = urllib.request.Request(daemon.api_url + "/metrics", headers={"Authorization": "Bearer " + tok})
            if accept:
                request.add_header("Accept", accept)
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.read().decode()

        deadline = time.time() + 30
        while 'tenant="globex"' not in scrape(tokens["scraper"][0]) and time.time() < deadline:
            time.sleep(0.5)
        everything = scrape(tokens["scraper"][0])
        assert 'tenant="acme"' in everything and 'tenant="globex"' in everything
        for accept in (None, "application/openmetrics-text;version=1.0.0"):
            scoped = scrape(tokens["scraper-globex"][0], accept)
            samples = [line for line in scoped.splitlines() if line and not line.startswith("#")]
            assert samples and all('tenant="globex"' in line for line in samples), scoped
            assert "flightrec_spans_accepted_total" not in scoped and "flightrec_tool_calls_total" in scoped
        lint = subprocess.run(["promtool", "check", "metrics"], input=scrape(tokens["scraper-globex"][0]),
                              capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        if prom:
            prom.stop()
        daemon.stop()
