"""What a new user meets first: a port already taken, a `+` in a query string, a collector
URL without its path (issue 11, defects 2 to 4)."""

import socket
import subprocess
import time
import urllib.parse

import pytest

from agents import Agent, run_stolen_laptop
from conftest import BIN, Daemon, free_port
from guard_fixtures import Guard, ToolBackend

LISTEN_EXIT = 71


def held_port():
    """A loopback port held by a listening socket for the caller to release."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


@pytest.mark.parametrize("key", ["otlp_grpc", "otlp_http", "api"])
def test_a_taken_address_names_the_listener_and_exits_71(workdir, key):
    holder, port = held_port()
    try:
        d = Daemon(workdir)
        with open(d.config) as f:
            text = f.read()
        current = {"otlp_grpc": d.grpc_port, "otlp_http": d.otlp_port, "api": d.api_port}[key]
        with open(d.config, "w") as f:
            f.write(text.replace(f"{key}: 127.0.0.1:{current}", f"{key}: 127.0.0.1:{port}"))
        r = subprocess.run([BIN, "serve", "--config", d.config], capture_output=True, text=True, timeout=60)
        assert r.returncode == LISTEN_EXIT, r.stderr
        assert f"listeners.{key}: cannot listen on 127.0.0.1:{port}: address already in use" in r.stderr
        assert "serverIsStopped" not in r.stderr
    finally:
        holder.close()


def test_a_taken_sidecar_address_names_the_flag_and_exits_71(workdir):
    holder, port = held_port()
    try:
        r = subprocess.run(
            [BIN, "guard", "serve", "--listen", f"127.0.0.1:{port}", "--collector", "off", "--data", workdir + "/g"],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == LISTEN_EXIT, r.stderr
        assert f"listen: cannot listen on 127.0.0.1:{port}: address already in use" in r.stderr
    finally:
        holder.close()


def test_plus_in_a_query_string_is_a_space(daemon):
    agent = Agent(daemon.otlp_url)
    root, _ = run_stolen_laptop(agent, "run-plus")
    root.end()
    agent.shutdown()
    # Python's urlencode writes spaces as +, as HTML forms do.
    query = urllib.parse.urlencode({"where": 'policy.outcome = "approval_required"'})
    assert "+" in query
    status, body = daemon.get("/api/v1/runs?" + query)
    assert status == 200, body
    assert [r["runId"] for r in body["runs"]] == ["run-plus"]
    # The same with %20 gives the same answer; a literal plus is %2B.
    status, same = daemon.get("/api/v1/runs?where=" + urllib.parse.quote('policy.outcome = "approval_required"'))
    assert status == 200 and same == body
    status, body = daemon.get("/api/v1/lookup?" + urllib.parse.urlencode({"key": "operation.id", "value": "op-run-plus"}))
    assert status == 200 and body["matches"], body


def test_sidecar_appends_v1_traces_to_a_base_collector_url(workdir):
    collector = Daemon(workdir).start()
    backend = ToolBackend()
    base = f"http://127.0.0.1:{collector.otlp_port}"
    guard = Guard(workdir, backend, base).start()
    try:
        status, body = guard.post(
            "/v1/decide",
            {"run_id": "run-base-url", "actor": "support-agent", "tool": "lookup_employee", "arguments": {"name": "Ann"}})
        assert status == 200, body
        deadline = time.time() + 20
        while time.time() < deadline:
            status, run = collector.get("/api/v1/runs/run-base-url")
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, "the decision span never reached the collector"
        # A wrong path would be refused with a 404 and logged as a refusal; match the log line,
        # not the digits, which a random port number can contain.
        log = guard.read_log()
        assert "collector refused sidecar spans" not in log, log
        assert "status=404" not in log, log
    finally:
        guard.stop()
        collector.stop()
        backend.close()


@pytest.mark.parametrize("url,reason", [
    ("ftp://127.0.0.1:4318", "http:// or https://"),
    ("http://127.0.0.1:4318/v1/logs", "another signal's endpoint"),
    ("http://127.0.0.1:4318/v1/traces?x=1", "query or fragment"),
    ("http:///v1/traces", "no host"),
])
def test_sidecar_refuses_a_url_that_cannot_be_a_traces_endpoint(workdir, url, reason):
    r = subprocess.run(
        [BIN, "guard", "serve", "--listen", f"127.0.0.1:{free_port()}", "--collector", url, "--data", workdir + "/g"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 78, r.stderr
    assert "--collector" in r.stderr and reason in r.stderr, r.stderr
