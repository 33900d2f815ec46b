"""The evidence log, end to end: spans from the real OpenTelemetry SDK through the real
daemon, then `flightrec verify --data` and `flightrec audit key` offline, as an auditor runs
them. Each tampering the issue names is reported with its segment and offset."""

import json
import os
import shutil
import signal
import stat
import subprocess
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from conftest import BIN, Daemon


def export_runs(d, runs, steps=12):
    provider = TracerProvider(resource=Resource.create({"service.name": "evidence-agent", "tenant.id": "t1"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=d.otlp_url, timeout=10),
                                                   max_queue_size=100_000))
    tracer = provider.get_tracer("evidence")
    for run in range(runs):
        with tracer.start_as_current_span("invoke_agent", attributes={"agent.run.id": f"run-{run}"}):
            for step in range(steps):
                with tracer.start_as_current_span(
                        "execute_tool", attributes={"gen_ai.tool.name": "open_ticket", "step": step,
                                                    "note": f"customer alice{run}@corp.example asked again"}):
                    pass
    provider.force_flush()
    provider.shutdown()
    return runs * (steps + 1)


def verify(data, *extra):
    return subprocess.run([BIN, "verify", "--data", data, *extra], capture_output=True, text=True, timeout=300)


def segments(data):
    return sorted(os.path.join(data, "segments", n) for n in os.listdir(os.path.join(data, "segments"))
                  if n.endswith(".frs"))


def blocks(path):
    """(offset, frame length) of each block: 16-byte segment header, then 20-byte block
    headers whose bytes 4..8 are the compressed length (BlockCodec)."""
    with open(path, "rb") as f:
        b = f.read()
    out, at = [], 16
    while at + 20 <= len(b):
        n = int.from_bytes(b[at + 4:at + 8], "little")
        out.append((at, 20 + n))
        at += 20 + n
    return out


def test_a_stored_store_verifies_offline_and_tampering_is_named(workdir):
    d = Daemon(workdir, storage="  segment_size: 64KiB\n  block_size: 4KiB\n").start()
    sent = export_runs(d, runs=400)
    key = subprocess.run([BIN, "audit", "key", "--data", d.data], capture_output=True, text=True, timeout=30)
    assert key.returncode == 0, key.stderr
    vkey = key.stdout.strip()
    assert vkey.startswith("flightrec.local/") and vkey.count("+") >= 2
    key_file = os.path.join(d.data, "keys", "log.key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # While the daemon runs, read-only.
    live = verify(d.data, "--key", vkey)
    assert live.returncode == 0, live.stdout + live.stderr
    assert d.stop() == 0

    done = verify(d.data, "--key", vkey, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["spans"] == sent and report["problems"] == []
    assert report["checkpoints"] >= 3  # start-up, seals, shutdown
    assert len(segments(d.data)) >= 2

    pristine = os.path.join(workdir, "pristine")
    shutil.copytree(d.data, pristine)
    target = segments(pristine)[0]
    name = os.path.basename(target)
    seg_id = int(name.split("-")[1].split(".")[0])
    (off2, len2), (off3, len3) = blocks(target)[1:3]

    def tampered(change):
        copy = os.path.join(workdir, "copy")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(pristine, copy)
        path = os.path.join(copy, "segments", name)
        with open(path, "rb") as f:
            b = bytearray(f.read())
        b = change(b)
        if b is None:
            os.remove(path)
        else:
            with open(path, "wb") as f:
                f.write(b)
        r = verify(copy, "--key", vkey, "--json")
        assert r.returncode == 65, r.stdout + r.stderr
        return json.loads(r.stdout)["problems"]

    def at(problems, offset):
        return any(p.get("segment") == seg_id and p.get("offset") == offset for p in problems)

    def flip(b):
        b[off2 + 40] ^= 0x01
        return b

    assert at(tampered(flip), off2)
    assert at(tampered(lambda b: b[:off2] + b[off2 + len2:]), off2)  # a deleted block
    assert at(tampered(lambda b: b[:off2] + b[off3:off3 + len3] + b[off2:off2 + len2] + b[off3 + len3:]), off2)
    # Truncated after the first block, then the second block appended again (re-appended).
    assert at(tampered(lambda b: b[:off2] + b[off3:off3 + len3]), off2)
    assert any(p.get("segment") == seg_id for p in tampered(lambda b: None))  # a removed segment

    # A key that is not the log's: nothing it signed, so the store does not verify.
    other = subprocess.run([BIN, "audit", "key", "--data", os.path.join(workdir, "elsewhere")],
                           capture_output=True, text=True)
    assert other.returncode == 64
    forged = verify(pristine, "--key", vkey.replace(vkey.split("+")[2], "A" + "B" * 43))
    assert forged.returncode in (64, 65)


def test_checkpoints_are_signed_while_idle_and_a_gap_shows(workdir):
    d = Daemon(workdir, extra_config="evidence:\n  checkpoint_interval: 1s\n").start()
    export_runs(d, runs=3)
    time.sleep(3.5)
    assert d.stop() == 0
    r = verify(d.data, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    # start-up, at least three idle ones, shutdown
    assert report["checkpoints"] >= 5
    assert report["longest_gap_seconds"] <= 2
    # Stopped for a while, then started again: the gap between checkpoints says so.
    time.sleep(3)
    d.start()
    assert d.stop() == 0
    gap = json.loads(verify(d.data, "--json").stdout)["longest_gap_seconds"]
    assert gap >= 3


def test_a_named_signing_key_must_exist(workdir):
    d = Daemon(workdir, extra_config=f"evidence:\n  signing_key: {workdir}/missing.key\n")
    proc = subprocess.run([BIN, "serve", "--config", d.config], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "evidence.signing_key" in proc.stderr and "missing.key" in proc.stderr


def test_sigkill_then_restart_still_verifies(workdir):
    d = Daemon(workdir).start()
    export_runs(d, runs=20)
    d.stop(sig=signal.SIGKILL)
    d.start()
    export_runs(d, runs=5)
    assert d.stop() == 0
    r = verify(d.data, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["spans"] == 25 * 13


def test_approvers_are_pseudonyms_an_auditor_can_check(daemon):
    from conftest import pseudonym
    provider = TracerProvider(resource=Resource.create({"service.name": "it-agent"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=daemon.otlp_url, timeout=10)))
    tracer = provider.get_tracer("identities")
    with tracer.start_as_current_span("invoke_agent", attributes={"agent.run.id": "run-who", "enduser.id": 4242}):
        with tracer.start_as_current_span(
                "approval.granted", attributes={"approval.approver": "alice@corp.example",
                                                "approval.note": "alice@corp.example confirmed by phone"}):
            pass
    provider.force_flush()
    provider.shutdown()
    status, run = daemon.get("/api/v1/runs/run-who")
    assert status == 200
    spans = {s["name"]: s for s in run["spans"]}
    attrs = spans["approval.granted"]["attributes"]
    alice = pseudonym(daemon, "alice@corp.example")
    assert alice.startswith("hmac:p") and attrs["approval.approver"] == alice
    assert pseudonym(daemon, "bob@corp.example") != alice
    # An email in free text stays masked; the address is nowhere.
    assert attrs["approval.note"] == "[REDACTED:email] confirmed by phone"
    assert spans["invoke_agent"]["attributes"]["enduser.id"] == pseudonym(daemon, "4242")
    assert "alice@corp.example" not in json.dumps(run)
    key = os.path.join(daemon.data, "keys", "pseudonym.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_metrics_show_the_log_size_and_the_last_checkpoint(daemon):
    import urllib.request
    sent = export_runs(daemon, runs=10)
    deadline = time.time() + 10
    while True:
        with urllib.request.urlopen(daemon.api_url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                  if line.startswith("flightrec_evidence_")}
        if values.get("flightrec_evidence_log_spans") == sent or time.time() > deadline:
            break
        time.sleep(0.2)
    assert values["flightrec_evidence_log_spans"] == sent
    assert abs(values["flightrec_evidence_last_checkpoint_timestamp_seconds"] - time.time()) < 120
