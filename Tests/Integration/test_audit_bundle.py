"""Audit bundles end to end: agent runs from the real OpenTelemetry SDK through the real
daemon with tenant tokens, exported with `flightrec audit export` and checked offline with
`flightrec audit verify` as a compliance reader runs it. Every tampering the issue names must be
reported; an untouched bundle must pass."""

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time

import pytest
from opentelemetry import trace as api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, format_span_id

from conftest import BIN, Daemon, pseudonym

T0 = 1_767_000_000_000_000_000
MS = 1_000_000
TOKENS = {
    "acme-ingest": ("acme", ["ingest"]),
    "globex-ingest": ("globex", ["ingest"]),
    "acme-auditor": ("acme", ["auditor"]),
    "acme-responder": ("acme", ["responder"]),
    "admin": (None, ["admin"]),
}


def token(name):
    return "tok-" + name + "-0123456789abcdef"


def auth_config(checkpoint_interval=None):
    lines = ["auth:\n  tokens:\n"]
    for name, (tenant, roles) in TOKENS.items():
        digest = hashlib.sha256(token(name).encode()).hexdigest()
        tenants = f"tenant: {tenant}" if tenant else "tenants: [acme, globex]"
        lines.append(f"    - name: {name}\n      sha256: {digest}\n      {tenants}\n      roles: [{', '.join(roles)}]\n")
    if checkpoint_interval:
        lines.append(f"evidence:\n  checkpoint_interval: {checkpoint_interval}\n")
    return "".join(lines)


class Service:
    """One service's tracer with a tenant's ingest token, exporting with the SDK's exporter."""

    def __init__(self, d, name, tenant="acme"):
        self.provider = TracerProvider(resource=Resource.create({"service.name": name, "service.version": "2.1.0"}))
        headers = {"authorization": "Bearer " + token(f"{tenant}-ingest")}
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=d.otlp_url, timeout=10, headers=headers)))
        self.tracer = self.provider.get_tracer("agent.runtime")

    def span(self, name, start, end, parent=None, links=(), **attributes):
        ctx = api.set_span_in_context(parent) if parent is not None else None
        s = self.tracer.start_span(name, context=ctx, links=list(links), start_time=T0 + start * MS,
                                   attributes={k.replace("__", "."): v for k, v in attributes.items()})
        return s, (lambda: s.end(end_time=T0 + end * MS))


def guarded_run(d, run_id, tenant="acme", steps=3):
    """invoke_agent ─ lookups ─ policy.check(approval_required) ─ approval.requested; a second
    trace: approval.granted (links to the request) ─ execute_tool disable_account."""
    svc = Service(d, "support-agent", tenant)
    root, end_root = svc.span("invoke_agent support-agent", 0, 1000, agent__run__id=run_id)
    for i in range(steps):
        _, end = svc.span("execute_tool lookup_user", 10 + i * 10, 15 + i * 10, parent=root,
                          gen_ai__operation__name="execute_tool", gen_ai__tool__name="lookup_user",
                          tool__risk_tier="read", note=f"asked by bob{i}@corp.example")
        end()
    check, end = svc.span("policy.check", 160, 170, parent=root, policy__outcome="approval_required",
                          policy__rule="privileged-needs-approval", gen_ai__tool__name="disable_account",
                          approval__ticket=f"APR-{run_id}")
    end()
    request, end = svc.span("approval.requested", 171, 175, parent=root, approval__ticket=f"APR-{run_id}",
                            links=[Link(check.get_span_context())])
    end()
    end_root()
    grant, end_grant = svc.span("approval.granted", 5000, 5010, links=[Link(request.get_span_context())],
                                agent__run__id=run_id, approval__approver="alice@corp.example",
                                approval__ticket=f"APR-{run_id}", approval__decision="granted")
    x, end = svc.span("execute_tool disable_account", 5020, 5100, parent=grant,
                      gen_ai__operation__name="execute_tool", gen_ai__tool__name="disable_account",
                      tool__risk_tier="privileged_write", operation__id=f"op-{run_id}",
                      idempotency__key=f"idem-{run_id}")
    end()
    end_grant()
    svc.provider.shutdown()
    return steps + 5


@pytest.fixture
def secured(workdir):
    d = Daemon(workdir, extra_config=auth_config()).start()
    yield d
    d.stop()


def log_key(d):
    r = subprocess.run([BIN, "audit", "key", "--data", d.data], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def export(d, out, *args, who="acme-auditor"):
    return d.cli("audit", "export", "--out", out, *args, token=token(who))


def verify(path, *args):
    r = subprocess.run([BIN, "audit", "verify", path, "--json", *args], capture_output=True, text=True, timeout=300)
    report = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
    return r.returncode, report, r


def rfc9162_verify_inclusion(leaf_hash, index, size, path, root):
    """RFC 9162, 2.1.3.2, written again here so the daemon's proofs are checked by code it
    does not share."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def members(path):
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def write_bundle(path, files):
    """A bundle rebuilt from `files` (name → bytes), in order, as plain ustar."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_a_run_bundle_verifies_offline_and_holds_the_decision_record(secured, workdir):
    d = secured
    sent = guarded_run(d, "run-audit-1")
    guarded_run(d, "run-audit-2")
    guarded_run(d, "run-globex", tenant="globex")
    key = log_key(d)
    out = os.path.join(workdir, "bundle.tar")
    r = export(d, out, "--run", "run-audit-1")
    assert r.returncode == 0, r.stderr
    files = members(out)
    assert set(files) == {"spans.otlp.jsonl", "spans.otlp.pb", "decisions.jsonl", "runs.csv", "findings.jsonl", "proof.json",
                          "checkpoint.txt", "manifest.json", "statement.dsse.json"}

    code, report, raw = verify(out, "--key", key)
    assert code == 0, raw.stdout + raw.stderr
    assert report["ok"] and report["key_pinned"] and report["spans"] == sent and report["runs"] == 1
    assert report["failures"] == []

    # spans.otlp.jsonl: one TracesData per line (a resource and scope with their spans), the
    # OTel file exporter's shape, redacted; every span once.
    lines = files["spans.otlp.jsonl"].decode().splitlines()
    names = set()
    span_ids = []
    for line in lines:
        data = json.loads(line)
        [rs] = data["resourceSpans"]
        [ss] = rs["scopeSpans"]
        assert ss["spans"]
        for span in ss["spans"]:
            names.add(span["name"])
            span_ids.append(span["spanId"])
        tenant = [a for a in rs["resource"]["attributes"] if a["key"] == "tenant.id"]
        assert tenant[0]["value"]["stringValue"] == "acme"
    assert len(span_ids) == len(set(span_ids)) == sent
    assert "approval.granted" in names and "policy.check" in names
    assert b"bob0@corp.example" not in files["spans.otlp.jsonl"]
    assert b"alice@corp.example" not in files["spans.otlp.jsonl"]

    # decisions.jsonl: the compliance view, in causal order, approver as a pseudonym.
    decisions = [json.loads(l) for l in files["decisions.jsonl"].decode().splitlines()]
    kinds = [x["kind"] for x in decisions]
    assert kinds.index("policy_decision") < kinds.index("approval_request") < kinds.index("approval_granted")
    assert kinds.index("approval_granted") < [i for i, x in enumerate(decisions)
                                              if x.get("tool") == "disable_account" and x["kind"] == "execution"][0]
    granted = next(x for x in decisions if x["kind"] == "approval_granted")
    assert granted["approver"] == pseudonym(d, "alice@corp.example")
    # An auditor given only a copy of the key gets the same answer, with no data directory.
    key_copy = os.path.join(workdir, "pseudonym.key.copy")
    shutil.copy2(os.path.join(d.data, "keys", "pseudonym.key"), key_copy)  # mode 0600 too, or it is refused
    r = subprocess.run([BIN, "pseudonym", "alice@corp.example", "--key", key_copy, "--data", "/nonexistent"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == granted["approver"], r.stderr
    r = subprocess.run([BIN, "pseudonym", "alice@corp.example", "--key", key_copy + ".missing"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "pseudonym.key.copy.missing" in r.stderr, r.stderr
    write = next(x for x in decisions if x.get("tool") == "disable_account" and x["kind"] == "execution")
    assert write["operation_id"] == "op-run-audit-1" and write["idempotency_key"] == "idem-run-audit-1"

    # runs.csv: RFC 4180, one row per run.
    rows = list(csv.DictReader(io.StringIO(files["runs.csv"].decode(), newline="")))
    assert [r["run_id"] for r in rows] == ["run-audit-1"] and rows[0]["spans"] == str(sent)

    manifest = json.loads(files["manifest.json"])
    assert manifest["key_id"] == key and manifest["tenants"] == ["acme"]
    assert len(manifest["redaction_policy_sha256"]) == 64
    listed = {f["name"]: f for f in manifest["files"]}
    assert listed["spans.otlp.jsonl"]["records"] == len(lines) and manifest["spans"] == sent
    assert listed["spans.otlp.jsonl"]["sha256"] == hashlib.sha256(files["spans.otlp.jsonl"]).hexdigest()
    envelope = json.loads(files["statement.dsse.json"])
    assert envelope["payloadType"] == "application/vnd.in-toto+json"

    # One span's standalone RFC 9162 proof, checked here by an independent implementation.
    r = subprocess.run([BIN, "audit", "proof", out, "--span", granted["span_id"], "--key", key],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    leaf = base64.b64decode(p["leaf"])
    # A salted leaf: SHA-256(0x00 || salt || message), the salt stored with the span.
    salt = base64.b64decode(p["salt"])
    assert len(salt) == 16 and salt != bytes(16)
    leaf_hash = hashlib.sha256(b"\x00" + salt + leaf).digest()
    assert base64.b64decode(p["leaf_hash"]) == leaf_hash != hashlib.sha256(b"\x00" + leaf).digest()
    root_line = p["checkpoint"].split("\n")[2]
    assert root_line == p["root"] and int(p["checkpoint"].split("\n")[1]) == p["tree_size"]
    assert rfc9162_verify_inclusion(leaf_hash, p["leaf_index"], p["tree_size"],
                                    [base64.b64decode(h) for h in p["audit_path"]], base64.b64decode(p["root"]))
    [alone] = json.loads(p["line"])["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert alone["name"] == "approval.granted"
    r = subprocess.run([BIN, "audit", "proof", out, "--span", "0123456789abcdef", "--key", key],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 65 and "no span" in r.stderr

    # The human report and exit code.
    r = subprocess.run([BIN, "audit", "verify", out, "--key", key], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout


def test_every_kind_of_tampering_fails_verification(secured, workdir):
    d = secured
    guarded_run(d, "run-t1")
    key = log_key(d)
    first = os.path.join(workdir, "first.tar")
    assert export(d, first, "--run", "run-t1").returncode == 0
    guarded_run(d, "run-t2")
    guarded_run(d, "run-t1", steps=1)  # the same run grows: the second bundle differs
    out = os.path.join(workdir, "bundle.tar")
    assert export(d, out, "--run", "run-t1").returncode == 0
    assert verify(out, "--key", key)[0] == 0
    files = members(out)
    old = members(first)
    bad = os.path.join(workdir, "bad.tar")

    def fails(mutated, why):
        write_bundle(bad, mutated)
        code, report, raw = verify(bad, "--key", key)
        assert code == 65, f"{why}: not detected\n{raw.stdout}{raw.stderr}"
        assert report["failures"], why

    # The rebuilt but untouched bundle passes (the harness is sound).
    write_bundle(bad, files)
    assert verify(bad, "--key", key)[0] == 0
    for name, data in files.items():
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        fails({**files, name: bytes(flipped)}, f"byte flip in {name}")
    lines = files["spans.otlp.jsonl"].splitlines(keepends=True)
    fails({**files, "spans.otlp.jsonl": b"".join(lines[1:])}, "deleted span line")
    fails({**files, "spans.otlp.jsonl": b"".join(lines + lines[:1])}, "duplicated span line")
    fails({**files, "spans.otlp.jsonl": b"".join([lines[1], lines[0]] + lines[2:])}, "reordered span lines")
    for name in files:
        fails({k: v for k, v in files.items() if k != name}, f"{name} removed")
    fails({**files, "notes.txt": b"added later\n"}, "a file added")
    for name in files:
        if old[name] != files[name]:
            fails({**files, name: old[name]}, f"{name} from an older bundle")

    # A checkpoint signed by another key (another store's log).
    os.makedirs(os.path.join(workdir, "other"), exist_ok=True)
    other = Daemon(os.path.join(workdir, "other"), extra_config=auth_config()).start()
    try:
        guarded_run(other, "run-t1")
        foreign = os.path.join(workdir, "foreign.tar")
        assert export(other, foreign, "--run", "run-t1").returncode == 0
    finally:
        other.stop()
    fails({**files, "checkpoint.txt": members(foreign)["checkpoint.txt"]}, "a checkpoint signed by another key")
    # The whole foreign bundle verifies under its own key, not under this log's.
    assert verify(foreign, "--key", key)[0] == 65
    assert verify(foreign)[0] == 0


def test_consistency_with_a_pinned_checkpoint(secured, workdir):
    d = secured
    guarded_run(d, "run-p1")
    key = log_key(d)
    first = os.path.join(workdir, "first.tar")
    assert export(d, first, "--run", "run-p1").returncode == 0
    pinned = os.path.join(workdir, "pinned.txt")
    with open(pinned, "wb") as f:
        f.write(members(first)["checkpoint.txt"])
    guarded_run(d, "run-p2")
    later = os.path.join(workdir, "later.tar")
    assert export(d, later, "--run", "run-p2", "--pinned-checkpoint", pinned).returncode == 0
    code, report, raw = verify(later, "--key", key, "--pinned-checkpoint", pinned)
    assert code == 0, raw.stdout
    assert report["pinned_size"] > 0 and report["checkpoint_size"] > report["pinned_size"]
    # The bundle the pin came from is consistent with it (the same checkpoint).
    assert verify(first, "--key", key, "--pinned-checkpoint", pinned)[0] == 0
    # A bundle older than the pinned checkpoint cannot show consistency with it.
    newer = os.path.join(workdir, "newer.txt")
    with open(newer, "wb") as f:
        f.write(members(later)["checkpoint.txt"])
    code, report, _ = verify(first, "--key", key, "--pinned-checkpoint", newer)
    assert code == 65 and "newer" in report["failures"][0]
    # A later bundle, exported with that pin, proves consistency with it.
    guarded_run(d, "run-p3")
    third = os.path.join(workdir, "third.tar")
    assert export(d, third, "--run", "run-p3", "--pinned-checkpoint", newer).returncode == 0
    assert verify(third, "--key", key, "--pinned-checkpoint", newer)[0] == 0


def test_a_tenant_time_range_is_proved_complete(workdir):
    d = Daemon(workdir, extra_config=auth_config(checkpoint_interval=1)).start()
    try:
        before = guarded_run(d, "run-before")
        time.sleep(2.5)  # a checkpoint signed after these spans and before `since`
        since = time.time_ns()
        sent = sum(guarded_run(d, f"run-r{i}") for i in range(3))
        guarded_run(d, "run-g", tenant="globex")
        key = log_key(d)
        out = os.path.join(workdir, "range.tar")
        r = export(d, out, "--tenant", "acme", "--since", str(since))
        assert r.returncode == 0, r.stderr
    finally:
        d.stop()
    code, report, raw = verify(out, "--key", key)
    assert code == 0, raw.stdout
    assert report["spans"] == sent and report["runs"] == 3 and report["selection"] == "range"
    files = members(out)
    assert b"globex" not in files["spans.otlp.jsonl"] and b"run-before" not in files["spans.otlp.jsonl"]
    manifest = json.loads(files["manifest.json"])
    assert manifest["range"]["start"] >= before and manifest["range"]["end"] > manifest["range"]["start"]
    assert files["start-checkpoint.txt"] and json.loads(files["proof.json"])["consistency"]

    bad = os.path.join(workdir, "bad.tar")
    # Leaving out one line of spans fails, with or without their leaf indices.
    lines = files["spans.otlp.jsonl"].splitlines(keepends=True)
    first_spans = len(json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"])
    proof = json.loads(files["proof.json"])
    write_bundle(bad, {**files, "spans.otlp.jsonl": b"".join(lines[1:])})
    assert verify(bad, "--key", key)[0] == 65
    proof["leaf_indices"] = proof["leaf_indices"][first_spans:]
    write_bundle(bad, {**files, "spans.otlp.jsonl": b"".join(lines[1:]), "proof.json": json.dumps(proof).encode()})
    assert verify(bad, "--key", key)[0] == 65
    # Left out everywhere at once (its line, its message and its leaf indices): the proof fails.
    pb = files["spans.otlp.pb"]
    first_len, at, shift = 0, 0, 0
    while True:
        b = pb[at]
        at += 1
        first_len |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    write_bundle(bad, {**files, "spans.otlp.jsonl": b"".join(lines[1:]), "spans.otlp.pb": pb[at + first_len:],
                       "proof.json": json.dumps(proof).encode()})
    code, report, _ = verify(bad, "--key", key)
    assert code == 65 and any("root" in f for f in report["failures"]), report["failures"]
    # A later start checkpoint (a narrower range) is not the one the bundle was signed with.
    write_bundle(bad, {**files, "start-checkpoint.txt": files["checkpoint.txt"]})
    assert verify(bad, "--key", key)[0] == 65


def test_export_needs_the_auditor_role_and_sees_only_the_tokens_tenants(secured, workdir):
    d = secured
    guarded_run(d, "run-acl")
    guarded_run(d, "run-globex", tenant="globex")
    out = os.path.join(workdir, "b.tar")
    r = export(d, out, "--run", "run-acl", who="acme-responder")
    assert r.returncode == 77 and not os.path.exists(out)
    r = export(d, out, "--run", "run-globex")
    assert r.returncode == 66, r.stderr  # another tenant's run does not exist for this token
    r = export(d, out, "--tenant", "globex", "--since", "1h")
    assert r.returncode == 77, r.stderr
    r = export(d, out, "--run", "run-globex", who="admin")
    assert r.returncode == 0, r.stderr
    assert verify(out)[0] == 0
    r = export(d, out, "--where", "name = ", who="admin")
    assert r.returncode == 64 and "where" in r.stderr


def test_an_empty_range_and_a_store_without_a_log(workdir):
    d = Daemon(workdir, extra_config=auth_config()).start()
    try:
        guarded_run(d, "run-early")
        key = log_key(d)
        out = os.path.join(workdir, "empty.tar")
        # Nothing logged after `since` yet: a bundle of no spans that still proves its range.
        # The range starts at the last checkpoint signed before `since`'s second (the export
        # signs one): `since` a few seconds ahead, so that checkpoint is the export's own even
        # when a second ticks over before it is signed (1 s ahead, that flaked).
        r = export(d, out, "--tenant", "acme", "--since", str(time.time_ns() + 5 * 10**9))
        assert r.returncode == 0, r.stderr
        code, report, raw = verify(out, "--key", key)
        assert code == 0 and report["spans"] == 0, raw.stdout
    finally:
        d.stop()
    os.makedirs(os.path.join(workdir, "off"), exist_ok=True)
    off = Daemon(os.path.join(workdir, "off"), extra_config=auth_config() + "evidence:\n  enabled: false\n").start()
    try:
        guarded_run(off, "run-nolog")
        r = export(off, os.path.join(workdir, "x.tar"), "--run", "run-nolog")
        assert r.returncode == 69 and "evidence" in r.stderr, r.stderr
    finally:
        off.stop()
