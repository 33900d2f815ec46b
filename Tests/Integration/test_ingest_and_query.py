"""Round trips through the real OTel SDK exporter, the query API and the CLI."""

import gzip
import json
import subprocess
import urllib.parse
import urllib.request

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.trace import format_span_id, format_trace_id

from agents import Agent, approval_callback, run_stolen_laptop


def sdk_view(spans):
    """span id -> (trace id, parent id or None, name) as the SDK produced them."""
    out = {}
    for s in spans:
        parent = format_span_id(s.parent.span_id) if s.parent else None
        out[format_span_id(s.context.span_id)] = (format_trace_id(s.context.trace_id), parent, s.name)
    return out


def api_view(spans):
    return {s["spanId"]: (s["traceId"], s["parentSpanId"], s["name"]) for s in spans}


def test_agent_run_round_trips_exactly(daemon):
    agent = Agent(daemon.otlp_url)
    run_stolen_laptop(agent, "run-roundtrip")[0].end()
    agent.shutdown()
    expected = sdk_view(agent.spans())
    assert len(expected) == 5

    status, body = daemon.get("/api/v1/runs/run-roundtrip")
    assert status == 200
    assert api_view(body["spans"]) == expected
    run = body["run"]
    assert (run["spanCount"], run["errorCount"], run["traceCount"]) == (5, 1, 1)
    assert run["agent"] == "support-agent" and run["tenant"] == "acme" and run["provisional"] is False

    tool = next(s for s in body["spans"] if s["name"] == "execute_tool disable_managed_device")
    assert tool["attributes"]["operation.id"] == "op-run-roundtrip"
    assert tool["status"] == {"code": "ERROR", "message": "device management API returned 502"}
    assert tool["resource"]["service.name"] == "support-agent"
    assert tool["scope"] == {"name": "agent.runtime", "version": "0.9.3"}
    sdk_tool = next(s for s in agent.spans() if s.name == "execute_tool disable_managed_device")
    assert int(tool["startTimeUnixNano"]) == sdk_tool.start_time and int(tool["endTimeUnixNano"]) == sdk_tool.end_time

    # The same trace through /api/v1/traces.
    trace_id = next(iter(expected.values()))[0]
    status, body = daemon.get(f"/api/v1/traces/{trace_id}")
    assert status == 200 and api_view(body["spans"]) == expected

    # The CLI: JSON is the API's, the human view is an indented tree with the key facts.
    runs = json.loads(daemon.cli("runs", "--json").stdout)["runs"]
    assert [r["runId"] for r in runs] == ["run-roundtrip"]
    tree = daemon.cli("run", "run-roundtrip")
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert lines[0].startswith("run run-roundtrip") and "spans=5 errors=1" in lines[0]
    assert lines[1] == "findings: none"
    assert lines[2].startswith("invoke_agent support-agent")
    assert any(l.startswith("├─ chat gpt-4o") and "model=gpt-4o" in l for l in lines)
    assert any("policy.check" in l and "policy=approval_required" in l and "rule=privileged-write-needs-approval" in l
               for l in lines)
    assert any(l.startswith("└─ execute_tool disable_managed_device") and "ERROR" in l
               and "operation=op-run-roundtrip" in l for l in lines)
    human = daemon.cli("runs")
    assert "run-roundtrip" in human.stdout and "support-agent" in human.stdout


def test_run_spans_two_traces_with_a_late_approval(daemon):
    agent = Agent(daemon.otlp_url)
    root, policy = run_stolen_laptop(agent, "run-approval")
    root.end()
    approval_callback(agent, "run-approval", policy)
    agent.shutdown()
    expected = sdk_view(agent.spans())
    assert len({t for t, _, _ in expected.values()}) == 2

    status, body = daemon.get("/api/v1/runs/run-approval")
    assert status == 200
    assert api_view(body["spans"]) == expected
    assert body["run"]["traceCount"] == 2 and body["run"]["spanCount"] == 7
    grant = next(s for s in body["spans"] if s["name"] == "approval.granted")
    assert grant["links"] == [{
        "traceId": format_trace_id(policy.get_span_context().trace_id),
        "spanId": format_span_id(policy.get_span_context().span_id),
        "attributes": {},
    }]
    # The unnamed child of the approval trace joined the run through its trace.
    child = [s for s in body["spans"] if s["parentSpanId"] == grant["spanId"]]
    assert len(child) == 1 and "agent.run.id" not in child[0]["attributes"]


def test_spans_wait_under_their_trace_until_the_root_names_the_run(daemon):
    agent = Agent(daemon.otlp_url)
    root, _ = run_stolen_laptop(agent, "run-late-root")
    trace_id = format_trace_id(root.get_span_context().trace_id)
    # Children are exported (and acknowledged); the root has not ended yet.
    status, body = daemon.get("/api/v1/runs")
    assert [(r["runId"], r["provisional"], r["spanCount"]) for r in body["runs"]] == [(trace_id, True, 4)]
    root.end()
    agent.shutdown()
    status, body = daemon.get("/api/v1/runs")
    assert [(r["runId"], r["provisional"], r["spanCount"]) for r in body["runs"]] == [("run-late-root", False, 5)]
    # The trace ID a responder saw earlier still leads to the run.
    status, body = daemon.get(f"/api/v1/runs/{trace_id}")
    assert status == 200 and body["run"]["runId"] == "run-late-root"


def test_gzip_protobuf_and_json_bodies(daemon):
    agent = Agent(daemon.otlp_url, compression=Compression.Gzip)
    run_stolen_laptop(agent, "run-gzip")[0].end()
    agent.shutdown()
    assert daemon.get("/api/v1/runs/run-gzip")[1]["run"]["spanCount"] == 5

    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-agent"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "invoke_agent",
             "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000002000000000",
             "attributes": [{"key": "gen_ai.conversation.id", "value": {"stringValue": "conv-7"}},
                            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}}]},
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203332", "parentSpanId": "b7ad6b7169203331",
             "name": "chat", "kind": 3, "startTimeUnixNano": "1700000000100000000", "endTimeUnixNano": "1700000001000000000"}]}]}]}
    for encoding in (None, "gzip"):
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if encoding:
            data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
        with urllib.request.urlopen(urllib.request.Request(daemon.otlp_url, data=data, headers=headers)) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert json.loads(r.read()) == {}
    status, run = daemon.get("/api/v1/runs/conv-7")
    assert status == 200 and run["run"]["agent"] == "js-agent"
    assert run["run"]["spanCount"] == 4  # the same two spans, sent twice (retries are stored as sent)
    assert {s["spanId"] for s in run["spans"]} == {"b7ad6b7169203331", "b7ad6b7169203332"}  # reads deduplicate
    attrs = next(s for s in run["spans"] if s["name"] == "invoke_agent")["attributes"]
    assert attrs["gen_ai.usage.input_tokens"] == 1200


def test_runs_time_filters_and_limit(daemon):
    agent = Agent(daemon.otlp_url)
    for i in range(3):
        run_stolen_laptop(agent, f"run-{i}")[0].end()
    agent.shutdown()
    status, body = daemon.get("/api/v1/runs?limit=2")
    assert [r["runId"] for r in body["runs"]] == ["run-2", "run-1"]
    assert daemon.get("/api/v1/runs?since=1h")[1]["runs"].__len__() == 3
    assert daemon.get("/api/v1/runs?until=2000-01-01T00:00:00Z")[1]["runs"] == []
    status, body = daemon.get("/api/v1/runs?since=yesterday")
    assert status == 400 and "since" in body["error"]
    assert daemon.get("/api/v1/runs?limit=0")[0] == 400


def test_run_ids_that_need_escaping_round_trip_through_api_and_cli(daemon):
    agent = Agent(daemon.otlp_url)
    run_id = "tenant/acme run 7?x=1#y%"
    run_stolen_laptop(agent, run_id)[0].end()
    agent.shutdown()
    status, body = daemon.get("/api/v1/runs/" + urllib.parse.quote(run_id, safe=""))
    assert status == 200 and body["run"]["runId"] == run_id and body["run"]["spanCount"] == 5
    r = daemon.cli("run", run_id)
    assert r.returncode == 0 and r.stdout.startswith(f"run {run_id} ")
