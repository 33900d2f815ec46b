"""OTLP/gRPC with the real OpenTelemetry Python gRPC exporter: TCP, gzip, TLS and a Unix
socket, read back exactly; the OTLP status codes for bad data; partial success."""

import datetime
import os
import stat

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from agents import Agent, run_stolen_laptop
from conftest import Daemon

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def export_call(channel):
    return channel.unary_unary(
        EXPORT, request_serializer=lambda b: b, response_deserializer=ExportTraceServiceResponse.FromString)


def assert_read_back_exactly(d, agent, run_id):
    """The daemon returns exactly the spans the SDK produced: IDs, parents, names, attributes."""
    expected = {format_span_id(s.context.span_id): s for s in agent.spans()}
    status, body = d.get(f"/api/v1/runs/{run_id}")
    assert status == 200, body
    got = {s["spanId"]: s for s in body["spans"]}
    assert set(got) == set(expected)
    for sid, s in expected.items():
        g = got[sid]
        assert g["traceId"] == format_trace_id(s.context.trace_id)
        assert g["name"] == s.name
        assert g.get("parentSpanId") == (format_span_id(s.parent.span_id) if s.parent else None)
        assert int(g["startTimeUnixNano"]) == s.start_time and int(g["endTimeUnixNano"]) == s.end_time
        assert {k: g["attributes"][k] for k in s.attributes} == dict(s.attributes)


def test_grpc_exporter_over_tcp_with_gzip_and_over_a_unix_socket(workdir):
    path = os.path.join(workdir, "grpc.sock")
    d = Daemon(workdir, listeners=f"  otlp_grpc_socket: {path}\n").start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        plain = Agent(d.grpc_endpoint, grpc=True)
        run_stolen_laptop(plain, "run-grpc-tcp")[0].end()
        zipped = Agent(d.grpc_endpoint, grpc=True, compression=Compression.Gzip)
        run_stolen_laptop(zipped, "run-grpc-gzip")[0].end()
        local = Agent("unix://" + path, grpc=True)
        run_stolen_laptop(local, "run-grpc-unix")[0].end()
        for agent, run in [(plain, "run-grpc-tcp"), (zipped, "run-grpc-gzip"), (local, "run-grpc-unix")]:
            agent.shutdown()
            assert_read_back_exactly(d, agent, run)
        # The same workload over OTLP/HTTP lands in the same store, side by side.
        http = Agent(d.otlp_url)
        run_stolen_laptop(http, "run-http")[0].end()
        http.shutdown()
        assert_read_back_exactly(d, http, "run-http")
    finally:
        d.stop()


def make_tls(workdir):
    """A CA and a server certificate for 127.0.0.1/localhost, made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flightrec test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(workdir, n) for n in ("ca.pem", "server.pem", "server.key")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def test_grpc_and_http_over_tls(workdir, monkeypatch):
    # requests lets these variables override the exporter's own CA file (a known quirk).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca, cert, key = make_tls(workdir)
    d = Daemon(workdir, tls=(cert, key))
    d.tls = (ca, None)  # the client trusts the CA
    d.start()
    try:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        agent = Agent(f"localhost:{d.grpc_port}", grpc=True, credentials=creds)
        run_stolen_laptop(agent, "run-grpc-tls")[0].end()
        agent.shutdown()
        assert_read_back_exactly(d, agent, "run-grpc-tls")

        http = Agent(f"https://localhost:{d.otlp_port}/v1/traces", certificate_file=ca)
        run_stolen_laptop(http, "run-http-tls")[0].end()
        http.shutdown()
        assert_read_back_exactly(d, http, "run-http-tls")

        # The CLI reads the API over TLS with the CA given by FLIGHTREC_CACERT.
        r = d.cli("run", "run-grpc-tls")
        assert r.returncode == 0, r.stderr
        assert "execute_tool disable_managed_device" in r.stdout

        # A plaintext gRPC client cannot talk to the TLS listener.
        with grpc.insecure_channel(d.grpc_endpoint) as channel:
            try:
                export_call(channel)(ExportTraceServiceRequest().SerializeToString(), timeout=5)
                assert False, "plaintext call to a TLS listener succeeded"
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        d.stop()


def sdk_batch(n, bad_index=None, run_id="run-partial"):
    """`n` spans from the real SDK in one trace; span `bad_index` ends before it starts."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "batch-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agent")
    with tracer.start_as_current_span("invoke_agent", attributes={"agent.run.id": run_id}) as root:
        start = root.start_time
        for i in range(n - 1):
            s = tracer.start_span(f"step {i}", start_time=start + 1000 * (i + 1))
            s.end(end_time=start + 1000 * (i + 1) - (500 if i == bad_index else -500))
    return memory.get_finished_spans()


def test_partial_success_over_grpc_and_http_stores_99_and_reports_1(workdir):
    import urllib.request

    d = Daemon(workdir).start()
    try:
        spans = sdk_batch(100, bad_index=41, run_id="run-partial-grpc")
        with grpc.insecure_channel(d.grpc_endpoint) as channel:
            response = export_call(channel)(encode_spans(spans).SerializeToString(), timeout=10)
        assert response.partial_success.rejected_spans == 1
        assert "end time is before start time" in response.partial_success.error_message
        status, body = d.get("/api/v1/runs/run-partial-grpc")
        assert body["run"]["spanCount"] == 99 and len(body["spans"]) == 99
        assert "step 41" not in {s["name"] for s in body["spans"]}

        spans = sdk_batch(100, bad_index=7, run_id="run-partial-http")
        request = urllib.request.Request(d.otlp_url, data=encode_spans(spans).SerializeToString(),
                                         headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(request) as r:
            response = ExportTraceServiceResponse.FromString(r.read())
        assert response.partial_success.rejected_spans == 1
        status, body = d.get("/api/v1/runs/run-partial-http")
        assert body["run"]["spanCount"] == 99 and "step 7" not in {s["name"] for s in body["spans"]}
    finally:
        d.stop()


def test_grpc_status_codes_for_bad_data_and_limits(workdir):
    d = Daemon(workdir, extra_config="limits:\n  max_request_body: 64KiB\n  max_spans_per_request: 50\n").start()
    try:
        with grpc.insecure_channel(d.grpc_endpoint) as channel:
            call = export_call(channel)
            for body, code, text in [
                (b"\x0a\xff\xff\xff\x0f\x01", grpc.StatusCode.INVALID_ARGUMENT, "malformed protobuf"),
                (encode_spans(sdk_batch(51)).SerializeToString(), grpc.StatusCode.INVALID_ARGUMENT,
                 "request has 51 spans; the limit is 50"),
            ]:
                try:
                    call(body, timeout=10)
                    assert False, "bad request accepted"
                except grpc.RpcError as e:
                    assert e.code() == code and text in e.details(), (e.code(), e.details())
            # Over the size limit, measured after decompression: RESOURCE_EXHAUSTED with a message
            # and no RetryInfo, so the exporter does not retry it.
            for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip):
                try:
                    call(b"\x00" * (65 * 1024), timeout=10, compression=compression)
                    assert False, "oversized request accepted"
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                    assert "exceeds the limit of 65536 bytes" in e.details()
                    assert not any(k == "grpc-status-details-bin" for k, _ in e.trailing_metadata() or ())
            # A gzip bomb (32 MiB of zeros in ~32 KiB) stops at the ceiling while inflating.
            try:
                call(b"\x00" * (32 << 20), timeout=20, compression=grpc.Compression.Gzip)
                assert False, "gzip bomb accepted"
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "inflates beyond" in e.details(), e
            # The daemon still serves a good client.
            ok = call(encode_spans(sdk_batch(3, run_id="run-after-bad")).SerializeToString(), timeout=10)
            assert ok.partial_success.rejected_spans == 0
        assert d.get("/api/v1/runs/run-after-bad")[1]["run"]["spanCount"] == 3
        assert [r["runId"] for r in d.get("/api/v1/runs")[1]["runs"]] == ["run-after-bad"]
    finally:
        d.stop()


def test_large_valid_messages_cross_http2_flow_control(workdir):
    """A request of several MiB spans many HTTP/2 flow-control windows; held whole by the
    request guard, it is still acknowledged and stored, plain and gzip."""
    d = Daemon(workdir).start()
    try:
        with grpc.insecure_channel(d.grpc_endpoint) as channel:
            call = export_call(channel)
            for n, compression in enumerate((grpc.Compression.NoCompression, grpc.Compression.Gzip)):
                spans = sdk_batch(4000, run_id=f"run-large-{n}")
                for s in spans:
                    s._attributes = {"payload": "x" * 1500, **(s.attributes or {})}
                body = encode_spans(spans).SerializeToString()
                assert len(body) > 6 << 20
                ok = call(body, timeout=60, compression=compression)
                assert ok.partial_success.rejected_spans == 0
                assert d.get(f"/api/v1/runs/run-large-{n}")[1]["run"]["spanCount"] == 4000
    finally:
        d.stop()
