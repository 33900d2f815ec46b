"""Hostile bytes from any client never stop the daemon: every malformed message gets a status,
and the daemon keeps serving everyone else (issue 11, defect 1).

gRPC framing is driven with `h2`, a raw HTTP/2 client, because a real gRPC client never sends
these frames; the real OTel SDK exporter then checks that the daemon still serves."""

import gzip
import socket
import struct
import time
import urllib.error
import urllib.request
import zlib

import h2.config
import h2.connection
import h2.events
import pytest

from agents import Agent
from conftest import Daemon

EXPORT_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CRASHER = bytes([0x0A, 0x01, 0x8A, 0x00, 0x00])


def valid_request():
    """A small valid ExportTraceServiceRequest, made by the real SDK's encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("hostile").start_as_current_span("ok", attributes={"agent.run.id": "run-hostile"}):
        pass
    return encode_spans(memory.get_finished_spans()).SerializeToString()


def frame(message, compressed=False, length=None):
    n = len(message) if length is None else length
    return struct.pack(">BI", 1 if compressed else 0, n) + message


def grpc_call(port, data_frames, headers=None, end=True, wait=15.0):
    """Sends one call on a fresh HTTP/2 connection; returns (grpc-status, grpc-message) or
    ("reset", code) or None when nothing arrived within `wait` seconds."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    base = [
        (":method", "POST"), (":scheme", "http"), (":path", EXPORT_PATH), (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ]
    conn.send_headers(sid, base + list(headers or []), end_stream=end and not data_frames)
    for i, chunk in enumerate(data_frames):
        conn.send_data(sid, chunk, end_stream=end and i == len(data_frames) - 1)
    sock.sendall(conn.data_to_send())
    status = {}
    deadline = time.time() + wait
    try:
        while time.time() < deadline:
            try:
                raw = sock.recv(65536)
            except socket.timeout:
                return None
            if not raw:
                return ("closed", None) if not status else (status.get("grpc-status"), status.get("grpc-message"))
            for event in conn.receive_data(raw):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    status.update(dict(event.headers))
                    if "grpc-status" in status:
                        return status["grpc-status"], status.get("grpc-message", "")
                elif isinstance(event, h2.events.StreamReset):
                    return "reset", event.error_code
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            sock.sendall(conn.data_to_send())
        return None
    finally:
        sock.close()


def post_http(daemon, body, content_type="application/x-protobuf"):
    request = urllib.request.Request(daemon.otlp_url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def assert_still_serving(daemon, run_id):
    """The real SDK exporter, over HTTP and gRPC, still gets its spans stored."""
    for agent in (Agent(daemon.otlp_url), Agent(daemon.grpc_endpoint, grpc=True)):
        with agent.tracer.start_as_current_span("chat gpt-4o", attributes={"agent.run.id": run_id}):
            pass
        agent.shutdown()
    status, run = daemon.get(f"/api/v1/runs/{run_id}")
    assert status == 200 and run["run"]["spanCount"] == 2, run


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    d = Daemon(str(tmp_path_factory.mktemp("hostile"))).start()
    yield d
    d.stop()


def test_key_varint_past_nested_message_is_400_not_a_crash(shared):
    for _ in range(3):
        status, _ = post_http(shared, CRASHER)
        assert status == 400
    assert shared.proc.poll() is None
    assert grpc_call(shared.grpc_port, [frame(CRASHER)])[0] == "3"  # INVALID_ARGUMENT
    assert_still_serving(shared, "run-after-crasher")


def test_truncated_gzip_over_grpc_does_not_wedge(shared):
    good = valid_request()
    packed = gzip.compress(good * 50)
    half = packed[: len(packed) // 2]
    started = time.time()
    result = grpc_call(shared.grpc_port, [frame(half, compressed=True)], headers=[("grpc-encoding", "gzip")])
    assert result is not None and result[0] == "13", result  # INTERNAL: could not decompress
    assert "decompress" in result[1]
    assert time.time() - started < 5
    status, _ = shared.get("/healthz")
    assert status == 200
    assert_still_serving(shared, "run-after-gzip")


CASES = [
    # (name, data frames, extra headers, expected grpc-status)
    ("bogus gzip payload", [frame(b"not gzip at all", compressed=True)], [("grpc-encoding", "gzip")], "13"),
    ("deflate labelled gzip", [frame(zlib.compress(b"x" * 100), compressed=True)], [("grpc-encoding", "gzip")], "13"),
    ("compressed flag without grpc-encoding", [frame(gzip.compress(b"x"), compressed=True)], [], "13"),
    ("unsupported encoding", [frame(b"abc", compressed=True)], [("grpc-encoding", "snappy")], "12"),
    ("length prefix shorter than the data", [struct.pack(">BI", 0, 3) + b"0123456789"], [], "13"),
    ("length prefix longer than the data", [struct.pack(">BI", 0, 100) + b"0123456789"], [], "13"),
    ("3-byte prefix", [b"\x00\x00\x00"], [], "13"),
    ("two messages in a unary call", [frame(b""), frame(b"")], [], "12"),
    ("no message at all", [], [], "12"),
    ("invalid compressed flag", [b"\x07" + struct.pack(">I", 0)], [], "13"),
]


@pytest.mark.parametrize("name,frames,headers,expected", CASES, ids=[c[0] for c in CASES])
def test_every_malformed_call_ends_with_its_status(shared, name, frames, headers, expected):
    result = grpc_call(shared.grpc_port, frames, headers=headers)
    assert result is not None, f"{name}: no answer"
    assert result[0] == expected, f"{name}: {result}"
    assert result[1], f"{name}: status without a message"


def test_valid_gzip_and_deflate_messages_are_stored(shared):
    body = valid_request()
    assert grpc_call(shared.grpc_port, [frame(gzip.compress(body), compressed=True)], [("grpc-encoding", "gzip")])[0] == "0"
    assert grpc_call(shared.grpc_port, [frame(zlib.compress(body), compressed=True)], [("grpc-encoding", "deflate")])[0] == "0"
    # A message split over several DATA frames.
    whole = frame(body)
    assert grpc_call(shared.grpc_port, [whole[:3], whole[3:10], whole[10:]])[0] == "0"
    status, run = shared.get("/api/v1/runs/run-hostile")
    assert status == 200 and run["run"]["spanCount"] >= 1


def test_call_that_never_sends_its_message_gets_deadline_exceeded(shared):
    started = time.time()
    result = grpc_call(shared.grpc_port, [], headers=[("grpc-timeout", "500m")], end=False, wait=20)
    assert result is not None and result[0] == "4", result  # DEADLINE_EXCEEDED
    assert time.time() - started < 5
    # Without grpc-timeout the server's own deadline (10 s) applies.
    started = time.time()
    result = grpc_call(shared.grpc_port, [frame(b"")[:2]], end=False, wait=20)
    assert result is not None and result[0] == "4", result
    assert 9 <= time.time() - started < 15
    assert_still_serving(shared, "run-after-deadline")
