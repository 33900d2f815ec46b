"""The policy/executor sidecar end to end, with real processes: `flightrec serve` (the
collector), `flightrec guard serve` (the sidecar) and a real HTTP tool backend. The agent is
the real OpenTelemetry Python SDK: its spans go to the collector, and its trace context goes
to the sidecar in the W3C `traceparent` header.

The stolen-laptop scenario: "Disable John Smith's laptop"."""

import json
import os
import time
import urllib.parse

import pytest
from opentelemetry import trace as api
from opentelemetry.propagate import inject

from agents import Agent
from conftest import pseudonym, Daemon
from guard_fixtures import MDM_KEY, RECOVERY_PASSWORD, Guard, ToolBackend

DISABLE = "/devices/disable"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("guard"))
    backend = ToolBackend()
    collector = Daemon(workdir).start()
    guard = Guard(workdir, backend, collector.otlp_url).start()
    agent = Agent(collector.otlp_url)
    yield dict(backend=backend, collector=collector, guard=guard, agent=agent, workdir=workdir)
    agent.shutdown()
    guard.stop()
    collector.stop()
    backend.close()


class AgentRun:
    """One agent task: a root span carrying the run ID, model calls as child spans, and tool
    calls sent to the sidecar under the root span's trace context."""

    def __init__(self, world, run_id, actor="support-agent"):
        self.guard = world["guard"]
        self.tracer = world["agent"].tracer
        self.run_id = run_id
        self.actor = actor
        self.root = self.tracer.start_span(
            "invoke_agent support-agent", attributes={"agent.run.id": run_id, "gen_ai.operation.name": "invoke_agent"})

    def think(self, prompt):
        with api.use_span(self.root, end_on_exit=False):
            with self.tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.prompt.version": "it-support-v7", "gen_ai.prompt": prompt,
            }):
                time.sleep(0.002)

    def send(self, endpoint, tool, arguments, key=None, actor=None, **extra):
        headers = {}
        with api.use_span(self.root, end_on_exit=False):
            inject(headers)
        body = {"run_id": self.run_id, "actor": actor or self.actor, "tool": tool, "arguments": arguments,
                "model": "gpt-4o", "prompt_version": "it-support-v7", **extra}
        if key:
            body["idempotency_key"] = key
        return self.guard.post(endpoint, body, headers)

    def execute(self, tool, arguments, key, **kw):
        return self.send("/v1/execute", tool, arguments, key=key, **kw)

    def decide(self, tool, arguments, **kw):
        return self.send("/v1/decide", tool, arguments, **kw)

    def end(self):
        self.root.end()


def disable_args(device="D-300", owner="E-3003"):
    return {"device_id": device, "owner": owner, "reason": "laptop reported stolen"}


def approved_disable(world, run_id, key):
    """Look the device up, ask to disable it, have alice approve, run it. Returns
    (run, waiting answer, executed answer)."""
    run = AgentRun(world, run_id)
    run.think("Disable the laptop of Dana Lee, it was stolen")
    status, device = run.execute("lookup_device", {"device_id": "D-300"}, key=key + "-lookup")
    assert status == 200 and device["status"] == "succeeded", device
    status, waiting = run.execute("disable_managed_device", disable_args(), key=key)
    assert status == 200 and waiting["status"] == "awaiting_approval", waiting
    status, granted = world["guard"].post(f"/v1/approvals/{waiting['ticket']}/grant", {"approver": "alice"})
    assert status == 200 and granted["status"] == "granted", granted
    status, done = run.execute("disable_managed_device", disable_args(), key=key)
    assert status == 200, done
    return run, waiting, done


def test_1_ambiguous_person_is_blocked_and_nothing_is_written(world):
    run = AgentRun(world, "run-ambiguous")
    run.think("Disable John Smith's laptop")
    status, lookup = run.execute("lookup_employee", {"name": "John Smith"}, key="amb-lookup")
    assert status == 200 and lookup["status"] == "succeeded"
    assert len(lookup["result"]["matches"]) == 2
    before = len(world["backend"].calls_to(DISABLE))
    status, answer = run.execute("disable_managed_device", disable_args("D-100", "John Smith"), key="amb-disable")
    assert status == 200
    assert answer["status"] == "blocked" and answer["rule"] == "ambiguous_entity"
    assert answer["reason"].startswith("ambiguous_entity")
    assert "John Smith" not in json.dumps(answer)  # the reason never echoes the person
    # Differently spelled, still the same ambiguous person; `decide` agrees.
    status, d = run.decide("disable_managed_device", disable_args("D-100", "  john SMITH "))
    assert status == 200 and d["outcome"] == "blocked" and d["rule"] == "ambiguous_entity"
    assert len(world["backend"].calls_to(DISABLE)) == before
    run.end()


def test_2_requester_without_the_role_is_blocked(world):
    run = AgentRun(world, "run-intern", actor="intern-bot")
    status, answer = run.execute("disable_managed_device", disable_args(), key="intern-1")
    assert status == 200 and answer["status"] == "blocked" and answer["rule"] == "default-deny"
    status, d = run.decide("lookup_device", {"device_id": "D-300"})
    assert d["outcome"] == "blocked" and d["rule"] == "default-deny"
    # An actor the sidecar does not know is refused the same way, and a bad argument too.
    status, d = run.decide("lookup_device", {"device_id": "D-300"}, actor="nobody")
    assert d["outcome"] == "blocked" and d["rule"] == "unknown_actor"
    status, d = AgentRun(world, "run-schema").decide("lookup_device", {"device_id": "laptop-9", "force": True})
    assert d["outcome"] == "blocked" and d["rule"] == "schema"
    assert sorted(d["violations"]) == ["arguments.device_id: does not match the required pattern",
                                       "arguments.force: is not a known argument"]
    assert world["backend"].calls_to(DISABLE) == [] or all(
        c["idempotency_key"] != "intern-1" for c in world["backend"].calls_to(DISABLE))
    run.end()


def test_3_privileged_write_waits_for_an_approver_who_is_not_the_requester(world):
    guard, backend = world["guard"], world["backend"]
    run = AgentRun(world, "run-approval")
    run.think("Disable the laptop of Dana Lee, it was stolen")
    status, device = run.execute("lookup_device", {"device_id": "D-300"}, key="appr-lookup")
    assert device["status"] == "succeeded"
    before = len(backend.calls_to(DISABLE))
    status, waiting = run.execute("disable_managed_device", disable_args(), key="appr-disable")
    assert waiting["status"] == "awaiting_approval" and waiting["ticket"].startswith("APR-")
    assert waiting["rule"] == "privileged-needs-approval"
    ticket = waiting["ticket"]
    # decide gives the same stable ticket; a retry keeps waiting and runs nothing.
    status, d = run.decide("disable_managed_device", disable_args())
    assert d["outcome"] == "approval_required" and d["ticket"] == ticket and d["approval_status"] == "pending"
    status, again = run.execute("disable_managed_device", disable_args(), key="appr-disable")
    assert again["status"] == "awaiting_approval" and again["ticket"] == ticket
    assert len(backend.calls_to(DISABLE)) == before

    # The requester cannot approve its own call; nor can an actor without the approver
    # role; an approver of another tenant does not even see the ticket.
    status, body = guard.post(f"/v1/approvals/{ticket}/grant", {"approver": "support-agent"})
    assert status == 403 and "separation of duties" in body["error"]
    status, body = guard.post(f"/v1/approvals/{ticket}/grant", {"approver": "intern-bot"})
    assert status == 403 and "approver role" in body["error"]
    status, body = guard.post(f"/v1/approvals/{ticket}/grant", {"approver": "mallory"})
    assert status == 404
    status, body = guard.post("/v1/approvals/APR-000000000000/grant", {"approver": "alice"})
    assert status == 404
    status, pending = guard.get("/v1/approvals?status=pending")
    assert ticket in [a["ticket"] for a in pending["approvals"]]
    assert len(backend.calls_to(DISABLE)) == before

    status, granted = guard.post(f"/v1/approvals/{ticket}/grant", {"approver": "alice", "note": "confirmed by phone"})
    assert status == 200 and granted["status"] == "granted" and granted["approver"] == "alice"
    assert granted["requester"] == "support-agent" and granted["arguments"]["device_id"] == "D-300"
    status, body = guard.post(f"/v1/approvals/{ticket}/deny", {"approver": "alice"})
    assert status == 409

    status, done = run.execute("disable_managed_device", disable_args(), key="appr-disable")
    assert done["status"] == "succeeded" and done["operation_id"].startswith("op-disable-")
    calls = backend.calls_to(DISABLE)[before:]
    assert len(calls) == 1 and calls[0]["idempotency_key"] == "appr-disable"
    # The backend call continues the agent's trace.
    assert calls[0]["traceparent"].split("-")[1] == format(run.root.get_span_context().trace_id, "032x")
    # The grant was used: the ticket is consumed and lets nothing else through.
    status, a = guard.get(f"/v1/approvals/{ticket}")
    assert a["status"] == "consumed" and a["consumed_by"] == "appr-disable"
    run.end()


def test_4_retry_with_the_same_key_returns_the_stored_operation(world):
    backend = world["backend"]
    run, _, done = approved_disable(world, "run-retry", "retry-disable")
    assert done["status"] == "succeeded"
    n = len(backend.calls_to(DISABLE))
    for _ in range(3):
        status, again = run.execute("disable_managed_device", disable_args(), key="retry-disable")
        assert status == 200 and again["replayed"] is True
        assert again["status"] == "succeeded" and again["operation_id"] == done["operation_id"]
    assert len(backend.calls_to(DISABLE)) == n
    assert len([c for c in backend.calls_to(DISABLE) if c["idempotency_key"] == "retry-disable"]) == 1
    # The key names one call: other arguments under it are refused.
    status, body = run.execute("disable_managed_device", disable_args("D-200", "E-2002"), key="retry-disable")
    assert status == 409 and "different call" in body["error"]
    # The same call under a new key is a duplicate, beyond the run's budget.
    status, dup = run.execute("disable_managed_device", disable_args(), key="retry-disable-2")
    assert dup["status"] == "blocked" and dup["reason"].startswith("max_duplicate_calls")
    assert len(backend.calls_to(DISABLE)) == n
    run.end()


def test_5_a_hanging_backend_times_out_and_is_listed_as_uncertain(world):
    guard, backend = world["guard"], world["backend"]
    run = AgentRun(world, "run-hang")
    started = time.time()
    status, answer = run.execute("sync_inventory", {"device_id": "D-300"}, key="hang-1")
    elapsed = time.time() - started
    assert status == 200 and answer["status"] == "timed_out", answer
    assert "operation_id" not in answer or answer["operation_id"] is None
    assert 0.4 <= elapsed < 3, elapsed
    status, body = guard.get("/v1/uncertain")
    entry = [u for u in body["uncertain"] if u["idempotency_key"] == "hang-1"]
    assert len(entry) == 1 and entry[0]["status"] == "timed_out" and entry[0]["tool"] == "sync_inventory"
    assert entry[0]["run_id"] == "run-hang"
    # Never retried behind the operator's back: the same key replays timed_out.
    status, again = run.execute("sync_inventory", {"device_id": "D-300"}, key="hang-1")
    assert again["status"] == "timed_out" and again["replayed"] is True
    assert len([c for c in backend.calls_to("/inventory/sync") if c["idempotency_key"] == "hang-1"]) == 1
    # The collector's findings say so: an uncertain write, not a duplicate.
    collector = world["collector"]
    kinds = lambda b: [f["kind"] for f in b["findings"]]
    body = wait_for(collector, "/api/v1/runs/run-hang/findings", lambda b: "uncertain_write" in kinds(b))
    assert "duplicate_execution" not in kinds(body)
    uncertain = [f for f in body["findings"] if f["kind"] == "uncertain_write"][0]
    assert uncertain["severity"] == "medium" and "sync_inventory" in uncertain["message"]
    # An operator reconciles it; it leaves the list.
    status, rec = guard.post("/v1/executions/hang-1/reconcile",
                             {"actor": "alice", "status": "failed", "note": "inventory shows no sync"})
    assert status == 200 and rec["status"] == "failed"
    status, body = guard.get("/v1/uncertain")
    assert "hang-1" not in [u["idempotency_key"] for u in body["uncertain"]]
    # The reconciliation is recorded as a span linked to the execution, and settles the finding.
    body = wait_for(collector, "/api/v1/runs/run-hang/findings", lambda b: "uncertain_write" not in kinds(b))
    status, graph = collector.get("/api/v1/runs/run-hang/graph")
    names = {n["spanId"]: n["name"] for n in graph["nodes"]}
    assert ("execute_tool sync_inventory", "tool.reconciled") in {
        (names[e["from"]], names[e["to"]]) for e in graph["edges"] if e["type"] == "linked"}
    run.end()


def test_6_secrets_in_tool_results_are_redacted_before_the_agent_sees_them(world):
    run = AgentRun(world, "run-secrets")
    status, answer = run.execute("lookup_device", {"device_id": "D-200"}, key="secret-lookup")
    assert status == 200 and answer["status"] == "succeeded"
    text = json.dumps(answer)
    assert RECOVERY_PASSWORD not in text and MDM_KEY not in text
    assert answer["result"]["recovery"]["admin_password"] == "[REDACTED:credentials]"
    # No rule names this key, but the key names a credential: the built-in key rule masks it.
    assert answer["result"]["mdm_api_key"] == "[REDACTED:credential_key]"
    assert answer["result"]["owner_id"] == "E-2002"  # the rest is untouched
    # A replay answers from the store, which only ever held the redacted result.
    status, again = run.execute("lookup_device", {"device_id": "D-200"}, key="secret-lookup")
    assert again["replayed"] and again["result"] == answer["result"]
    guard = world["guard"]
    for root, _, files in os.walk(guard.data):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            assert RECOVERY_PASSWORD.encode() not in data and MDM_KEY.encode() not in data, name
    log = guard.read_log()
    assert RECOVERY_PASSWORD not in log and MDM_KEY not in log and "John Smith" not in log
    run.end()


def wait_for(collector, path, ready, timeout=20):
    deadline = time.time() + timeout
    while True:
        status, body = collector.get(path)
        if status == 200 and ready(body):
            return body
        if time.time() > deadline:
            raise AssertionError(f"{path}: {status} {body}")
        time.sleep(0.2)


def flatten(steps):
    """Every node on a causal path, with the linked steps and their own paths."""
    out = []
    for st in steps:
        out.append(st["node"])
        for link in st.get("linked", []):
            out.append(link["node"])
            out.extend(flatten(link.get("path", [])))
    return out


def test_7_the_collector_answers_why_the_device_was_disabled(world):
    collector = world["collector"]
    run, waiting, done = approved_disable(world, "run-stolen-laptop", "final-disable")
    assert done["status"] == "succeeded"
    run.end()
    world["agent"].provider.force_flush()
    op = done["operation_id"]
    body = wait_for(collector, "/api/v1/lookup?" + urllib.parse.urlencode({"key": "operation.id", "value": op}),
                    lambda b: len(b.get("matches", [])) == 1 and any(
                        n["name"] == "approval.granted" for n in flatten(b["matches"][0]["path"]["steps"])))
    match = body["matches"][0]
    assert match["runId"] == "run-stolen-laptop"
    steps = match["path"]["steps"]
    target = steps[-1]
    assert target["role"] == "target" and target["node"]["name"] == "execute_tool disable_managed_device"
    facts = target["node"]["facts"]
    assert facts["operationId"] == op and facts["tier"] == "privileged_write"
    assert facts["idempotencyKey"] == "final-disable" and facts["tool"] == "disable_managed_device"
    nodes = flatten(steps)
    names = [n["name"] for n in nodes]
    # The model step that proposed it.
    model = [n for n in nodes if n["name"] == "chat gpt-4o"]
    assert model and model[0]["facts"]["model"] == "gpt-4o" and model[0]["facts"]["promptVersion"] == "it-support-v7"
    # The policy decisions: approval required by the rule, then allowed once granted.
    checks = [n["facts"] for n in nodes if n["name"] == "policy.check"]
    assert {c["policyOutcome"] for c in checks} >= {"approval_required", "allowed"}
    assert all(c["policyRule"] == "privileged-needs-approval" for c in checks if c["tool"] == "disable_managed_device")
    # The approval and who granted it, linked to the request it answers.
    grants = [n for n in nodes if n["name"] == "approval.granted"]
    assert grants and grants[0]["facts"]["approver"] == pseudonym(collector, "alice")
    assert grants[0]["facts"]["approvalTicket"] == waiting["ticket"]
    assert names.count("policy.check") >= 2 and "execute_tool lookup_device" in names
    # In the run's graph the grant links back to the request it answers, a child of the
    # policy check that asked for it.
    status, graph = collector.get("/api/v1/runs/run-stolen-laptop/graph")
    assert status == 200
    by_id = {n["spanId"]: n for n in graph["nodes"]}
    linked = [(by_id[e["from"]]["name"], by_id[e["to"]]["name"]) for e in graph["edges"] if e["type"] == "linked"]
    # (Linked edges run from the cause to the span that links to it.)
    assert ("approval.requested", "approval.granted") in linked
    assert ("approval.granted", "execute_tool disable_managed_device") in linked
    requested = [n for n in graph["nodes"] if n["name"] == "approval.requested"][0]
    parent = [by_id[e["from"]] for e in graph["edges"] if e["type"] == "child_of" and e["to"] == requested["spanId"]]
    assert parent[0]["name"] == "policy.check" and parent[0]["facts"]["policyOutcome"] == "approval_required"
    # The whole run passes the findings: no unapproved write, no duplicate.
    status, findings = collector.get("/api/v1/runs/run-stolen-laptop/findings")
    assert status == 200
    kinds = [f["kind"] for f in findings["findings"]]
    assert "unapproved_write" not in kinds and "approval_without_grant" not in kinds
    assert "duplicate_execution" not in kinds
    # The incident card: every answer from the sidecar's own spans, each naming its span.
    answer = match["answer"]
    by_name = lambda span_id: by_id[span_id]["name"]
    assert answer["target"] == target["node"]["spanId"]
    assert by_name(answer["proposed_by"]["span_id"]) == "chat gpt-4o"
    assert answer["proposed_by"]["model"] == "gpt-4o" and answer["proposed_by"]["prompt_version"] == "it-support-v7"
    assert answer["proposed_by"]["agent_version"] == "2.1.0"
    entity = answer["entity_resolution"]
    assert by_name(entity["span_id"]) == "execute_tool lookup_device" and entity["shared_values"] == ["D-300"]
    policy = answer["policy"]
    assert by_name(policy["span_id"]) == "policy.check" and policy["outcome"] == "allowed"
    assert policy["rule"] == "privileged-needs-approval"
    assert by_id[policy["approval_required_by"]]["facts"]["policyOutcome"] == "approval_required"
    approval = answer["approval"]
    assert by_name(approval["span_id"]) == "approval.granted" and approval["ticket"] == waiting["ticket"]
    assert approval["approver"] == pseudonym(collector, "alice") and approval["decision"] == "granted"
    assert by_name(approval["request_span_id"]) == "approval.requested"
    assert approval["requested_at"] < approval["decided_at"]
    execution = answer["execution"]
    assert execution["span_id"] == answer["target"] and execution["operation_id"] == op
    assert execution["status"] == "succeeded" and execution["idempotency_key"] == "final-disable"
    # The lookup's own policy check (another tool) is not on the card.
    lookup_checks = [n["spanId"] for n in graph["nodes"]
                     if n["name"] == "policy.check" and n["facts"].get("tool") == "lookup_device"]
    assert lookup_checks and not set(lookup_checks) & set(answer["fed_by"])
    # One command for the responder.
    r = collector.cli("why", "--operation-id", op)
    assert r.returncode == 0, r.stderr
    assert f"granted by {pseudonym(collector, 'alice')}" in r.stdout and "model=gpt-4o" in r.stdout
    assert "lookup_device" in r.stdout and f"operation={op}" in r.stdout


def test_a_denied_approval_blocks_the_waiting_call(world):
    guard, backend = world["guard"], world["backend"]
    run = AgentRun(world, "run-deny")
    run.execute("lookup_device", {"device_id": "D-100"}, key="deny-lookup")
    status, waiting = run.execute("disable_managed_device", disable_args("D-100", "E-1001"), key="deny-1")
    assert waiting["status"] == "awaiting_approval"
    status, denied = guard.post(f"/v1/approvals/{waiting['ticket']}/deny", {"approver": "alice", "note": "wrong person"})
    assert status == 200 and denied["status"] == "denied"
    status, again = run.execute("disable_managed_device", disable_args("D-100", "E-1001"), key="deny-1")
    assert again["status"] == "blocked" and again["reason"].startswith("approval_denied")
    status, d = run.decide("disable_managed_device", disable_args("D-100", "E-1001"))
    assert d["outcome"] == "blocked" and d["approval_status"] == "denied"
    assert not [c for c in backend.calls_to(DISABLE) if c["idempotency_key"] == "deny-1"]
    status, stats = guard.get("/v1/stats")
    assert status == 200 and stats["redactions"].get("credentials", 0) >= 1 and stats["spans_dropped"] == 0
    run.end()


def test_bad_requests_get_precise_errors(world):
    guard = world["guard"]
    status, body = guard.post("/v1/execute", {"run_id": "r", "actor": "support-agent", "tool": "lookup_device",
                                              "arguments": {"device_id": "D-1"}})
    assert status == 400 and "idempotency_key" in body["error"]
    status, body = guard.post("/v1/decide", {"run_id": "r", "actor": "support-agent", "tool": "lookup_device",
                                             "arguments": "D-1"})
    assert status == 400 and body["error"] == "arguments must be a JSON object"
    status, body = guard.post("/v1/decide", {"run_id": "r", "actor": "support-agent", "tool": "lookup_device",
                                             "arguments": {}, "sudo": True})
    assert status == 400 and body["error"] == "unknown field sudo"
    status, body = guard.request("POST", "/v1/decide", None)
    assert status == 400
    status, body = guard.get("/v1/executions/nope?actor=support-agent")
    assert status == 404
    status, body = guard.post("/v1/decide", {"run_id": "r", "actor": "support-agent", "tool": "lookup_device",
                                             "arguments": {"device_id": "D-" + "1" * (2 << 20)}})
    assert status == 413 and "limit" in body["error"]
