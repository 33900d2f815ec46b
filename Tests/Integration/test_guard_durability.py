"""The sidecar's promises across restarts and crashes, its start-up errors, its Unix socket
and its tokens: real `flightrec guard serve` processes against a real HTTP backend."""

import hashlib
import os
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import BIN, Daemon
from guard_fixtures import Guard, ToolBackend, unix_request

SLOW_TOOL = """
  - name: slow_write
    tier: low_write
    backend: {url: "%s"}
    timeout: 30s
    arguments: {type: object, properties: {n: {type: integer}}}
"""


def with_slow_tool(backend):
    # Appended to the tool list: the fixture's YAML ends with `redaction:`, so splice it in.
    return SLOW_TOOL % backend.url("/inventory/sync")


@pytest.fixture
def backend():
    b = ToolBackend(hang_seconds=3)
    yield b
    b.close()


def make_guard(workdir, backend, collector_url="off", extra_tools=""):
    g = Guard(workdir, backend, collector_url)
    if extra_tools:
        with open(g.config) as f:
            text = f.read()
        with open(g.config, "w") as f:
            f.write(text.replace("rules:\n", extra_tools.lstrip("\n") + "rules:\n", 1))
    return g


def execute(guard, tool, arguments, key, actor="support-agent", run="run-durable"):
    return guard.post("/v1/execute", {"run_id": run, "actor": actor, "tool": tool, "arguments": arguments,
                                      "idempotency_key": key})


DISABLE = {"device_id": "D-300", "owner": "E-3003", "reason": "stolen"}


def test_approvals_and_idempotency_survive_restarts_and_kill_9(workdir, backend):
    guard = make_guard(workdir, backend).start()
    status, device = execute(guard, "lookup_device", {"device_id": "D-300"}, "d-lookup")
    assert device["status"] == "succeeded"
    status, waiting = execute(guard, "disable_managed_device", DISABLE, "d-1")
    assert waiting["status"] == "awaiting_approval"
    assert guard.stop() == 0

    guard.start()  # the pending approval and the run's case state are still there
    status, a = guard.get(f"/v1/approvals/{waiting['ticket']}")
    assert status == 200 and a["status"] == "pending"
    status, granted = guard.post(f"/v1/approvals/{waiting['ticket']}/grant", {"approver": "alice"})
    assert granted["status"] == "granted"
    guard.stop(signal.SIGKILL)

    guard.start()  # the grant survived a kill -9
    status, done = execute(guard, "disable_managed_device", DISABLE, "d-1")
    assert done["status"] == "succeeded" and done["operation_id"]
    guard.stop(signal.SIGKILL)

    guard.start()
    status, again = execute(guard, "disable_managed_device", DISABLE, "d-1")
    assert again["replayed"] and again["status"] == "succeeded" and again["operation_id"] == done["operation_id"]
    assert len([c for c in backend.calls_to("/devices/disable") if c["idempotency_key"] == "d-1"]) == 1
    guard.stop()


def test_a_crash_during_the_backend_call_leaves_an_unknown_write_never_a_second_call(workdir, backend):
    guard = make_guard(workdir, backend, extra_tools=with_slow_tool(backend)).start()
    def call():
        try:
            execute(guard, "slow_write", {"n": 1}, "slow-1")
        except OSError:
            pass  # the sidecar dies mid-call: no answer, as a crash gives

    t = threading.Thread(target=call)
    t.start()
    deadline = time.time() + 10
    while not backend.calls_to("/inventory/sync") and time.time() < deadline:
        time.sleep(0.02)
    assert backend.calls_to("/inventory/sync"), "the backend never saw the call"
    guard.stop(signal.SIGKILL)  # mid-call: the sidecar cannot know whether the write happened
    t.join(timeout=30)

    guard.start()
    assert "in flight" in guard.read_log()
    status, body = guard.get("/v1/uncertain")
    entry = [u for u in body["uncertain"] if u["idempotency_key"] == "slow-1"]
    assert len(entry) == 1 and entry[0]["status"] == "unknown"
    status, again = execute(guard, "slow_write", {"n": 1}, "slow-1")
    assert again["status"] == "unknown" and again["replayed"]
    assert len(backend.calls_to("/inventory/sync")) == 1
    guard.stop()


def run_guard(args, timeout=30):
    return subprocess.run([BIN, "guard", "serve", *args], capture_output=True, text=True, timeout=timeout)


def test_bad_config_stops_start_up_naming_the_key_and_line(workdir, backend):
    g = Guard(workdir, backend, "off")
    with open(g.config) as f:
        text = f.read()
    bad = os.path.join(workdir, "bad.yaml")
    lines = text.split("\n")
    at = next(i for i, l in enumerate(lines) if l.startswith("    tier: privileged_write"))
    lines[at] = "    tier: superuser"
    with open(bad, "w") as f:
        f.write("\n".join(lines))
    r = run_guard(["--config", bad, "--collector", "off"])
    assert r.returncode == 78
    assert f"bad.yaml:{at + 1}: tools[2].tier" in r.stderr, r.stderr

    with open(bad, "w") as f:
        f.write(text.replace("approver_roles: [security_approver]", "approver_role: [security_approver]"))
    r = run_guard(["--config", bad, "--collector", "off"])
    assert r.returncode == 78 and "approvals.approver_role" in r.stderr, r.stderr

    # Beyond loopback, anyone could claim to be an approver: refused without tokens.
    r = run_guard(["--config", g.config, "--listen", "0.0.0.0:4999", "--collector", "off"])
    assert r.returncode == 78 and "listen" in r.stderr and "token" in r.stderr, r.stderr


def test_unix_socket_and_actor_tokens(workdir, backend):
    tokens = {name: f"tok-{name}-0123456789" for name in ("support-agent", "alice")}
    g = Guard(workdir, backend, "off")
    with open(g.config) as f:
        text = f.read()
    for name, token in tokens.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        text = text.replace(f"{{id: {name}, ", f"{{id: {name}, token_sha256: {digest}, ")
    with open(g.config, "w") as f:
        f.write(text)
    sock = os.path.join(workdir, "guard.sock")
    log = open(os.path.join(workdir, "guard-sock.log"), "w")
    proc = subprocess.Popen([BIN, "guard", "serve", "--config", g.config, "--socket", sock, "--collector", "off"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660

        def call(path, body, token=None):
            headers = {"Authorization": "Bearer " + token} if token else {}
            return unix_request(sock, "POST", path, body, headers)

        body = {"run_id": "run-sock", "tool": "lookup_device", "arguments": {"device_id": "D-300"},
                "idempotency_key": "s-1"}
        status, answer = call("/v1/execute", body)
        assert status == 401
        status, answer = call("/v1/execute", body, "not-a-token")
        assert status == 401
        status, answer = call("/v1/execute", body, tokens["support-agent"])
        assert status == 200 and answer["status"] == "succeeded"
        # The token decides who acts: claiming another actor is refused.
        status, answer = call("/v1/execute", {**body, "actor": "alice", "idempotency_key": "s-2"},
                              tokens["support-agent"])
        assert status == 403
        disable = {"run_id": "run-sock", "tool": "disable_managed_device",
                   "arguments": {"device_id": "D-300", "owner": "E-3003", "reason": "stolen"}, "idempotency_key": "s-3"}
        status, waiting = call("/v1/execute", disable, tokens["support-agent"])
        assert waiting["status"] == "awaiting_approval"
        ticket = waiting["ticket"]
        status, body_ = call(f"/v1/approvals/{ticket}/grant", {"approver": "alice"}, tokens["support-agent"])
        assert status == 403
        status, granted = call(f"/v1/approvals/{ticket}/grant", {}, tokens["alice"])
        assert status == 200 and granted["approver"] == "alice"
        status, done = call("/v1/execute", disable, tokens["support-agent"])
        assert done["status"] == "succeeded"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()


def test_spans_wait_for_a_collector_that_is_down_and_arrive_when_it_is_up(workdir, backend):
    os.makedirs(os.path.join(workdir, "collector"))
    collector = Daemon(os.path.join(workdir, "collector"))  # ports chosen, not started yet
    guard = make_guard(workdir, backend, collector_url=collector.otlp_url).start()
    status, d = guard.post("/v1/decide", {"run_id": "run-late-collector", "actor": "support-agent",
                                          "tool": "lookup_device", "arguments": {"device_id": "D-300"}})
    assert d["outcome"] == "allowed"
    deadline = time.time() + 15
    while guard.get("/v1/stats")[1]["export_failures"] == 0 and time.time() < deadline:
        time.sleep(0.2)
    status, stats = guard.get("/v1/stats")
    assert stats["spans_queued"] == 1 and stats["export_failures"] >= 1 and stats["spans_exported"] == 0
    collector.start()
    try:
        deadline = time.time() + 20
        while True:
            status, body = collector.get("/api/v1/runs/run-late-collector")
            if status == 200:
                break
            assert time.time() < deadline, "the span never arrived"
            time.sleep(0.2)
        span = body["spans"][0]
        assert span["name"] == "policy.check"
        assert span["attributes"]["policy.outcome"] == "allowed"
        assert span["attributes"]["agent.run.id"] == "run-late-collector"
        status, stats = guard.get("/v1/stats")
        assert stats["spans_exported"] == 1 and stats["spans_queued"] == 0
        assert guard.read_log().count("cannot reach the collector") == 1
    finally:
        guard.stop()
        collector.stop()


def test_every_answered_decision_reaches_the_collector_through_kill_9_and_outages(workdir, backend):
    """A stream of decisions and executions while the sidecar is killed with SIGKILL and the
    collector stopped at random moments: afterwards the collector holds every decision the
    sidecar answered (the outbox commits each span with its state, before the answer)."""
    import random
    rng = random.Random(15)
    os.makedirs(os.path.join(workdir, "collector"))
    collector = Daemon(os.path.join(workdir, "collector")).start()
    guard = make_guard(workdir, backend, collector_url=collector.otlp_url).start()
    answered = {}  # run ID -> span names the collector must hold
    stop = threading.Event()
    lock = threading.Lock()

    def stream():
        i = 0
        while not stop.is_set():
            i += 1
            run = f"run-chaos-{i}"
            try:
                if i % 2:
                    status, body = guard.post("/v1/decide", {
                        "run_id": run, "actor": "support-agent", "tool": "lookup_device",
                        "arguments": {"device_id": f"D-{i}"}})
                    expect = {"policy.check"}
                else:
                    status, body = guard.post("/v1/execute", {
                        "run_id": run, "actor": "support-agent", "tool": "open_ticket",
                        "arguments": {"summary": f"ticket {i}"}, "idempotency_key": f"chaos-{i}"})
                    expect = {"policy.check", "execute_tool open_ticket"}
            except OSError:
                time.sleep(0.05)  # the sidecar is down: this one was never answered
                continue
            if status == 200:
                with lock:
                    answered[run] = expect

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            time.sleep(rng.uniform(0.3, 1.2))
            if rng.random() < 0.5:
                guard.stop(sig=signal.SIGKILL)
                time.sleep(rng.uniform(0, 0.5))
                guard.start()
            else:
                collector.stop()
                time.sleep(rng.uniform(0.2, 1.5))
                collector.start()
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        assert len(answered) > 50
        deadline = time.time() + 60
        missing = dict(answered)
        while missing and time.time() < deadline:
            for run in list(missing)[:200]:
                status, body = collector.get(f"/api/v1/runs/{run}")
                if status == 200 and missing[run] <= {s["name"] for s in body["spans"]}:
                    del missing[run]
            if missing:
                time.sleep(0.5)
        assert not missing, f"{len(missing)} of {len(answered)} answered decisions never reached the collector"
    finally:
        guard.stop()
        collector.stop()
