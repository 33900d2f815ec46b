"""Bad input gets a precise error, loses nothing, and never stops the daemon serving others."""

import gzip
import json
import subprocess
import urllib.error
import urllib.request

import pytest

from agents import Agent, run_stolen_laptop
from conftest import BIN, Daemon


def post(daemon, body, content_type="application/x-protobuf", encoding=None):
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    try:
        with urllib.request.urlopen(urllib.request.Request(daemon.otlp_url, data=body, headers=headers)) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def read_varint(raw, i):
    value, shift = 0, 0
    while True:
        b = raw[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def decode_status(raw):
    """google.rpc.Status: field 1 varint code, field 2 string message. Decoded by hand so the
    test does not depend on googleapis-common-protos being installed."""
    i, code, message = 0, None, None
    while i < len(raw):
        key = raw[i]
        i += 1
        if key == 0x08:
            code, i = read_varint(raw, i)
        elif key == 0x12:
            n, i = read_varint(raw, i)
            message = raw[i:i + n].decode()
            i += n
        else:
            raise AssertionError(f"unexpected field key {key}")
    return code, message


@pytest.fixture
def small_daemon(workdir):
    d = Daemon(workdir, extra_config="limits:\n  max_request_body: 64KiB\n").start()
    yield d
    d.stop()


def valid_request():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
    span.span_id = bytes.fromhex("00f067aa0ba902b7")
    span.name = "ok"
    return req


def test_each_bad_request_gets_its_precise_status_and_the_daemon_keeps_serving(small_daemon):
    d = small_daemon
    code, headers, body = post(d, b"\x0a\xff\xff\xff\x0f\x01")
    assert code == 400 and headers["Content-Type"] == "application/x-protobuf"
    assert decode_status(body)[0] == 3 and "malformed protobuf" in decode_status(body)[1]

    code, headers, body = post(d, b"{not json", content_type="application/json")
    assert code == 400 and "invalid OTLP/JSON" in json.loads(body)["message"]

    code, _, body = post(d, b"hello", content_type="text/plain")
    assert code == 415 and "unsupported content type" in json.loads(body)["message"]

    code, _, body = post(d, valid_request().SerializeToString(), encoding="br")
    assert code == 415 and "content encoding" in decode_status(body)[1]

    code, _, body = post(d, b"\x00" * (65 * 1024))
    assert code == 413 and "exceeds the limit" in decode_status(body)[1]

    bomb = gzip.compress(b"\x00" * (32 * 1024 * 1024))  # 32 MiB of zeros in ~32 KiB
    assert len(bomb) < 64 * 1024
    code, _, body = post(d, bomb, encoding="gzip")
    assert code == 413 and "inflates beyond the limit" in decode_status(body)[1]

    code, _, body = post(d, b"\x1f\x8b\x08\x00garbage", encoding="gzip")
    assert code == 400 and "gzip body is corrupt or truncated" in decode_status(body)[1]

    # An invalid span is left out and reported (partial success), not a failed request.
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    req = valid_request()
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00" * 16
    code, _, body = post(d, req.SerializeToString())
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert code == 200 and partial.rejected_spans == 1 and "spans[0]: invalid trace ID" in partial.error_message
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01" * 16
    req.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01" * 5
    code, _, body = post(d, req.SerializeToString())
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert code == 200 and partial.rejected_spans == 1 and "invalid span ID (5 bytes" in partial.error_message

    # Nothing of the refused requests was stored, and a good client is still served.
    assert d.get("/api/v1/runs")[1]["runs"] == []
    code, _, body = post(d, valid_request().SerializeToString())
    assert code == 200 and body == b""
    assert d.get("/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736")[0] == 200
    assert d.proc.poll() is None


def test_unknown_ids_are_404_and_bad_ids_400_with_cli_exit_codes(daemon):
    status, body = daemon.get("/api/v1/runs/no-such-run")
    assert status == 404 and body["error"] == "no run with this ID"
    assert daemon.get("/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736")[0] == 404
    status, body = daemon.get("/api/v1/traces/xyz")
    assert status == 400 and "32 hex characters" in body["error"]
    r = daemon.cli("run", "no-such-run")
    assert r.returncode == 66 and "no run with this ID" in r.stderr
    r = subprocess.run([BIN, "runs", "--api", "http://127.0.0.1:1"], capture_output=True, text=True)
    assert r.returncode == 69 and "cannot reach the daemon" in r.stderr


def test_bad_config_names_the_key_and_line(workdir):
    path = f"{workdir}/bad.yaml"
    with open(path, "w") as f:
        f.write("data_dir: /tmp/x\nstorage:\n  durability: fsync\n  segmentsize: 1MiB\n")
    r = subprocess.run([BIN, "serve", "--config", path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78
    assert "bad.yaml:4: storage.segmentsize: unknown key" in r.stderr
    r = subprocess.run([BIN, "serve", "--data", workdir, "--otlp-http", "0.0.0.0:4318"], capture_output=True, text=True)
    assert r.returncode == 78 and "requires auth.tokens" in r.stderr
    r = subprocess.run([BIN, "serve", "--data", workdir, "--otlp-grpc", "0.0.0.0:4317"], capture_output=True, text=True)
    assert r.returncode == 78 and "--otlp-grpc" not in r.stderr and "listeners.otlp_grpc: 0.0.0.0:4317" in r.stderr


def test_a_second_daemon_on_the_same_data_directory_is_refused(daemon):
    r = subprocess.run([BIN, "serve", "--data", daemon.data, "--otlp-http", "127.0.0.1:0", "--api", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 75 and "in use by another flightrec process" in r.stderr


def test_no_attribute_value_reaches_the_log(daemon):
    agent = Agent(daemon.otlp_url)
    with agent.tracer.start_as_current_span("invoke_agent", attributes={"agent.run.id": "run-log", "secret.note": "hunter2-xyzzy"}):
        pass
    agent.shutdown()
    post(daemon, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":"hunter2-xyzzy"}}]}]}]}]}',
         content_type="application/json")
    daemon.stop()
    assert "hunter2-xyzzy" not in daemon.read_log()
