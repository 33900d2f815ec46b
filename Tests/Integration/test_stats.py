"""The embedded answer to "what changed?": runs exported with the real OpenTelemetry SDK, settled
by the run analyser, summarised by GET /api/v1/stats and `flightrec stats`, and compared
version to version by GET /api/v1/stats/compare and `flightrec stats compare`."""

import json
import re
import time
import urllib.request

from opentelemetry import trace as api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from conftest import Daemon

RUNS = 400
SECOND = 1_000_000_000


def export_versions(daemon):
    """400 runs of each version. v2 takes twice the steps and its procurement calls time out
    three times as often (15 % against 5 %); everything else (durations, errors, policy) is the
    same. Every run lasts exactly 2 s, whatever its steps. A timeout that only the span's
    status names (an SDK-recorded TimeoutError) is a timeout, not an error."""
    provider = TracerProvider(resource=Resource.create({"service.name": "procurement-agent", "tenant.id": "acme"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=daemon.otlp_url, timeout=10),
                                                   max_queue_size=100_000, max_export_batch_size=512,
                                                   schedule_delay_millis=200))
    tracer = provider.get_tracer("test")
    start = time.time_ns() - 3600 * SECOND
    for version, base_steps, timeout_every in [("v1", 4, 20), ("v2", 8, 20)]:
        for i in range(RUNS):
            t0 = start + i * 4 * SECOND
            common = {"agent.run.id": f"{version}-{i}", "gen_ai.agent.version": version}
            root = tracer.start_span("invoke_agent procurement", start_time=t0,
                                     attributes={**common, "gen_ai.operation.name": "invoke_agent"})
            ctx = api.set_span_in_context(root)
            steps = base_steps + (i % 3) - 1 if version == "v1" else base_steps + 2 * ((i % 3) - 1)
            for s in range(steps - 1):
                tracer.start_span("chat", context=ctx, start_time=t0 + (s + 1) * 1000, attributes={
                    **common, "gen_ai.operation.name": "chat", "gen_ai.request.model": "m-1",
                    "gen_ai.usage.input_tokens": 100}).end(end_time=t0 + (s + 1) * 1000 + 500)
            timed_out = i % timeout_every < (3 if version == "v2" else 1)
            # v2's timeouts three ways: as the sidecar records them (tool.execution.status), as
            # the SDK records an exception escaping the span (status ERROR "TimeoutError: ...",
            # no attribute says so), and as an agent records one it caught (record_exception,
            # then ERROR with no message: only the exception event names the timeout).
            raised = timed_out and i % timeout_every == 1
            recorded = timed_out and i % timeout_every == 2
            attributes = {**common, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "procure",
                          "tool.risk_tier": "low_write"}
            if not raised and not recorded:
                attributes["tool.execution.status"] = "timed_out" if timed_out else "succeeded"
            tool = tracer.start_span("execute_tool procure", context=ctx, start_time=t0 + SECOND,
                                     attributes=attributes)
            if raised:
                try:
                    with api.use_span(tool, end_on_exit=False):
                        raise TimeoutError("the procurement backend did not answer")
                except TimeoutError:
                    pass
            elif recorded:
                tool.record_exception(TimeoutError("the procurement backend did not answer"))
                tool.set_status(Status(StatusCode.ERROR))
            elif timed_out:
                tool.set_status(Status(StatusCode.ERROR, "timeout"))
            tool.end(end_time=t0 + SECOND + 1000)
            root.end(end_time=t0 + 2 * SECOND)
    provider.shutdown()


def wait_for_runs(daemon, total, since="3h", timeout=120):
    """The stats by agent.version over `since`, once `total` runs have settled."""
    deadline = time.time() + timeout
    body = None
    while time.time() < deadline:
        code, body = daemon.get(f"/api/v1/stats?by=agent.version&since={since}")
        if code == 200 and sum(g["runs"] for g in body["groups"]) == total:
            return body
        time.sleep(0.5)
    raise AssertionError(f"runs not settled: {body}")


def test_stats_and_drift_flag_exactly_what_changed(workdir):
    daemon = Daemon(workdir, extra_config="metrics:\n  run_settle: 1s\n").start()
    try:
        export_versions(daemon)
        body = wait_for_runs(daemon, 2 * RUNS)
        groups = {g["group"]: g for g in body["groups"]}
        assert set(groups) == {"v1", "v2"}
        assert groups["v1"]["runs"] == RUNS and groups["v2"]["runs"] == RUNS
        assert groups["v1"]["steps"]["p50"] == 4 and groups["v2"]["steps"]["p50"] == 8
        assert groups["v1"]["tools"]["procure"]["timeoutRate"] == 0.05
        assert groups["v2"]["tools"]["procure"]["timeoutRate"] == 0.15
        assert groups["v1"]["tools"]["procure"]["errorRate"] == 0 == groups["v2"]["tools"]["procure"]["errorRate"]
        assert abs(groups["v1"]["durationSeconds"]["p50"] - 2) < 0.05
        # A failed tool call is not a failed run: the root's status decides.
        assert groups["v1"]["errorRate"] == 0 and groups["v2"]["errorRate"] == 0
        assert groups["v1"]["tokens"]["input"] == 100 * sum(4 + (i % 3) - 1 - 1 for i in range(RUNS))

        code, cmp = daemon.get("/api/v1/stats/compare?by=agent.version&since=3h&baseline=v1&candidate=v2")
        assert code == 200
        flagged = {c["measure"] for c in cmp["changes"]}
        assert flagged == {"steps_p50", "tool_timeout_rate{tool=procure}"}, cmp["changes"]
        assert {m["measure"] for m in cmp["measures"]} >= {"duration_p50_seconds", "repeated_call_rate"}
        steps = next(c for c in cmp["changes"] if c["measure"] == "steps_p50")
        assert steps["ratio"] == 2 and steps["pValue"] < 0.001

        # The CLI prints the same, and gates CI with --fail-on-change.
        out = daemon.cli("stats", "--since", "3h")
        assert out.returncode == 0, out.stderr
        assert re.search(r"^v2\s+400\s", out.stdout, re.M), out.stdout
        out = daemon.cli("stats", "compare", "--since", "3h", "--baseline", "v1", "--candidate", "v2", "--json")
        assert {c["measure"] for c in json.loads(out.stdout)["changes"]} == flagged
        out = daemon.cli("stats", "compare", "--since", "3h", "--baseline", "v1", "--candidate", "v1",
                         "--fail-on-change")
        assert out.returncode == 0 and "no measure changed" in out.stdout
        out = daemon.cli("stats", "compare", "--since", "3h", "--baseline", "v1", "--candidate", "v2",
                         "--fail-on-change")
        assert out.returncode == 1 and "steps_p50" in out.stdout
        # A misspelt candidate has no runs: the gate fails closed and says why, not "no change".
        assert cmp["baselineRuns"] == RUNS and cmp["candidateRuns"] == RUNS
        out = daemon.cli("stats", "compare", "--since", "3h", "--baseline", "v1", "--candidate", "v3",
                         "--fail-on-change")
        assert out.returncode == 1, out.stdout
        assert "cannot judge agent.version=v3: 0 settled runs" in out.stderr, out.stderr

        # A `where` narrows the runs to those with a matching span: the timeouts the attribute
        # names (two in three of v2's were raised or recorded as exceptions instead).
        code, narrowed = daemon.get("/api/v1/stats?by=agent.version&since=3h&where=" +
                                    urllib.request.quote('tool.execution.status = "timed_out"'))
        assert code == 200 and narrowed["source"] == "runs"
        assert {g["group"]: g["runs"] for g in narrowed["groups"]} == {"v1": 20, "v2": 20}
        assert daemon.get("/api/v1/stats?by=nonsense")[0] == 400

        # The run families of the metrics, and the stats, are the same after a restart.
        def runs_total():
            with urllib.request.urlopen(daemon.api_url + "/metrics") as r:
                text = r.read().decode()
            return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("flightrec_agent_runs_total{"))

        assert runs_total() == 2 * RUNS
        daemon.stop()
        daemon.start()
        assert wait_for_runs(daemon, 2 * RUNS)["groups"] == body["groups"]
        deadline = time.time() + 10
        while runs_total() != 2 * RUNS and time.time() < deadline:
            time.sleep(0.2)
        assert runs_total() == 2 * RUNS
    finally:
        daemon.stop()


def test_where_reads_the_agent_version_the_metrics_rule_gives(workdir):
    """`agent.version` in `where` follows the metrics' rule: a span's own version key, then its
    run's root's, then the resource's, then service.version. Here only each run's root names
    the version; the tool spans under it inherit it, not the resource's service.version."""
    daemon = Daemon(workdir, extra_config="metrics:\n  run_settle: 1s\n").start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "ops-agent", "service.version": "1.0"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=daemon.otlp_url, timeout=10)))
        tracer = provider.get_tracer("test")
        for i, version in enumerate(["r8", "r9", None]):
            attrs = {"agent.run.id": f"where-run-{i}", "gen_ai.operation.name": "invoke_agent"}
            if version:
                attrs["gen_ai.agent.version"] = version
            with tracer.start_as_current_span("invoke_agent", attributes=attrs):
                with tracer.start_as_current_span("execute_tool rotate_key", attributes={
                        "agent.run.id": f"where-run-{i}", "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "rotate_key"}):
                    pass
        provider.shutdown()

        def runs(expression):
            code, body = daemon.get("/api/v1/runs?where=" + urllib.request.quote(expression))
            assert code == 200, body
            return sorted(r["runId"] for r in body["runs"])

        tool = 'name = "execute_tool rotate_key"'
        assert runs(f'agent.version = "r9" and {tool}') == ["where-run-1"]
        assert runs(f'agent.version = "r8" and {tool}') == ["where-run-0"]
        # Without a version on the run's root, the resource's service.version applies.
        assert runs(f'agent.version = "1.0" and {tool}') == ["where-run-2"]
        # Grouping and filtering agree: the stats of the runs whose tool span is r9's.
        body = wait_for_runs(daemon, 3, since="1h")
        assert {g["group"] for g in body["groups"]} == {"r8", "r9", "1.0"}
        code, narrowed = daemon.get("/api/v1/stats?by=agent.version&since=1h&where=" +
                                    urllib.request.quote(f'agent.version = "r9" and {tool}'))
        assert code == 200 and {g["group"]: g["runs"] for g in narrowed["groups"]} == {"r9": 1}
    finally:
        daemon.stop()

