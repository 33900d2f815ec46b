#!/usr/bin/env python3
"""Captures a workload exported by the real OpenTelemetry Python SDK, for `flightrec-loadgen
--requests FILE`.

Agent runs are made with the SDK's tracer and batched by its BatchSpanProcessor (512 spans per
export, the SDK's default); each export is encoded by the SDK's own OTLP protobuf encoder (the
bytes `OTLPSpanExporter` POSTs) and written as a u32 little-endian length followed by the
`ExportTraceServiceRequest` body.

The runs look like production agents': an `invoke_agent` root naming the run
(`agent.run.id`), model calls with GenAI attributes (model, token usage, finish reasons),
tool calls with JSON arguments and results, policy checks, HTTP client calls under tools
that do not carry the run ID (they join their trace's run), and one run in six resumed after
an approval in a second trace linked to the first.

    .venv/bin/python Bench/capture_sdk_workload.py --spans 300000 --out /tmp/sdk-workload.bin
"""

import argparse
import json
import random
import struct
import sys
import uuid

from opentelemetry import trace as api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status, StatusCode


class FileExporter(SpanExporter):
    def __init__(self, out):
        self.out = out
        self.spans = 0
        self.requests = 0
        self.bytes = 0

    def export(self, spans):
        body = encode_spans(spans).SerializeToString()
        self.out.write(struct.pack("<I", len(body)))
        self.out.write(body)
        self.spans += len(spans)
        self.requests += 1
        self.bytes += len(body)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


TOOLS = [
    ("lookup_employee", lambda r: {"name": r.choice(NAMES), "fields": ["email", "manager", "devices"]},
     lambda r: {"employee_id": "E%06d" % r.randrange(10**6), "status": "active", "devices": r.randrange(1, 4)}),
    ("search_tickets", lambda r: {"query": r.choice(QUERIES), "limit": 20, "status": "open"},
     lambda r: {"count": r.randrange(0, 20), "ids": ["INC-%07d" % r.randrange(10**7) for _ in range(3)]}),
    ("disable_managed_device", lambda r: {"device_id": "DEV-%08x" % r.getrandbits(32), "reason": "reported stolen"},
     lambda r: {"operation_id": "op-" + uuid.UUID(int=r.getrandbits(128)).hex[:16], "state": "disabled"}),
    ("open_ticket", lambda r: {"title": r.choice(QUERIES), "priority": r.choice(["p1", "p2", "p3"]),
                               "assignee": r.choice(NAMES)},
     lambda r: {"ticket": "INC-%07d" % r.randrange(10**7), "url": "https://itsm.example.com/t/%d" % r.randrange(10**6)}),
    ("refund_payment", lambda r: {"payment_id": "pay_%012x" % r.getrandbits(48), "amount": r.randrange(100, 90000) / 100,
                                  "currency": "EUR"},
     lambda r: {"refund_id": "re_%012x" % r.getrandbits(48), "status": r.choice(["succeeded", "pending"])}),
]
NAMES = ["Ana Lima", "John Smith", "Wei Zhang", "Fatima Noor", "Lars Berg", "Priya Patel", "Kofi Mensah"]
QUERIES = ["laptop stolen at airport", "vpn not connecting", "refund duplicate charge", "reset mfa device",
           "printer on floor 3 offline", "account locked after password change", "new starter onboarding"]
MODELS = ["gpt-4o", "claude-sonnet-4", "gemini-2.5-pro"]
RULES = ["privileged-write-needs-approval", "refund-under-limit", "read-only-allowed", "deny-by-default"]


def model_call(t, r, step):
    model = r.choice(MODELS)
    with t.start_as_current_span("chat " + model, kind=api.SpanKind.CLIENT) as s:
        s.set_attribute("gen_ai.operation.name", "chat")
        s.set_attribute("gen_ai.system", "openai" if model.startswith("gpt") else "anthropic")
        s.set_attribute("gen_ai.request.model", model)
        s.set_attribute("gen_ai.response.model", model + "-2025-08-01")
        s.set_attribute("gen_ai.request.temperature", 0.2)
        s.set_attribute("gen_ai.usage.input_tokens", r.randrange(400, 9000))
        s.set_attribute("gen_ai.usage.output_tokens", r.randrange(20, 900))
        s.set_attribute("gen_ai.response.finish_reasons", ["tool_calls" if step else "stop"])
        s.set_attribute("gen_ai.response.id", "chatcmpl-" + uuid.UUID(int=r.getrandbits(128)).hex[:24])
        s.set_attribute("gen_ai.prompt.version", "triage-v%d" % r.randrange(1, 5))
        s.set_attribute("gen_ai.output.messages", json.dumps([{
            "role": "assistant", "finish_reason": "tool_calls" if step else "stop",
            "parts": [{"type": "text", "content": "%s: checking %s before acting (%d)" % (
                r.choice(QUERIES), r.choice(NAMES), r.randrange(10**6))}]}]))


def tool_call(t, r, run_id, tool):
    name, args, result = tool
    with t.start_as_current_span("execute_tool " + name, kind=api.SpanKind.INTERNAL) as s:
        s.set_attribute("agent.run.id", run_id)
        s.set_attribute("gen_ai.operation.name", "execute_tool")
        s.set_attribute("gen_ai.tool.name", name)
        s.set_attribute("gen_ai.tool.call.id", "call_" + uuid.UUID(int=r.getrandbits(128)).hex[:20])
        s.set_attribute("gen_ai.tool.call.arguments", json.dumps(args(r)))
        out = result(r)
        s.set_attribute("gen_ai.tool.call.result", json.dumps(out))
        if "operation_id" in out:
            s.set_attribute("operation.id", out["operation_id"])
        with t.start_as_current_span("POST", kind=api.SpanKind.CLIENT) as h:  # no run ID: joins its trace's run
            h.set_attribute("http.request.method", "POST")
            h.set_attribute("url.full", "https://api.internal.example.com/v2/" + name.replace("_", "/"))
            h.set_attribute("server.address", "api.internal.example.com")
            code = r.choice([200, 200, 200, 201, 409, 502])
            h.set_attribute("http.response.status_code", code)
            if code >= 500:
                h.set_status(Status(StatusCode.ERROR, "upstream returned %d" % code))
                s.set_status(Status(StatusCode.ERROR, "tool failed"))


def policy_check(t, r, run_id, tool_name):
    with t.start_as_current_span("policy.check") as s:
        s.set_attribute("agent.run.id", run_id)
        s.set_attribute("policy.outcome", r.choice(["allowed", "allowed", "approval_required", "blocked"]))
        s.set_attribute("policy.rule", r.choice(RULES))
        s.set_attribute("policy.risk_tier", r.choice(["low", "medium", "high"]))
        s.set_attribute("gen_ai.tool.name", tool_name)


def run(t, r):
    run_id = str(uuid.UUID(int=r.getrandbits(128)))
    steps = r.randrange(2, 7)
    root = t.start_span("invoke_agent support-agent", kind=api.SpanKind.INTERNAL)
    root.set_attribute("agent.run.id", run_id)
    root.set_attribute("gen_ai.operation.name", "invoke_agent")
    root.set_attribute("gen_ai.agent.name", "support-agent")
    root.set_attribute("enduser.id", "U%07d" % r.randrange(10**7))
    with api.use_span(root, end_on_exit=False):
        for step in range(steps):
            model_call(t, r, step < steps - 1)
            if step < steps - 1:
                tool = r.choice(TOOLS)
                policy_check(t, r, run_id, tool[0])
                tool_call(t, r, run_id, tool)
    root.end()
    if r.randrange(6) == 0:  # resumed after an approval: a second trace, linked, same run
        link = Link(root.get_span_context(), {"link.type": "resumes"})
        with t.start_as_current_span("invoke_agent support-agent", links=[link]) as resumed:
            resumed.set_attribute("agent.run.id", run_id)
            resumed.set_attribute("gen_ai.operation.name", "invoke_agent")
            with t.start_as_current_span("approval.granted") as a:
                a.set_attribute("agent.run.id", run_id)
                a.set_attribute("approval.approver", r.choice(NAMES))
            tool_call(t, r, run_id, TOOLS[2])


class EndCounter(SpanProcessor):
    ended = 0

    def on_end(self, span):
        self.ended += 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spans", type=int, default=300_000)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    r = random.Random(a.seed)
    with open(a.out, "wb") as out:
        exporter = FileExporter(out)
        provider = TracerProvider(resource=Resource.create({
            "service.name": "support-agent", "service.version": "2.1.0", "deployment.environment": "prod",
            "tenant.id": "acme", "host.name": "agent-7f9c4d-2xk8p"}))
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 20, max_export_batch_size=512,
                                                       schedule_delay_millis=60_000))
        t = provider.get_tracer("agent.runtime", "0.9.3")
        counter = EndCounter()
        provider.add_span_processor(counter)
        while counter.ended < a.spans:
            run(t, r)
        provider.shutdown()
    print("captured %d spans in %d requests, %d bytes (%.0f bytes/span)" % (
        exporter.spans, exporter.requests, exporter.bytes, exporter.bytes / max(exporter.spans, 1)), file=sys.stderr)


if __name__ == "__main__":
    main()
