"""Nothing the redaction policy does not allow reaches disk, the index, the log or the API."""

import glob
import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import time

import lz4.block
import zstandard
from opentelemetry.trace import Link, Status, StatusCode

from agents import Agent, run_stolen_laptop
from conftest import BIN, Daemon

CORPUS = [
    "jane.doe@example.com", "123-45-6789", "4111 1111 1111 1111", "5500-0055-5555-5559", "+1 415 555 2671",
    "(212) 555-0187", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "Bearer abcdEFGH1234567890tokenvalue", "sk-proj-ABCDEFGHIJKLMNOPQRSTUV123", "AKIAIOSFODNN7EXAMPLE",
    "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij", "xoxb-123456789012-abcdefghijkl",
    "MIIEowIBAAKCAQEAsecretkeymaterial", "postgres://admin:s3cretpw@db.internal/x", "hunter2-dropped-password",
]
# Detected values are masked as substrings; these fragments must never appear either.
FRAGMENTS = ["jane.doe", "45-6789", "1111 1111", "415 555", "555-0187", "dozjgNryP4J3", "1234567890tokenvalue",
             "ABCDEFGHIJKLMNOPQRSTUV", "IOSFODNN7", "abcdefghij", "secretkeymaterial", "s3cretpw", "hunter2"]
FALSE_POSITIVES = ["2.14.3", "123e4567-e89b-12d3-a456-426614174000", "2026-11-25T01:40:56Z", "2026-11-25",
                   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "1764034856648000000"]

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretkeymaterial\n-----END RSA PRIVATE KEY-----"

POLICY = """redaction:
  rules:
    - name: passwords
      keys: ["*.password"]
      action: drop
    - name: user-hash
      keys: [enduser.id]
      action: hash
  hmac:
    key_id: k1
    key_env: FLIGHTREC_TEST_HMAC
"""


def salt_table_length(body):
    """The length of a salted block's salt table (README, "Evidence"): u32 runs, each a tag
    byte, 1 with a 32-byte key and a u32 count, or 2 with a u32 count and that many 16-byte
    salts."""
    (runs,) = struct.unpack_from("<I", body, 0)
    at = 4
    for _ in range(runs):
        tag = body[at]
        at += 1
        if tag == 1:
            at += 32 + 4
        else:
            assert tag == 2, tag
            (count,) = struct.unpack_from("<I", body, at)
            at += 4 + 16 * count
    return at


def segment_payloads(data_dir):
    """Every stored block, decompressed independently of the daemon: zstd frames ("FRB2", the
    default) with the zstandard package, LZ4 blocks ("FRB1") with the lz4 package; salted
    blocks ("FRS1", "FRS2") after their salts."""
    out = []
    for path in sorted(glob.glob(os.path.join(data_dir, "segments", "*.frs"))):
        raw = open(path, "rb").read()
        pos = 16
        while pos + 20 <= len(raw):
            magic = raw[pos:pos + 4]
            assert magic in (b"FRB1", b"FRB2", b"FRS1", b"FRS2"), magic
            clen, rlen, _, _ = struct.unpack_from("<IIII", raw, pos + 4)
            payload = raw[pos + 20:pos + 20 + clen]
            if magic[2:3] == b"S":
                payload = payload[salt_table_length(payload):]
            if magic[3:4] == b"1":
                out.append(lz4.block.decompress(payload, uncompressed_size=rlen))
            else:
                out.append(zstandard.ZstdDecompressor().decompress(payload, max_output_size=rlen))
            assert len(out[-1]) == rlen
            pos += 20 + clen
    return out


def send_sensitive_run(agent):
    c = CORPUS
    t = agent.tracer
    with t.start_as_current_span(f"triage for {c[0]}", attributes={
        "agent.run.id": "run-sensitive",
        "gen_ai.input.messages": json.dumps([{"role": "user", "content": f"my card is {c[2]} and ssn {c[1]}"}]),
        "gen_ai.tool.call.arguments": json.dumps({"phone": c[4], "alt": c[5], "note": PEM}),
        "http.request.header.authorization": c[7],
        "db.password": c[14],
        "enduser.id": "user-17",
        "keys": [c[8], c[9]],
        "version": FALSE_POSITIVES[0], "request.uuid": FALSE_POSITIVES[1], "at": FALSE_POSITIVES[2],
        "day": FALSE_POSITIVES[3], "digest": FALSE_POSITIVES[4], "ts": FALSE_POSITIVES[5], "count": 98765,
    }) as root:
        root.add_event(f"token issued {c[6]}", attributes={"github": c[10], "url": c[13]})
        with t.start_as_current_span("execute_tool notify", links=[Link(root.get_span_context(), {"slack": c[11]})]) as s:
            s.set_status(Status(StatusCode.ERROR, f"card {c[3]} declined for {c[0]}"))


def test_no_corpus_value_reaches_disk_index_log_or_api(workdir):
    os.environ["FLIGHTREC_TEST_HMAC"] = "0123456789abcdef-test-key"
    d = Daemon(workdir, extra_config=POLICY + "log:\n  level: trace\n").start()
    agent = Agent(d.otlp_url, tenant=f"tenant {CORPUS[0]}")
    send_sensitive_run(agent)
    agent.shutdown()

    responses = []
    for path in ["/api/v1/runs", "/api/v1/runs/run-sensitive", "/api/v1/redaction/stats"]:
        status, body = d.get(path)
        assert status == 200
        responses.append(json.dumps(body))
    trace = json.loads(responses[1])["spans"][0]["traceId"]
    responses.append(json.dumps(d.get(f"/api/v1/traces/{trace}")[1]))
    responses += [d.cli("run", "run-sensitive").stdout, d.cli("runs").stdout, d.cli("redaction", "stats").stdout]
    assert d.stop() == 0

    stored = b"".join(segment_payloads(d.data))
    index = b"".join(open(p, "rb").read() for p in glob.glob(os.path.join(d.data, "segments", "*.idx*")))
    assert index, "no segment index found"
    log = d.read_log()
    for value in CORPUS + FRAGMENTS:
        assert value.encode() not in stored, f"{value!r} reached a segment"
        assert value.encode() not in index, f"{value!r} reached the index"
        assert value not in log, f"{value!r} reached the log"
        for r in responses:
            assert value not in r, f"{value!r} reached a response"
    # Nothing ordinary was touched.
    for value in FALSE_POSITIVES:
        assert value.encode() in stored, f"{value!r} was redacted"

    run = json.loads(responses[1])
    root = next(s for s in run["spans"] if s["name"].startswith("triage"))
    assert root["name"] == "triage for [REDACTED:email]"
    assert "db.password" not in root["attributes"]
    assert root["attributes"]["enduser.id"].startswith("hmac:k1:") and len(root["attributes"]["enduser.id"]) == 24
    assert json.loads(root["attributes"]["gen_ai.tool.call.arguments"])["phone"] == "[REDACTED:phone]"
    # The key names a credential, so the whole value is masked (not only the detected token).
    assert root["attributes"]["http.request.header.authorization"] == "[REDACTED:credential_key]"
    assert root["attributes"]["keys"] == ["[REDACTED:api_key]", "[REDACTED:api_key]"]
    assert root["attributes"]["flightrec.redacted.count"] >= 10
    assert "passwords" in root["attributes"]["flightrec.redacted.rules"]
    assert root["attributes"]["version"] == "2.14.3" and root["attributes"]["count"] == 98765
    assert run["run"]["tenant"] == "tenant [REDACTED:email]"
    stats = json.loads(responses[2])
    assert stats["enabled"] is True and stats["rules"]["email"] >= 3 and stats["rules"]["passwords"] == 1


def test_allowlist_tenant_and_sighup_reload(workdir):
    d = Daemon(workdir, extra_config="redaction:\n  scopes:\n    - match: {tenant.id: strict}\n      mode: allowlist\n"
               "      allow_keys: [agent.run.id, service.name, tenant.id, \"gen_ai.*\"]\n").start()
    strict = Agent(d.otlp_url, tenant="strict")
    with strict.tracer.start_as_current_span("s", attributes={"agent.run.id": "run-strict", "gen_ai.tool.name": "t",
                                                               "customer.note": "plain words"}):
        pass
    strict.shutdown()
    span = d.get("/api/v1/runs/run-strict")[1]["spans"][0]
    assert span["attributes"]["gen_ai.tool.name"] == "t"
    assert span["attributes"]["customer.note"] == "[REDACTED:allowlist]"

    # Reload: a broken policy is refused and the daemon keeps enforcing the old one.
    with open(d.config, "a") as f:
        f.write("    - match: {tenant.id: other}\n      detectors:\n        custom:\n          - name: bad\n            pattern: \"E[0-9\"\n")
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "reload refused" not in d.read_log() and time.time() < deadline:
        time.sleep(0.05)
    assert 'redaction rule \\"bad\\"' in d.read_log() or 'redaction rule "bad"' in d.read_log()
    assert d.proc.poll() is None
    again = Agent(d.otlp_url, tenant="strict")
    with again.tracer.start_as_current_span("s2", attributes={"agent.run.id": "run-strict-2", "customer.note": "x"}):
        pass
    again.shutdown()
    assert d.get("/api/v1/runs/run-strict-2")[1]["spans"][0]["attributes"]["customer.note"] == "[REDACTED:allowlist]"
    d.stop()


def test_bad_policy_stops_start_up_naming_rule_and_line(workdir):
    path = os.path.join(workdir, "bad.yaml")
    with open(path, "w") as f:
        f.write(f"data_dir: {workdir}/d\nredaction:\n  detectors:\n    custom:\n      - name: employee-id\n"
                "        pattern: \"E[0-9\"\n")
    r = subprocess.run([BIN, "serve", "--config", path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78
    assert 'bad.yaml:5: redaction: redaction rule "employee-id": regular expression does not compile' in r.stderr
    with open(path, "w") as f:
        f.write("redaction:\n  rules:\n    - name: h\n      keys: [enduser.id]\n      action: hash\n")
    r = subprocess.run([BIN, "serve", "--config", path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78 and 'bad.yaml:3: redaction: redaction rule "h": action hash needs an HMAC key' in r.stderr


def test_credential_keys_are_masked_with_no_configuration(workdir):
    """With no redaction section at all, a value whose key names a credential is masked in
    every position and over every protocol (issue 11, defect 5)."""
    d = Daemon(workdir).start()
    secret = "correct-horse-battery-staple-77"
    try:
        for n, agent in enumerate((Agent(d.otlp_url), Agent(d.grpc_endpoint, grpc=True))):
            with agent.tracer.start_as_current_span("login", attributes={
                "agent.run.id": f"run-cred-{n}", "user.password": secret, "http.request.header.authorization": secret,
                "db_password": secret, "oauth.token": [secret, secret],
            }) as span:
                span.add_event("retry", {"client_secret": secret})
            agent.shutdown()
        # OTLP/JSON, as a hand-written client sends it.
        body = {"resourceSpans": [{"resource": {"attributes": [{"key": "api_key", "value": {"stringValue": secret}}]},
                                   "scopeSpans": [{"spans": [{
                                       "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                       "name": "json", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
                                       "attributes": [{"key": "agent.run.id", "value": {"stringValue": "run-cred-json"}},
                                                      {"key": "Set-Cookie", "value": {"stringValue": secret}}]}]}]}]}
        import urllib.request
        request = urllib.request.Request(d.otlp_url, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=10).status == 200
        for run in ("run-cred-0", "run-cred-1", "run-cred-json"):
            status, detail = d.get(f"/api/v1/runs/{run}")
            assert status == 200
            text = json.dumps(detail)
            assert secret not in text and "[REDACTED:credential_key]" in text, text[max(0, text.find(secret) - 300):][:400]
    finally:
        d.stop()
    assert all(secret.encode() not in p for p in segment_payloads(d.data))
    assert secret not in d.read_log()


def test_compression_setting_changes_only_new_blocks(workdir):
    """Blocks written as LZ4, then zstd after a restart with the default: both read back
    through the API, and both decompress independently of the daemon to what was sent."""
    first = Daemon(workdir, storage="  compression: lz4\n").start()
    try:
        agent = Agent(first.otlp_url, tenant="default")
        for i in range(3):
            root, _ = run_stolen_laptop(agent, f"run-codec-lz4-{i}")
            root.end()
        agent.shutdown()
    finally:
        first.stop()
    second = Daemon(workdir).start()
    try:
        agent = Agent(second.otlp_url, tenant="default")
        for i in range(3):
            root, _ = run_stolen_laptop(agent, f"run-codec-zstd-{i}")
            root.end()
        agent.shutdown()
        for run in [f"run-codec-{c}-{i}" for c in ("lz4", "zstd") for i in range(3)]:
            status, body = second.get(f"/api/v1/runs/{run}")
            assert status == 200 and body["run"]["spanCount"] == 5, (run, body)
    finally:
        second.stop()
    magics = set()
    for path in glob.glob(os.path.join(second.data, "segments", "*.frs")):
        raw = open(path, "rb").read()
        magics |= {raw[m.start() + 3:m.start() + 4] for m in re.finditer(b"FR[BS][12]", raw)}
    assert magics == {b"1", b"2"}
    stored = b"".join(segment_payloads(second.data))
    for c in ("lz4", "zstd"):
        assert b"run-codec-" + c.encode() + b"-2" in stored
