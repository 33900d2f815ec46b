"""Bearer tokens map to a tenant and roles: the tenant is stamped from the token, queries see
only their tenants, and every refusal has its precise status."""

import hashlib
import json
import subprocess
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.trace import format_trace_id

from agents import Agent, run_stolen_laptop
from conftest import BIN, Daemon
from test_grpc import export_call, sdk_batch

TOKENS = {
    "acme-ingest": ("tok-acme-ingest-4f1c", "acme", ["ingest"]),
    "globex-ingest": ("tok-globex-ingest-9b2e", "globex", ["ingest"]),
    "acme-responder": ("tok-acme-responder-77aa", "acme", ["responder"]),
    "globex-auditor": ("tok-globex-auditor-1d0d", "globex", ["auditor"]),
    "admin": ("tok-admin-c0ffee", "*", ["admin"]),
}


def token(name):
    return TOKENS[name][0]


def auth_config():
    lines = ["auth:\n  tokens:\n"]
    for name, (tok, tenant, roles) in TOKENS.items():
        digest = hashlib.sha256(tok.encode()).hexdigest()
        tenants = f"tenants: ['{tenant}']" if tenant == "*" else f"tenant: {tenant}"
        lines.append(f"    - name: {name}\n      sha256: {digest}\n      {tenants}\n      roles: [{', '.join(roles)}]\n")
    return "".join(lines)


@pytest.fixture
def secured(workdir):
    d = Daemon(workdir, extra_config=auth_config()).start()
    yield d
    d.stop()


def http_export(d, body, tok=None):
    headers = {"Content-Type": "application/x-protobuf"}
    if tok:
        headers["Authorization"] = "Bearer " + tok
    try:
        with urllib.request.urlopen(urllib.request.Request(d.otlp_url, data=body, headers=headers)) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_tenants_are_stamped_from_tokens_and_kept_apart(secured):
    d = secured
    # acme exports over gRPC, globex over HTTP; both claim the other's tenant and reuse one run ID.
    acme = Agent(d.grpc_endpoint, grpc=True, token=token("acme-ingest"), tenant="globex")
    root, _ = run_stolen_laptop(acme, "shared-run")
    root.end()
    acme.shutdown()
    globex = Agent(d.otlp_url, token=token("globex-ingest"), tenant="acme", service="globex-secret-agent")
    groot, _ = run_stolen_laptop(globex, "shared-run")
    groot.end()
    only_globex = Agent(d.otlp_url, token=token("globex-ingest"), service="globex-secret-agent")
    oroot, _ = run_stolen_laptop(only_globex, "globex-only-run")
    oroot.end()
    globex.shutdown()
    only_globex.shutdown()
    globex_trace = format_trace_id(groot.get_span_context().trace_id)
    acme_trace = format_trace_id(root.get_span_context().trace_id)

    # The acme responder sees acme's half of the shared run ID, stamped acme, and nothing of globex.
    status, body = d.get("/api/v1/runs/shared-run", token=token("acme-responder"))
    assert status == 200 and body["run"]["tenant"] == "acme" and body["run"]["spanCount"] == 5
    assert {s["traceId"] for s in body["spans"]} == {acme_trace}
    assert all(s["resource"]["tenant.id"] == "acme" for s in body["spans"])
    status, body = d.get("/api/v1/runs", token=token("acme-responder"))
    assert [(r["runId"], r["tenant"]) for r in body["runs"]] == [("shared-run", "acme")]

    # Another tenant's run and trace are 404, exactly like unknown ones, and name nothing of globex.
    for path in ["/api/v1/runs/globex-only-run", f"/api/v1/traces/{globex_trace}", "/api/v1/runs/no-such-run"]:
        status, body = d.get(path, token=token("acme-responder"))
        assert status == 404, path
        assert "globex" not in json.dumps(body)
    status, unknown = d.get("/api/v1/runs/no-such-run", token=token("acme-responder"))
    status, other = d.get("/api/v1/runs/globex-only-run", token=token("acme-responder"))
    assert unknown == other

    # The globex auditor sees globex's runs, stamped globex although the client claimed acme.
    status, body = d.get("/api/v1/runs/shared-run", token=token("globex-auditor"))
    assert status == 200 and body["run"]["tenant"] == "globex"
    assert {s["traceId"] for s in body["spans"]} == {globex_trace}
    assert sorted(r["runId"] for r in d.get("/api/v1/runs", token=token("globex-auditor"))[1]["runs"]) == [
        "globex-only-run", "shared-run"]

    # The admin sees every tenant.
    runs = d.get("/api/v1/runs", token=token("admin"))[1]["runs"]
    assert sorted((r["runId"], r["tenant"]) for r in runs) == [
        ("globex-only-run", "globex"), ("shared-run", "acme"), ("shared-run", "globex")]

    # The CLI takes the token from FLIGHTREC_TOKEN.
    r = d.cli("runs", token=token("acme-responder"))
    assert r.returncode == 0 and "shared-run" in r.stdout and "globex" not in r.stdout
    r = d.cli("run", "globex-only-run", token=token("acme-responder"))
    assert r.returncode == 66
    r = d.cli("runs")
    assert r.returncode == 77 and "missing bearer token" in r.stderr


def test_wrong_missing_and_insufficient_tokens_are_refused_everywhere(secured):
    d = secured
    body = encode_spans(sdk_batch(3, run_id="run-refused")).SerializeToString()

    # OTLP/HTTP: 401 with a challenge for missing or unknown tokens, 403 for a token without ingest.
    status, headers, _ = http_export(d, body)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert http_export(d, body, "not-a-token")[0] == 401
    assert http_export(d, body, token("acme-responder"))[0] == 403
    assert http_export(d, body, token("admin"))[0] == 403

    # OTLP/gRPC: UNAUTHENTICATED and PERMISSION_DENIED.
    with grpc.insecure_channel(d.grpc_endpoint) as channel:
        call = export_call(channel)
        for metadata, code in [
            (None, grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", "Basic " + token("acme-ingest")),), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", "Bearer " + token("globex-auditor")),), grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.RpcError) as e:
                call(body, metadata=metadata, timeout=10)
            assert e.value.code() == code
        ok = call(body, metadata=(("authorization", "Bearer " + token("acme-ingest")),), timeout=10)
        assert isinstance(ok, ExportTraceServiceResponse)

    # The real exporter with a wrong token fails its export; nothing of it is stored.
    bad = Agent(d.grpc_endpoint, grpc=True, token="wrong")
    run_stolen_laptop(bad, "run-wrong-token")[0].end()
    bad.shutdown()

    # Query API: 401 without or with an unknown token, 403 for an ingest-only token, admin-only stats.
    assert d.get("/api/v1/runs")[0] == 401
    assert d.get("/api/v1/runs", token="nope")[0] == 401
    assert d.get("/api/v1/runs", token=token("acme-ingest"))[0] == 403
    assert d.get("/api/v1/ingest/stats", token=token("acme-responder"))[0] == 403
    status, stats = d.get("/api/v1/ingest/stats", token=token("admin"))
    assert status == 200 and stats["refusedRequests"]["unauthenticated"] >= 4
    assert stats["refusedRequests"]["forbidden"] >= 3
    runs = d.get("/api/v1/runs", token=token("admin"))[1]["runs"]
    assert [(r["runId"], r["tenant"], r["spanCount"]) for r in runs] == [("run-refused", "acme", 3)]
    # Tokens never reach the log.
    log = d.read_log()
    assert all(t not in log for t, _, _ in TOKENS.values())


def test_listening_beyond_loopback_needs_tokens(workdir):
    r = subprocess.run([BIN, "serve", "--data", workdir, "--otlp-grpc", "0.0.0.0:0", "--otlp-http", "off"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 78 and "listeners.otlp_grpc: 0.0.0.0:0 is not a loopback address" in r.stderr
    # With tokens configured the same listener starts.
    d = Daemon(workdir, extra_config=auth_config(), listeners="")
    with open(d.config) as f:
        text = f.read().replace(f"otlp_grpc: 127.0.0.1:{d.grpc_port}", f"otlp_grpc: 0.0.0.0:{d.grpc_port}")
    with open(d.config, "w") as f:
        f.write(text)
    d.start()
    try:
        assert "listener=otlp_grpc" in d.read_log() and f"0.0.0.0:{d.grpc_port}" in d.read_log()
    finally:
        d.stop()
