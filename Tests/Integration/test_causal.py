"""Causal-path queries over runs with a known structure, ingested with the real OpenTelemetry
SDK: graph edges, the path to a side effect, skewed clocks, missing parents, duplicates,
writes without a policy decision, search and the critical path."""

import urllib.parse

from opentelemetry import trace as api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, format_span_id

from conftest import pseudonym

T0 = 1_767_000_000_000_000_000  # a fixed base time (ns), so every order is known
MS = 1_000_000


class Service:
    """One service's tracer, exporting over OTLP/HTTP with the SDK's exporter."""

    def __init__(self, d, name):
        self.provider = TracerProvider(resource=Resource.create({"service.name": name, "service.version": "2.1.0"}))
        self.provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=d.otlp_url, timeout=10)))
        self.tracer = self.provider.get_tracer("agent.runtime")

    def span(self, name, start, end, parent=None, links=(), error=None, **attributes):
        ctx = api.set_span_in_context(parent) if parent is not None else None
        s = self.tracer.start_span(name, context=ctx, links=list(links), start_time=T0 + start * MS,
                                   attributes={k.replace("__", "."): v for k, v in attributes.items()})
        if error:
            s.set_status(Status(StatusCode.ERROR, error))
        return s, (lambda: s.end(end_time=T0 + end * MS))


def sid(span):
    return format_span_id(span.get_span_context().span_id)


def stolen_laptop(d, run_id, grant=True, policy=True, duplicate=False):
    """invoke_agent ─ chat ─ lookup ─ policy.check(approval_required); a second trace:
    approval.granted (links to the policy check) ─ execute_tool disable_managed_device."""
    agent = Service(d, "support-agent")
    root, end_root = agent.span("invoke_agent support-agent", 0, 1000, agent__run__id=run_id)
    chat, end = agent.span("chat gpt-4o", 10, 100, parent=root, gen_ai__operation__name="chat",
                           gen_ai__request__model="gpt-4o", gen_ai__prompt__version="triage-v3")
    end()
    lookup, end = agent.span("execute_tool lookup_employee", 110, 150, parent=root,
                             gen_ai__tool__name="lookup_employee", tool__risk_tier="read",
                             gen_ai__tool__call__arguments='{"name": "John Smith"}')
    end()
    check = None
    if policy:
        check, end = agent.span("policy.check", 160, 170, parent=root, policy__outcome="approval_required",
                                policy__rule="privileged-write-needs-approval",
                                gen_ai__tool__name="disable_managed_device", approval__ticket=f"APR-{run_id}")
        end()
    end_root()
    links = [Link(check.get_span_context())] if (grant and check is not None) else []
    approval, end_approval = agent.span("approval.granted" if grant else "approval.denied", 5000, 5010,
                                        links=links, agent__run__id=run_id, approval__approver="alice",
                                        approval__ticket=f"APR-{run_id}")
    execs = []
    for i in range(2 if duplicate else 1):
        x, end = agent.span("execute_tool disable_managed_device", 5020 + 100 * i, 5100 + 100 * i, parent=approval,
                            gen_ai__operation__name="execute_tool", gen_ai__tool__name="disable_managed_device",
                            tool__risk_tier="privileged_write", operation__id=f"op-{run_id}-{i}",
                            idempotency__key=f"idem-{run_id}")
        end()
        execs.append(x)
    end_approval()
    agent.provider.shutdown()
    return dict(root=root, chat=chat, lookup=lookup, check=check, approval=approval, execs=execs)


def edges(graph, kind):
    return {(e["from"], e["to"]) for e in graph["edges"] if e["type"] == kind}


def test_graph_edges_and_the_causal_path_from_an_operation_id(daemon):
    s = stolen_laptop(daemon, "run-causal")
    status, graph = daemon.get("/api/v1/runs/run-causal/graph")
    assert status == 200 and len(graph["nodes"]) == 6 and len(graph["traces"]) == 2
    root, chat, lookup, check, approval = (sid(s[k]) for k in ("root", "chat", "lookup", "check", "approval"))
    x = sid(s["execs"][0])
    assert edges(graph, "child_of") == {(root, chat), (root, lookup), (root, check), (approval, x)}
    assert edges(graph, "precedes") == {(chat, lookup), (lookup, check), (root, approval)}
    assert edges(graph, "linked") == {(check, approval)}
    assert edges(graph, "member") == {("run:run-causal", root), ("run:run-causal", approval)}
    assert graph["adjustments"] == [] and graph["missingParents"] == []

    # Start from the side effect: the operation ID leads to the execution and its causes.
    status, body = daemon.get("/api/v1/lookup?key=operation.id&value=op-run-causal-0")
    assert status == 200 and len(body["matches"]) == 1
    match = body["matches"][0]
    assert match["runId"] == "run-causal" and match["spanId"] == x
    steps = match["path"]["steps"]
    assert [(st["role"], st["node"]["name"]) for st in steps] == [
        ("preceding", "invoke_agent support-agent"), ("ancestor", "approval.granted"),
        ("target", "execute_tool disable_managed_device")]
    # The approver is stored as a stable pseudonym, which the key's holder can check.
    alice = pseudonym(daemon, "alice")
    assert alice.startswith("hmac:p") and steps[1]["node"]["facts"]["approver"] == alice
    assert steps[2]["node"]["facts"]["operationId"] == "op-run-causal-0"
    assert steps[2]["node"]["facts"]["tier"] == "privileged_write"
    linked = steps[1]["linked"]
    assert [(l["relation"], l["node"]["spanId"]) for l in linked] == [("links_to", check)]
    policy = linked[0]
    assert policy["node"]["facts"]["policyOutcome"] == "approval_required"
    assert policy["node"]["facts"]["policyRule"] == "privileged-write-needs-approval"
    # The policy check's own path: the model call that proposed it and the lookup before it.
    assert [(st["role"], st["node"]["spanId"]) for st in policy["path"]] == [
        ("ancestor", root), ("preceding", chat), ("preceding", lookup), ("target", check)]
    assert policy["path"][1]["node"]["facts"]["model"] == "gpt-4o"
    assert policy["path"][1]["node"]["facts"]["promptVersion"] == "triage-v3"
    assert policy["path"][2]["node"]["facts"]["arguments"] == '{"name": "John Smith"}'

    # The same path by run and span, and from the CLI in one command.
    status, path = daemon.get(f"/api/v1/runs/run-causal/path?to={x}")
    assert status == 200 and path["steps"] == steps
    # The incident card answers directly, each answer naming its span.
    answer = match["answer"]
    assert answer == path["answer"] and answer["target"] == x
    assert answer["proposed_by"]["span_id"] == chat and answer["proposed_by"]["model"] == "gpt-4o"
    assert answer["proposed_by"]["prompt_version"] == "triage-v3"
    assert answer["policy"]["span_id"] == check and answer["policy"]["outcome"] == "approval_required"
    assert answer["policy"]["rule"] == "privileged-write-needs-approval"
    assert answer["approval"]["span_id"] == approval and answer["approval"]["approver"] == alice
    assert answer["approval"]["decision"] == "granted" and answer["approval"]["ticket"] == "APR-run-causal"
    assert answer["execution"]["operation_id"] == "op-run-causal-0" and answer["execution"]["status"] == "succeeded"
    assert answer["execution"]["idempotency_key"] == "idem-run-causal" and answer["execution"]["retries"] == 0
    # The lookup's arguments share no value with the write: it did not resolve its target.
    assert "entity_resolution" not in answer and answer["findings"] == []
    r = daemon.cli("why", "--operation-id", "op-run-causal-0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) <= 12 and "--path" in lines[-1], r.stdout
    card = {line[:12].strip(): line[12:] for line in lines[2:]}
    assert f"granted by {alice}" in card["approval"] and f"[{approval}]" in card["approval"]
    assert card["policy"].startswith("approval_required rule=privileged-write-needs-approval")
    assert "model=gpt-4o" in card["proposed by"] and "operation=op-run-causal-0" in card["execution"]
    r = daemon.cli("why", "--operation-id", "op-run-causal-0", "--path")
    assert r.returncode == 0 and f"approver={alice}" in r.stdout and "policy=approval_required" in r.stdout
    assert daemon.get("/api/v1/runs/run-causal/findings")[1]["findings"] == []
    # Unknown IDs and keys.
    assert daemon.get("/api/v1/lookup?key=operation.id&value=op-nope")[0] == 404
    assert daemon.get("/api/v1/lookup?key=service.name&value=x")[0] == 400
    assert daemon.get(f"/api/v1/runs/run-causal/path?to={'0' * 15}1")[0] == 404
    assert daemon.get("/api/v1/runs/run-causal/path?to=xyz")[0] == 400
    assert daemon.cli("why", "--ticket-id", "T-404").returncode == 66


def test_findings_for_missing_grant_write_without_policy_and_duplicates(daemon):
    stolen_laptop(daemon, "run-no-grant", grant=False)
    stolen_laptop(daemon, "run-no-policy", grant=False, policy=False)
    s = stolen_laptop(daemon, "run-dup", duplicate=True)

    kinds = lambda run: [f["kind"] for f in daemon.get(f"/api/v1/runs/{run}/findings")[1]["findings"]]
    assert kinds("run-no-grant") == ["approval_without_grant"]
    assert kinds("run-no-policy") == ["unapproved_write"]
    findings = daemon.get("/api/v1/runs/run-dup/findings")[1]["findings"]
    assert [f["kind"] for f in findings] == ["duplicate_execution"]
    assert set(findings[0]["spanIds"]) == {sid(x) for x in s["execs"]}
    r = daemon.cli("run", "run-no-policy")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].startswith("run run-no-policy") and lines[1] == "findings (1):"
    assert "unapproved_write" in lines[2]


def test_skewed_clocks_and_missing_parents(daemon):
    agent, tool = Service(daemon, "agent"), Service(daemon, "device-api")
    root, end_root = agent.span("invoke_agent", 0, 1000, agent__run__id="run-skew")
    call, end_call = agent.span("execute_tool disable_device", 100, 300, parent=root)
    # The device API's clock is 500 ms behind: its server span starts before the call does.
    handle, end_handle = tool.span("POST /devices/disable", -350, -250, parent=call)
    db, end_db = tool.span("db.update", -340, -300, parent=handle)
    end_db(), end_handle(), end_call()
    # A span whose parent was never exported.
    ghost = NonRecordingSpan(SpanContext(root.get_span_context().trace_id, 0x1234, False, TraceFlags(1)))
    orphan, end_orphan = agent.span("late retry", 400, 410, parent=ghost)
    end_orphan(), end_root()
    agent.provider.shutdown(), tool.provider.shutdown()

    graph = daemon.get("/api/v1/runs/run-skew/graph")[1]
    nodes = {n["spanId"]: n for n in graph["nodes"]}
    adj = {a["spanId"]: a["shiftNanos"] for a in graph["adjustments"]}
    assert set(adj) == {sid(handle)} and adj[sid(handle)] == 500 * MS  # centred in its 200 ms parent
    h, c, b = nodes[sid(handle)], nodes[sid(call)], nodes[sid(db)]
    assert int(c["startTimeUnixNano"]) <= int(h["startTimeUnixNano"]) < int(h["endTimeUnixNano"]) <= int(c["endTimeUnixNano"])
    assert int(h["startTimeUnixNano"]) <= int(b["startTimeUnixNano"]) and b["skewShiftNanos"] == 500 * MS
    assert graph["missingParents"] == [sid(orphan)]
    findings = daemon.get("/api/v1/runs/run-skew/findings")[1]["findings"]
    assert [(f["kind"], f["spanIds"]) for f in findings] == [("missing_parent", [sid(orphan)])]

    # The critical path runs through the corrected child, not around it.
    paths = daemon.get("/api/v1/runs/run-skew/critical-path")[1]["paths"]
    names = [seg["name"] for seg in paths[0]]
    assert names[:2] == ["invoke_agent", "execute_tool disable_device"] and "POST /devices/disable" in names


def test_search_with_the_filter_language(daemon):
    agent = Service(daemon, "support-agent")
    for i, outcome in enumerate(["blocked", "allowed", "blocked"]):
        root, end_root = agent.span("invoke_agent", 1000 * i, 1000 * i + 500, agent__run__id=f"run-search-{i}")
        check, end = agent.span("policy.check", 1000 * i + 10, 1000 * i + 20, parent=root, policy__outcome=outcome,
                                gen_ai__tool__name="disable_managed_device" if i < 2 else "open_ticket")
        end()
        end_root()
    agent.provider.shutdown()
    q = 'gen_ai.tool.name = "disable_managed_device" and policy.outcome = "blocked"'
    status, body = daemon.get("/api/v1/runs?where=" + urllib.parse.quote(q))
    assert status == 200 and [r["runId"] for r in body["runs"]] == ["run-search-0"]
    assert [s["name"] for s in body["matches"][0]["spans"]] == ["policy.check"]
    # A scan without an indexed equality, newest first.
    status, body = daemon.get("/api/v1/runs?where=" + urllib.parse.quote(
        'name = "policy.check" and not policy.outcome = "allowed"'))
    assert [r["runId"] for r in body["runs"]] == ["run-search-2", "run-search-0"]
    r = daemon.cli("find", q)
    assert r.returncode == 0 and "run-search-0" in r.stdout and "run-search-2" not in r.stdout
    # A bad expression points at the position of the error.
    status, body = daemon.get("/api/v1/runs?where=" + urllib.parse.quote('policy.outcome = blocked'))
    assert status == 400 and "at position 17" in body["error"]
    r = daemon.cli("find", 'gen_ai.tool.name ==')
    assert r.returncode == 64 and "position" in r.stderr
