"""OTLP/HTTP over a Unix socket, for agents running beside the collector."""

import http.client
import os
import socket
import stat
import subprocess

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id

from conftest import BIN, Daemon


class UnixHTTPConnection(http.client.HTTPConnection):
    """The small client: http.client over AF_UNIX, carrying what the SDK's exporter would send."""

    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def sdk_request(run_id):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sidecar-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agent")
    with tracer.start_as_current_span("invoke_agent", attributes={"agent.run.id": run_id}):
        with tracer.start_as_current_span("execute_tool lookup"):
            pass
    spans = memory.get_finished_spans()
    return spans, encode_spans(spans).SerializePartialToString()


def post(path, body):
    conn = UnixHTTPConnection(path)
    conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
    r = conn.getresponse()
    return r.status, r.read()


def test_otlp_http_over_a_unix_socket_with_mode_0660_and_a_stale_file(workdir):
    path = os.path.join(workdir, "otlp.sock")
    # A stale socket left by a crashed process: bound, never unlinked, nobody listening.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    d = Daemon(workdir, socket_path=path).start()
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        spans, body = sdk_request("run-socket")
        status, reply = post(path, body)
        assert status == 200 and reply == b""
        got = d.get("/api/v1/runs/run-socket")[1]["spans"]
        assert {s["spanId"] for s in got} == {format_span_id(s.context.span_id) for s in spans}

        # A second daemon must not steal a socket that is in use.
        other = os.path.join(workdir, "other")
        os.makedirs(other)
        r = subprocess.run([BIN, "serve", "--data", other, "--otlp-http", "127.0.0.1:0", "--api", "127.0.0.1:0",
                            "--otlp-http-socket", path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 78 and "is in use by a running process" in r.stderr
        # A regular file is never replaced.
        plain = os.path.join(workdir, "plain")
        open(plain, "w").close()
        r = subprocess.run([BIN, "serve", "--data", other, "--otlp-http-socket", plain], capture_output=True, text=True)
        assert r.returncode == 78 and "is not a socket" in r.stderr
    finally:
        d.stop()
