"""Agent-shaped traces made with the real OpenTelemetry SDK, exported over OTLP/HTTP or
OTLP/gRPC with the SDK's own exporters."""

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode


class Agent:
    """A tracer provider that exports to the daemon and also keeps every span in memory, so
    tests compare what the daemon returns against what the SDK actually produced."""

    def __init__(self, endpoint, service="support-agent", tenant="acme", compression=Compression.NoCompression,
                 grpc=False, token=None, credentials=None, certificate_file=None):
        """`grpc=True` uses opentelemetry-exporter-otlp-proto-grpc (`endpoint` is HOST:PORT or
        unix:///path); `token` goes in the exporter's headers as a bearer token; `credentials`
        are gRPC channel credentials for TLS."""
        self.memory = InMemorySpanExporter()
        headers = {"authorization": "Bearer " + token} if token else None
        if grpc:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
            from grpc import Compression as GRPCCompression

            self.exporter = GRPCSpanExporter(
                endpoint=endpoint, insecure=credentials is None, credentials=credentials, headers=headers, timeout=10,
                compression=GRPCCompression.Gzip if compression == Compression.Gzip else GRPCCompression.NoCompression)
        else:
            self.exporter = OTLPSpanExporter(endpoint=endpoint, compression=compression, timeout=10, headers=headers,
                                             certificate_file=certificate_file)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.version": "2.1.0", "tenant.id": tenant})
        )
        # Simple processors export each span as it ends: children before their root,
        # the order real agents produce.
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("agent.runtime", "0.9.3")

    def spans(self):
        return list(self.memory.get_finished_spans())

    def shutdown(self):
        self.provider.shutdown()


def hexid(n, width):
    return format(n, f"0{width}x")


def run_stolen_laptop(agent, run_id, with_root=True):
    """One run: model call, entity lookup, policy check, tool execution. Returns the policy span."""
    t = agent.tracer
    root_ctx = t.start_span("invoke_agent support-agent", attributes={"gen_ai.operation.name": "invoke_agent"})
    if with_root:
        root_ctx.set_attribute("agent.run.id", run_id)
    from opentelemetry import trace as api

    with api.use_span(root_ctx, end_on_exit=False):
        with t.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.prompt.version": "triage-v3",
        }):
            pass
        with t.start_as_current_span("execute_tool lookup_employee", attributes={
            "gen_ai.tool.name": "lookup_employee", "gen_ai.tool.call.arguments": '{"name": "John Smith"}',
        }):
            pass
        with t.start_as_current_span("policy.check", attributes={
            "policy.outcome": "approval_required", "policy.rule": "privileged-write-needs-approval",
            "gen_ai.tool.name": "disable_managed_device",
        }) as policy:
            pass
        with t.start_as_current_span("execute_tool disable_managed_device", attributes={
            "gen_ai.tool.name": "disable_managed_device", "operation.id": "op-" + run_id,
        }) as tool:
            tool.set_status(Status(StatusCode.ERROR, "device management API returned 502"))
    return root_ctx, policy


def approval_callback(agent, run_id, policy_span):
    """Hours later, in its own trace: the approval that links back to the policy check."""
    ctx = policy_span.get_span_context()
    with agent.tracer.start_as_current_span(
        "approval.granted", links=[Link(ctx)], attributes={"agent.run.id": run_id, "approval.approver": "alice"}
    ):
        with agent.tracer.start_as_current_span("execute_tool disable_managed_device", attributes={
            "gen_ai.tool.name": "disable_managed_device", "operation.id": "op-approved-" + run_id,
        }):
            pass
