"""Erasure, end to end: spans from the real OpenTelemetry SDK through the real daemon, then
`flightrec erase` by subject (its pseudonymised enduser.id), by run and by tenant. The erased
data leaves every answer at once (runs, lookups, search, traces, exports) and stays out after
a restart; a legal hold refuses an erasure by name; the rest stays."""

import json
import os
import subprocess
import time

from conftest import BIN, Daemon, pseudonym
from test_audit_bundle import Service, auth_config, export, token, verify as audit_verify
from test_redaction import segment_payloads


def data_holding(data_dir, needles):
    """Every file of the data directory, raw, and every stored block decompressed: the
    (file, needle) pairs where a needle occurs."""
    found = []
    for dirpath, _, names in os.walk(data_dir):
        for n in names:
            path = os.path.join(dirpath, n)
            with open(path, "rb") as f:
                raw = f.read()
            found += [(path, x) for x in needles if x in raw]
    decoded = b"".join(segment_payloads(data_dir))
    found += [("decoded blocks", x) for x in needles if x in decoded]
    return found


def subject_run(d, run_id, user, tenant="acme", note="routine", tool_ms=5):
    """A root with the end user, two tool steps, one carrying free text."""
    svc = Service(d, "support-agent", tenant)
    root, end_root = svc.span("invoke_agent support-agent", 0, 1000, agent__run__id=run_id, enduser__id=user)
    for i in range(2):
        _, end = svc.span("execute_tool lookup_user", 10 + i * 10, 10 + i * 10 + tool_ms, parent=root,
                          gen_ai__operation__name="execute_tool", gen_ai__tool__name="lookup_user",
                          note=f"{note} {i}", operation__id=f"op-{run_id}-{i}")
        end()
    end_root()
    svc.provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def openmetrics_text(d, admin):
    import urllib.request
    return urllib.request.urlopen(urllib.request.Request(d.api_url + "/metrics", headers={
        "Authorization": "Bearer " + admin, "Accept": "application/openmetrics-text"}), timeout=10).read().decode()


def named_in_exemplars(d, admin, ids, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = openmetrics_text(d, admin)
        if any(f'run_id="{i}"' in text for i in ids):
            return True
        time.sleep(0.25)
    return False


def answers(d, admin, paths):
    """Every answer's body, as text, for scanning."""
    out = []
    for p in paths:
        status, body = d.get(p, token=admin)
        out.append((p, status, json.dumps(body)))
    return out


def test_erased_data_leaves_every_answer_at_once_and_holds_refuse(workdir):
    # Runs settle within a second: the spans' families (and exemplars) the analyser counts.
    d = Daemon(workdir, extra_config=auth_config() + "metrics:\n  run_settle: 1s\n").start()
    admin = token("admin")
    try:
        subject_run(d, "run-dave", "dave@corp.example", note="dave-note")
        g_trace = subject_run(d, "run-g", "gina@corp.example", tenant="globex", note="globex-note")
        carol_trace = subject_run(d, "run-carol", "carol@corp.example", note="carol-secret-note")
        # Its tool calls alone in their duration bucket, so that bucket's exemplar names it.
        carol2_trace = subject_run(d, "run-carol-2", "carol@corp.example", note="carol-second-note", tool_ms=300)
        carol = pseudonym(d, "carol@corp.example")
        dave = pseudonym(d, "dave@corp.example")
        assert d.get("/api/v1/runs/run-carol", token=admin)[0] == 200
        # An exemplar names it once it has settled (by its run, or by its trace where ingest
        # counted a span before its run was resolved).
        assert named_in_exemplars(d, admin, ["run-carol-2", carol2_trace])

        # Admin only; a scope and a reason are required; an unknown subject is a 404.
        r = d.cli("erase", "--subject", f"enduser.id={carol}", "--reason", "GDPR art. 17",
                  token=token("acme-auditor"))
        assert r.returncode == 77, r.stderr
        assert d.cli("erase", "--subject", f"enduser.id={carol}", token=admin).returncode == 64
        assert d.cli("erase", "--subject", "enduser.id", "--reason", "x", token=admin).returncode == 64
        r = d.cli("erase", "--subject", "enduser.id=nobody", "--reason", "x", token=admin)
        assert r.returncode == 66, r.stderr

        # A hold on a run refuses the erasure of a subject whose runs include it, naming it.
        r = d.cli("hold", "add", "--run", "run-dave", "--reason", "case 7", token=admin)
        assert r.returncode == 0, r.stderr
        r = d.cli("erase", "--subject", f"enduser.id={dave}", "--reason", "request 2", token=admin)
        assert r.returncode == 64 and "hold-1" in r.stderr, r.stderr
        # The identity as the agent sent it is matched on its pseudonym too.
        r = d.cli("erase", "--subject", "enduser.id=dave@corp.example", "--reason", "request 2", token=admin)
        assert r.returncode == 64 and "hold-1" in r.stderr, r.stderr
        assert d.get("/api/v1/runs/run-dave", token=admin)[0] == 200

        # A bundle exported before the erasure: it still verifies after, and the erasure's
        # receipt names it.
        early = os.path.join(workdir, "early.tar")
        assert export(d, early, "--run", "run-carol").returncode == 0
        code, report, raw = audit_verify(early)
        assert code == 0, raw.stdout
        early_id = report["bundle_id"]
        needles = [b"carol-secret-note", b"carol-second-note", carol.encode(), b"run-carol", b"op-run-carol-0"]
        assert data_holding(d.data, needles), "the workload's values should be on disk before the erasure"
        r = d.cli("erase", "--subject", f"enduser.id={carol}", "--reason", "GDPR art. 17", "--json", "--wait",
                  "--timeout", "60", token=admin)
        assert r.returncode == 0, r.stderr
        erasure = json.loads(r.stdout)
        assert erasure["id"] == "erasure-1" and erasure["kind"] == "subject" and erasure["runs"] == 2
        assert erasure["spans"] == 6 and erasure["requestedBy"] == "admin" and erasure["state"] == "erased"
        # The record names the scope by digest, never by value.
        assert carol not in r.stdout and "run-carol" not in r.stdout
        # --wait returned: not one byte of the subject's spans is left, raw or decompressed.
        assert not data_holding(d.data, needles), data_holding(d.data, needles)
        code, report, raw = audit_verify(early)
        assert code == 0 and report["spans"] == 3, raw.stdout
        import urllib.request
        text = urllib.request.urlopen(urllib.request.Request(
            d.api_url + "/metrics", headers={"Authorization": "Bearer " + admin}), timeout=10).read().decode()
        assert "\nflightrec_erasures_pending 0" in text, text

        # Gone from every answer at once.
        assert d.get("/api/v1/runs/run-carol", token=admin)[0] == 404
        assert d.get("/api/v1/runs/run-carol-2", token=admin)[0] == 404
        assert d.get(f"/api/v1/runs/{carol_trace}", token=admin)[0] == 404
        assert d.get("/api/v1/lookup?key=operation.id&value=op-run-carol-0", token=admin)[0] == 404
        status, body = d.get(f"/api/v1/traces/{carol_trace}", token=admin)
        assert status == 404 or not body.get("spans"), body
        scanned = answers(d, admin, [
            "/api/v1/runs?limit=1000",
            "/api/v1/runs?where=" + urlquote(f'enduser.id = "{carol}"'),
            "/api/v1/runs?where=" + urlquote('note ~ "carol"'),
            "/api/v1/runs/run-dave",
        ])
        openmetrics = openmetrics_text(d, admin)
        assert "# {run_id=" in openmetrics  # exemplars are on, and name runs
        scanned.append(("/metrics (OpenMetrics)", 200, openmetrics))
        for path, status, text in scanned:
            assert status in (200, 404), (path, status, text)
            assert "carol" not in text and carol not in text and "run-carol" not in text, (path, text)
            assert carol_trace not in text and carol2_trace not in text, (path, text)
        assert "run-dave" in scanned[0][2] and "run-g" in scanned[0][2]
        # Exports leave it out too.
        out = os.path.join(workdir, "carol.tar")
        assert export(d, out, "--run", "run-carol").returncode == 66
        # A time range across the erasure leaves it out and still verifies (its proof covers
        # exactly the spans it holds).
        r = export(d, out, "--tenant", "acme", "--since", "1")
        assert r.returncode == 0, r.stderr
        code, report, raw = audit_verify(out)
        assert code == 0 and report["spans"] == 3, raw.stdout
        # ...and says what of the range was erased, by which receipt.
        assert report["erased_spans"] == 6 and report["erasures"] == ["erasure-1"], raw.stdout
        with open(out, "rb") as f:
            bundle = f.read()
        assert not [x for x in needles if x in bundle]
        assert b"GDPR art. 17" in bundle  # the receipt, in erasures.json
        r = subprocess.run([BIN, "audit", "verify", out], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "erased: 6 spans of the range" in r.stdout, r.stdout

        # A subject by a key the index does not hold scans every run, past the hidden ones.
        r = d.cli("erase", "--subject", "note=nobody's", "--reason", "x", token=admin)
        assert r.returncode == 66, r.stderr
        assert d.get("/api/v1/runs/run-dave", token=admin)[0] == 200
        assert named_in_exemplars(d, admin, ["run-g", g_trace])  # globex's series' exemplars name its run
        # A tenant goes whole, from a segment it shares with acme.
        r = d.cli("erase", "--tenant", "globex", "--reason", "contract ended", "--wait", "--timeout", "20",
                  token=admin)
        assert r.returncode == 0 and "erasure-2" in r.stdout and "erased" in r.stdout, (r.stderr, d.read_log()[-4000:])
        assert d.get("/api/v1/runs/run-g", token=admin)[0] == 404
        assert "run-g" not in json.dumps(d.get("/api/v1/runs?limit=1000", token=admin)[1])
        gina = pseudonym(d, "gina@corp.example")
        assert not data_holding(d.data, [b"globex-note", b"run-g", gina.encode()])
        text = openmetrics_text(d, admin)
        assert g_trace not in text and 'run_id="run-g"' not in text  # its exemplars went with it
        assert d.get("/api/v1/runs/run-dave", token=admin)[0] == 200
    finally:
        d.stop()

    # Durable: after a restart the erased data stays hidden and the list says who and why.
    d.start()
    try:
        assert d.get("/api/v1/runs/run-carol", token=admin)[0] == 404
        assert d.get("/api/v1/runs/run-g", token=admin)[0] == 404
        assert d.get("/api/v1/runs/run-dave", token=admin)[0] == 200
        r = d.cli("erase", "list", token=admin)
        assert r.returncode == 0 and "erasure-1" in r.stdout and "GDPR art. 17" in r.stdout, r.stdout
        assert "tenant globex" in r.stdout and "contract ended" in r.stdout
        assert carol not in r.stdout
        # By run, in its tenant.
        r = d.cli("hold", "release", "hold-1", token=admin)
        assert r.returncode == 0, r.stderr
        r = d.cli("erase", "--run", "run-dave", "--tenant", "acme", "--reason", "request 3", token=admin)
        assert r.returncode == 0, r.stderr
        assert d.get("/api/v1/runs/run-dave", token=admin)[0] == 404
    finally:
        d.stop()
    with open(os.path.join(d.data, "erasures.json")) as f:
        recorded = f.read()
    assert carol not in recorded and "run-carol" not in recorded and "run-dave" not in recorded
    # The evidence log still verifies every checkpoint, through the signed rewrites, and
    # reports what was erased, by whom and why.
    r = subprocess.run([BIN, "verify", "--data", d.data, "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"], r.stdout
    assert report["erased_spans"] >= 6 and report["rewritten_segments"] >= 1, report
    assert [e["id"] for e in report["erasures"]][:1] == ["erasure-1"], report["erasures"]
    assert report["erasures"][0]["reason"] == "GDPR art. 17" and report["erasures"][0]["spans"] == 6
    assert report["erasures"][0]["bundles"] == [early_id], report["erasures"][0]


def urlquote(s):
    from urllib.parse import quote
    return quote(s, safe="")


def post_runs(d, first, count, spans=50, victim_every=0, tenant="acme"):
    """`count` runs of `spans` spans each, in one OTLP/JSON request; every `victim_every`th run
    belongs to the victim (enduser.id and a note naming them). True once acknowledged."""
    import time
    import urllib.error
    import urllib.request
    resource_spans = []
    for k in range(first, first + count):
        victim = victim_every and k % victim_every == 0
        trace = os.urandom(16).hex()
        items = []
        for i in range(spans):
            attrs = [{"key": "agent.run.id", "value": {"stringValue": f"run-{k}"}},
                     {"key": "step", "value": {"intValue": str(i)}}]
            if victim:
                attrs += [{"key": "enduser.id", "value": {"stringValue": "victim@corp.example"}},
                          {"key": "note", "value": {"stringValue": f"victim-secret-{k}-{i}"}}]
            else:
                attrs.append({"key": "note", "value": {"stringValue": f"kept-{k}-{i}"}})
            now = time.time_ns()
            items.append({"traceId": trace, "spanId": os.urandom(8).hex(), "name": f"step {i}",
                          "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000), "attributes": attrs})
        resource_spans.append({"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bulk"}}]},
                               "scopeSpans": [{"spans": items}]})
    request = urllib.request.Request(
        d.otlp_url, data=json.dumps({"resourceSpans": resource_spans}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + token(f"{tenant}-ingest")})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def test_sigkill_mid_rewrite_and_ingest_during_erasure_lose_nothing_kept(workdir):
    """SIGKILL at random moments while segments are rewritten, with ingest going on: each
    restart finds the old segment or the new one (verify --data holds), the tombstone hides the
    victim throughout, and in the end every acknowledged span not erased is there."""
    import random
    import signal
    import threading
    import time
    d = Daemon(workdir, extra_config=auth_config()).start()
    admin = token("admin")
    acked = []
    for batch in range(12):
        assert post_runs(d, batch * 40, 40, victim_every=7)
        acked += [k for k in range(batch * 40, batch * 40 + 40) if k % 7 != 0]
    victim = pseudonym(d, "victim@corp.example")
    stop = threading.Event()
    late = []
    next_run = [100_000]

    def ingest():
        while not stop.is_set():
            k = next_run[0]
            next_run[0] += 5
            if post_runs(d, k, 5, spans=20):
                late.extend(range(k, k + 5))

    rng = random.Random(17)
    erased = False
    try:
        for attempt in range(4):
            stop.clear()
            feeder = threading.Thread(target=ingest)
            feeder.start()
            if attempt == 0:
                r = d.cli("erase", "--subject", f"enduser.id={victim}", "--reason", "art. 17", token=admin)
                assert r.returncode == 0, r.stderr
            # The tombstone holds whatever state the rewrite is in.
            assert d.get("/api/v1/runs/run-0", token=admin)[0] == 404
            time.sleep(rng.uniform(0.05, 1.5))
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(timeout=30)
            stop.set()
            feeder.join()
            r = subprocess.run([BIN, "verify", "--data", d.data, "--json"], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout
            d.start()
            assert d.get("/api/v1/runs/run-0", token=admin)[0] == 404
            assert d.get("/api/v1/runs/run-7", token=admin)[0] == 404
        deadline = time.time() + 120
        while time.time() < deadline and not erased:
            erased = d.get("/api/v1/erasures/erasure-1", token=admin)[1].get("state") == "erased"
            time.sleep(0.5)
        assert erased, d.read_log()[-3000:]
        for k in acked:
            status, body = d.get(f"/api/v1/runs/run-{k}", token=admin)
            assert status == 200 and body["run"]["spanCount"] == 50 and len(body["spans"]) == 50, (k, status, body.get("run"))
        for k in late:
            status, body = d.get(f"/api/v1/runs/run-{k}", token=admin)
            assert status == 200 and body["run"]["spanCount"] == 20 and len(body["spans"]) == 20, (k, status)
        for k in range(0, 480, 7):
            assert d.get(f"/api/v1/runs/run-{k}", token=admin)[0] == 404
    finally:
        stop.set()
        d.stop()
    assert not data_holding(d.data, [b"victim-secret-", victim.encode()])
    r = subprocess.run([BIN, "verify", "--data", d.data, "--json"], capture_output=True, text=True, timeout=300)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"] and report["erased_spans"] == 69 * 50, r.stdout
