"""Writes the seed corpus of each fuzzer into Fuzz/Corpus/<target>/ (committed). Requests
come from the real OpenTelemetry Python SDK's encoder, so the fuzzers start from the shapes
agents send. Run with the test virtualenv: .venv/bin/python Fuzz/make_seeds.py"""

import gzip
import hashlib
import json
import os
import struct
import zlib

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Corpus")


def write(target, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


def sdk_requests():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "support-agent", "tenant.id": "acme", "agent.run.id": "run-seed"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    t = provider.get_tracer("agent.runtime", "0.9.3")
    with t.start_as_current_span("invoke_agent", attributes={"agent.run.id": "run-seed"}) as root:
        with t.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 812,
            "gen_ai.input.messages": json.dumps([{"role": "user", "content": "reset jane.doe@example.com"}]),
            "user.password": "hunter2", "tags": ["a", "b"], "score": 0.5, "ok": True,
        }) as chat:
            chat.add_event("retry", {"attempt": 2, "card": "4111 1111 1111 1111"})
        with t.start_as_current_span("execute_tool disable_device", links=[Link(root.get_span_context(), {"k": "v"})],
                                     attributes={"gen_ai.tool.name": "disable_device", "operation.id": "op-1"}) as tool:
            tool.set_status(Status(StatusCode.ERROR, "backend said 502"))
    spans = memory.get_finished_spans()
    yield encode_spans(spans).SerializeToString()
    yield encode_spans(spans[:1]).SerializeToString()


def main():
    requests = list(sdk_requests())
    for r in requests:
        write("FuzzOTLPProtobuf", r)
    write("FuzzOTLPProtobuf", bytes([0x0A, 0x01, 0x8A, 0x00, 0x00]))  # issue 11's crasher
    write("FuzzOTLPProtobuf", b"")

    hexjson = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]},
                                  "scopeSpans": [{"scope": {"name": "s", "version": "1"}, "spans": [{
                                      "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                      "parentSpanId": "eee19b7ec3c1b173", "name": "json", "kind": 3,
                                      "startTimeUnixNano": "1", "endTimeUnixNano": 2,
                                      "attributes": [{"key": "n", "value": {"intValue": "7"}},
                                                     {"key": "l", "value": {"arrayValue": {"values": [{"boolValue": True}]}}},
                                                     {"key": "m", "value": {"kvlistValue": {"values": [
                                                         {"key": "x", "value": {"doubleValue": 1.5}}]}}},
                                                     {"key": "b", "value": {"bytesValue": "aGVsbG8="}}],
                                      "events": [{"timeUnixNano": "1", "name": "e"}],
                                      "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b172"}],
                                      "status": {"code": 2, "message": "m"}}]}]}]}
    write("FuzzOTLPJSON", json.dumps(hexjson).encode())
    write("FuzzOTLPJSON", b'{"resourceSpans": []}')
    write("FuzzOTLPJSON", b"{}")

    for r in requests:
        framed = lambda m, flag=0: struct.pack(">BI", flag, len(m)) + m
        write("FuzzGRPCFraming", b"\x00" + framed(r))
        write("FuzzGRPCFraming", b"\x02" + framed(gzip.compress(r), 1))
        write("FuzzGRPCFraming", b"\x03" + framed(zlib.compress(r), 1))
        write("FuzzGRPCFraming", b"\x02" + framed(gzip.compress(r)[: len(r) // 3], 1))

    for expr in [
        'gen_ai.tool.name = "disable_managed_device" and policy.outcome = "blocked"',
        "policy.outcome = 'allowed' or name = \"policy.check\"", 'not (policy.outcome = "blocked")',
        "gen_ai.usage.input_tokens >= 1000 AND gen_ai.usage.input_tokens < 1201", "duration > 4ms and duration <= 5ms",
        'status = "error" and tenant = "acme" and agent.version = "2.1.0"', 'resource.service.name ~ "age"',
        "not approval.approver exists and retry = false", 'start >= 1000 and start < "2001-01-01T00:00:00Z"',
    ]:
        write("FuzzWhere", expr.encode())

    deploy = os.path.join(os.path.dirname(ROOT), "..", "Deploy")
    for name in ["flightrec.yaml", "guard.yaml", "redaction-policy.yaml"]:
        with open(os.path.join(deploy, name), "rb") as f:
            write("FuzzConfig", f.read())


if __name__ == "__main__":
    main()
