"""Retention, end to end: spans from the real OpenTelemetry SDK through the real daemon, one
tenant kept for an hour and the other for seconds. The short-lived tenant's runs leave every
answer and the disk, the other's stay, and `flightrec verify --data` still checks every
checkpoint, through the signed expiry receipts, before and after a restart."""

import json
import os
import re
import subprocess
import time
import urllib.request

from conftest import BIN, Daemon
from test_audit_bundle import auth_config, export, guarded_run, log_key, token, verify as audit_verify

RETENTION = "retention:\n  max_age: 3s\n  seal_after: 1s\n  check_interval: 1s\n  tenants:\n    acme: {max_age: 1h}\n"


def wait_for(check, seconds=40):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def files_holding(root, needle):
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                if needle in f.read():
                    out.append(os.path.join(dirpath, n))
    return out


def openmetrics(d, token):
    return urllib.request.urlopen(urllib.request.Request(
        d.api_url + "/metrics", headers={"Authorization": "Bearer " + token,
                                         "Accept": "application/openmetrics-text; version=1.0.0"}),
        timeout=10).read().decode()


def test_expired_runs_leave_every_answer_and_the_log_still_verifies(workdir):
    # Runs settle within a second: the spans' families (and exemplars) the analyser counts.
    d = Daemon(workdir, extra_config=auth_config(checkpoint_interval=1) + RETENTION
               + "metrics:\n  run_settle: 1s\n").start()
    admin = token("admin")
    try:
        guarded_run(d, "run-old", tenant="globex")
        # The segments holding it (the next, opened once it seals, holds nothing and stays).
        segments_before = sorted(os.listdir(os.path.join(d.data, "segments")))
        status, body = d.get("/api/v1/runs/run-old", token=admin)
        assert status == 200
        # Its spans' histograms name it in exemplars (by its traces: its tool spans came before
        # any span naming the run), until it expires.
        old_ids = {"run-old"} | {s["traceId"] for s in body["spans"]}
        assert wait_for(lambda: any(i in openmetrics(d, admin) for i in old_ids), 20), openmetrics(d, admin)
        # Sealed after a second idle, expired three seconds after its last write.
        assert wait_for(lambda: d.get("/api/v1/runs/run-old", token=admin)[0] == 404), d.read_log()
        status, body = d.get("/api/v1/runs", token=admin)
        assert status == 200 and "run-old" not in json.dumps(body)
        status, body = d.get("/api/v1/lookup?key=operation.id&value=op-run-old", token=admin)
        assert status == 404 and "run-old" not in json.dumps(body)
        # The files go a few seconds after the catalog drops them.
        assert wait_for(lambda: not [n for n in os.listdir(os.path.join(d.data, "segments"))
                                     if n in segments_before and n.endswith(".frs")]), d.read_log()
        assert "retention: segment expired" in d.read_log()
        # Start-up said what retention does, and that acme's longer age keeps shared segments.
        assert "retention on" in d.read_log() and "rewritten without the spans of tenants past" in d.read_log()
        # What went shows on /metrics.
        text = urllib.request.urlopen(urllib.request.Request(
            d.api_url + "/metrics", headers={"Authorization": "Bearer " + admin}), timeout=10).read().decode()
        assert re.search(r"^flightrec_retention_expired_segments_total [1-9]", text, re.M), text
        assert re.search(r"^flightrec_retention_expired_spans_total ([89]|[1-9][0-9])", text, re.M)
        assert re.search(r"^flightrec_retention_refusing_ingest 0", text, re.M)
        assert re.search(r"^flightrec_legal_holds 0", text, re.M)
        text = openmetrics(d, admin)
        assert not [i for i in old_ids if i in text], text

        sent = guarded_run(d, "run-kept", tenant="acme")
        assert d.get("/api/v1/runs/run-kept", token=admin)[0] == 200
        time.sleep(6)  # past globex's age: acme's segment stays
        assert d.get("/api/v1/runs/run-kept", token=admin)[0] == 200
        # An export of acme's whole range after the expiry still verifies offline.
        key = log_key(d)
        out = os.path.join(workdir, "acme.tar")
        r = export(d, out, "--tenant", "acme", "--since", "1")
        assert r.returncode == 0, r.stderr
    finally:
        d.stop()
    code, report, raw = audit_verify(out, "--key", key)
    assert code == 0, raw.stdout
    assert report["spans"] == sent
    assert not files_holding(os.path.join(d.data, "segments"), b"run-old")

    r = subprocess.run([BIN, "verify", "--data", d.data, "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"], r.stdout
    assert report["expired_segments"] >= 1 and report["expired_spans"] >= 8
    r = subprocess.run([BIN, "verify", "--data", d.data], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "expired under retention" in r.stdout, r.stdout

    # After a restart the expired run stays gone and the kept one stays.
    d.start()
    try:
        assert d.get("/api/v1/runs/run-old", token=admin)[0] == 404
        assert d.get("/api/v1/runs/run-kept", token=admin)[0] == 200
    finally:
        d.stop()
    r = subprocess.run([BIN, "verify", "--data", d.data], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout


def test_a_segment_deleted_by_hand_is_not_taken_for_expired(workdir):
    d = Daemon(workdir, extra_config=auth_config()).start()
    try:
        for i in range(3):
            guarded_run(d, f"run-{i}", tenant="acme")
    finally:
        d.stop()
    frs = sorted(n for n in os.listdir(os.path.join(d.data, "segments")) if n.endswith(".frs"))
    os.unlink(os.path.join(d.data, "segments", frs[0]))
    r = subprocess.run([BIN, "verify", "--data", d.data, "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(r.stdout)
    assert r.returncode != 0 and not report["ok"] and report["expired_segments"] == 0
    assert any("missing" in p["message"] for p in report["problems"]), report["problems"]


def test_legal_holds_keep_what_they_cover_until_released(workdir):
    d = Daemon(workdir, extra_config=auth_config() + RETENTION).start()
    admin = token("admin")
    try:
        # Only an admin places holds; a hold needs one scope and a reason; a bad where is a 400.
        r = d.cli("hold", "add", "--tenant", "globex", "--reason", "case 42", token=token("acme-auditor"))
        assert r.returncode == 77, r.stderr
        r = d.cli("hold", "add", "--tenant", "globex", token=admin)
        assert r.returncode == 64
        r = d.cli("hold", "add", "--where", "approval.ticket =", "--reason", "x", token=admin)
        assert r.returncode == 64 and "position" in r.stderr, r.stderr
        r = d.cli("hold", "add", "--tenant", "globex", "--reason", "case 42", token=admin)
        assert r.returncode == 0 and "hold-1" in r.stdout, r.stderr
        r = d.cli("hold", "add", "--where", 'approval.ticket = "APR-run-w"', "--reason", "case 43", token=admin)
        assert r.returncode == 0 and "hold-2" in r.stdout, r.stderr

        guarded_run(d, "run-held", tenant="globex")
        time.sleep(8)  # sealed, past globex's 3 s, several expiry passes: the tenant hold keeps it
        assert d.get("/api/v1/runs/run-held", token=admin)[0] == 200
        status, body = d.get("/api/v1/holds", token=admin)
        assert status == 200 and [h["id"] for h in body["holds"]] == ["hold-1", "hold-2"]
        assert "releasedAt" not in body["holds"][0] or body["holds"][0]["releasedAt"] is None
        assert body["holds"][0]["createdBy"] == "admin" and body["holds"][0]["reason"] == "case 42"
    finally:
        d.stop()

    # Holds outlive a restart.
    d.start()
    try:
        r = d.cli("hold", "list", token=admin)
        assert r.returncode == 0 and "tenant globex" in r.stdout and "case 43" in r.stdout, r.stdout
        r = d.cli("hold", "release", "hold-1", token=admin)
        assert r.returncode == 0 and "released hold-1" in r.stdout, r.stderr
        assert d.cli("hold", "release", "hold-1", token=admin).returncode == 66
        r = d.cli("hold", "list", token=admin)
        assert "hold-1" not in r.stdout and "hold-2" in r.stdout
        r = d.cli("hold", "list", "--all", token=admin)
        assert "hold-1" in r.stdout and "released by admin" in r.stdout, r.stdout
        # Released: run-held expires; the where hold keeps run-w, in a segment of its own.
        assert wait_for(lambda: d.get("/api/v1/runs/run-held", token=admin)[0] == 404), d.read_log()
        guarded_run(d, "run-w", tenant="globex")
        time.sleep(2.5)
        guarded_run(d, "run-x", tenant="globex")
        assert wait_for(lambda: d.get("/api/v1/runs/run-x", token=admin)[0] == 404), d.read_log()
        assert d.get("/api/v1/runs/run-w", token=admin)[0] == 200
        # A released hold's number is not given again.
        r = d.cli("hold", "add", "--run", "run-w", "--reason", "case 44", "--json", token=admin)
        assert r.returncode == 0 and json.loads(r.stdout)["id"] == "hold-3", r.stdout
    finally:
        d.stop()
    r = subprocess.run([BIN, "verify", "--data", d.data], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout


def post_span(d, run):
    """One OTLP/JSON span; (status, body, headers)."""
    import urllib.error
    import urllib.request
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "x"}}]},
                               "scopeSpans": [{"spans": [{
                                   "traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": "step",
                                   "startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns()),
                                   "attributes": [{"key": "agent.run.id", "value": {"stringValue": run}}]}]}]}]}
    request = urllib.request.Request(d.otlp_url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def store_bytes(d):
    root = os.path.join(d.data, "segments")
    return sum(os.path.getsize(os.path.join(root, n)) for n in os.listdir(root))


def test_over_max_bytes_under_the_floor_ingest_is_refused_retryably(workdir):
    from test_evidence import export_runs
    d = Daemon(workdir, extra_config="retention:\n  max_bytes: 1MiB\n  floor: 1h\n  seal_after: 1s\n"
                                     "  check_interval: 1s\n").start()
    try:
        # Fill the store past max_bytes; the expiry pass may start refusing before it is far
        # past, so stop at whichever comes first.
        deadline = time.time() + 180
        while store_bytes(d) < 1_300_000 and post_span(d, "run-probe")[0] != 503:
            assert time.time() < deadline, (store_bytes(d), d.read_log())
            export_runs(d, 100)
        # The next expiry pass finds nothing past the floor to delete: ingest is refused with
        # a 503 naming the setting, and a Retry-After; nothing stored is deleted.
        before = sorted(os.listdir(os.path.join(d.data, "segments")))
        assert wait_for(lambda: post_span(d, "run-late")[0] == 503, 20), d.read_log()
        status, body, headers = post_span(d, "run-late")
        assert status == 503 and b"max_bytes" in body and headers.get("Retry-After"), body
        text = urllib.request.urlopen(d.api_url + "/metrics", timeout=10).read().decode()
        assert re.search(r"^flightrec_retention_refusing_ingest 1", text, re.M), text
        after = os.listdir(os.path.join(d.data, "segments"))
        assert all(n in after for n in before if n.endswith(".frs"))
        assert d.get("/api/v1/runs?limit=1")[0] == 200  # queries still answer
    finally:
        d.stop()


def test_expiry_under_ingest_loses_no_span_younger_than_its_age(workdir):
    """Ingest goes on while expiry passes delete the older segments: every run acknowledged
    within its age is still whole at the end, whatever the passes deleted meanwhile."""
    import threading
    from test_erasure import post_runs
    d = Daemon(workdir, extra_config=auth_config() + "retention:\n  max_age: 4s\n  seal_after: 1s\n"
                                                    "  check_interval: 1s\n").start()
    admin = token("admin")
    acked = []
    stop = threading.Event()

    def ingest():
        k = 0
        while not stop.is_set():
            if post_runs(d, k, 4, spans=10):
                acked.append((time.time(), k))
            k += 4

    feeder = threading.Thread(target=ingest)
    feeder.start()
    try:
        time.sleep(12)
        stop.set()
        feeder.join()
        done = time.time()
        assert "retention: segment expired" in d.read_log(), "nothing expired while ingest went on"
        # Runs acknowledged within the last 2 s are in segments written less than 4 s ago.
        recent = [k for t, k in acked if done - t < 2]
        assert len(recent) > 10
        for k0 in recent:
            for k in range(k0, k0 + 4):
                status, body = d.get(f"/api/v1/runs/run-{k}", token=admin)
                assert status == 200 and len(body["spans"]) == 10, (k, status)
        assert d.get("/api/v1/runs/run-0", token=admin)[0] == 404  # the first ones expired
    finally:
        stop.set()
        d.stop()
    r = subprocess.run([BIN, "verify", "--data", d.data], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
