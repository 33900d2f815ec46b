"""Erasure, end to end: spans from the real OpenTelemetry SDK through the real daemon, then
`flightrec erase` by subject (its pseudonymised enduser.id), by run and by tenant. The erased
data leaves every answer at once (runs, lookups, search, traces, exports) and stays out after
a restart; a legal hold refuses an erasure by name; the rest stays."""

import json
import os
import re

from conftest import BIN, Daemon, pseudonym
from test_audit_bundle import Service, auth_config, export, token


def subject_run(d, run_id, user, tenant="acme", note="routine"):
    """A root with the end user, two tool steps, one carrying free text."""
    svc = Service(d, "support-agent", tenant)
    root, end_root = svc.span("invoke_agent support-agent", 0, 1000, agent__run__id=run_id, enduser__id=user)
    for i in range(2):
        _, end = svc.span("execute_tool lookup_user", 10 + i * 10, 15 + i * 10, parent=root,
                          gen_ai__operation__name="execute_tool", gen_ai__tool__name="lookup_user",
                          note=f"{note} {i}", operation__id=f"op-{run_id}-{i}")
        end()
    end_root()
    svc.provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def answers(d, admin, paths):
    """Every answer's body, as text, for scanning."""
    out = []
    for p in paths:
        status, body = d.get(p, token=admin)
        out.append((p, status, json.dumps(body)))
    return out


def test_erased_data_leaves_every_answer_at_once_and_holds_refuse(workdir):
    d = Daemon(workdir, extra_config=auth_config()).start()
    admin = token("admin")
    try:
        carol_trace = subject_run(d, "run-carol", "carol@corp.example", note="carol-secret-note")
        subject_run(d, "run-carol-2", "carol@corp.example", note="carol-second-note")
        subject_run(d, "run-dave", "dave@corp.example", note="dave-note")
        subject_run(d, "run-g", "gina@corp.example", tenant="globex", note="globex-note")
        carol = pseudonym(d, "carol@corp.example")
        dave = pseudonym(d, "dave@corp.example")
        assert d.get("/api/v1/runs/run-carol", token=admin)[0] == 200

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
        assert d.get("/api/v1/runs/run-dave", token=admin)[0] == 200

        r = d.cli("erase", "--subject", f"enduser.id={carol}", "--reason", "GDPR art. 17", "--json",
                  token=admin)
        assert r.returncode == 0, r.stderr
        erasure = json.loads(r.stdout)
        assert erasure["id"] == "erasure-1" and erasure["kind"] == "subject" and erasure["runs"] == 2
        assert erasure["spans"] == 6 and erasure["requestedBy"] == "admin"
        # The record names the scope by digest, never by value.
        assert carol not in r.stdout and "run-carol" not in r.stdout

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
        for path, status, text in scanned:
            assert status in (200, 404), (path, status, text)
            assert "carol" not in text and carol not in text and "run-carol" not in text, (path, text)
        assert "run-dave" in scanned[0][2] and "run-g" in scanned[0][2]
        # Exports leave it out too; a time range across an erasure is refused, naming it.
        out = os.path.join(workdir, "carol.tar")
        assert export(d, out, "--run", "run-carol").returncode == 66
        r = export(d, out, "--tenant", "acme", "--since", "1")
        assert r.returncode == 64 and "erasure-1" in r.stderr, r.stderr

        # A tenant goes whole.
        r = d.cli("erase", "--tenant", "globex", "--reason", "contract ended", token=admin)
        assert r.returncode == 0 and "erasure-2" in r.stdout, r.stderr
        assert d.get("/api/v1/runs/run-g", token=admin)[0] == 404
        assert "run-g" not in json.dumps(d.get("/api/v1/runs?limit=1000", token=admin)[1])
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


def urlquote(s):
    from urllib.parse import quote
    return quote(s, safe="")
