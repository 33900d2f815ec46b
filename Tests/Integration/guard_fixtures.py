"""The policy/executor sidecar as a process, and a real HTTP tool backend for it: a small
server standing in for the directory, the device-management system and the ticketing system."""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import BIN, free_port

# The directory: two John Smiths, so a lookup by that name is ambiguous.
DIRECTORY = {
    "john smith": [
        {"id": "E-1001", "name": "John Smith", "department": "Sales"},
        {"id": "E-2002", "name": "John Smith", "department": "Engineering"},
    ],
    "dana lee": [{"id": "E-3003", "name": "Dana Lee", "department": "Finance"}],
}
DEVICES = {
    "D-100": {"owner_id": "E-1001", "managed": True},
    "D-200": {"owner_id": "E-2002", "managed": True},
    "D-300": {"owner_id": "E-3003", "managed": True},
}
# Returned by the device lookup: the sidecar must redact both before the agent sees them.
RECOVERY_PASSWORD = "correct-horse-battery-staple-42"
MDM_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


class ToolBackend:
    """A threaded HTTP server recording every call it receives (path, idempotency key,
    traceparent), so tests assert what the real backend saw."""

    def __init__(self, hang_seconds=5.0):
        self.calls = []
        self.lock = threading.Lock()
        self.hang_seconds = hang_seconds
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with backend.lock:
                    backend.calls.append({
                        "path": self.path, "body": body, "idempotency_key": self.headers.get("Idempotency-Key"),
                        "traceparent": self.headers.get("traceparent"),
                    })
                    n = len(backend.calls)
                status, answer = backend.answer(self.path, body, n)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sidecar gave up waiting (the hanging endpoint)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path, body, n):
        if path == "/directory/lookup":
            return 200, {"matches": DIRECTORY.get(str(body.get("name", "")).strip().lower(), [])}
        if path == "/devices/lookup":
            device = DEVICES.get(body.get("device_id"))
            if device is None:
                return 404, {"error": "no such device"}
            return 200, {"device_id": body["device_id"], **device, "recovery": {"admin_password": RECOVERY_PASSWORD},
                         "mdm_api_key": MDM_KEY}
        if path == "/devices/disable":
            return 200, {"operation_id": f"op-disable-{n:04d}", "status": "disabled", "device_id": body.get("device_id")}
        if path == "/tickets/open":
            return 201, {"ticket": {"id": f"INC-{n:05d}"}, "status": "open"}
        if path == "/inventory/sync":
            time.sleep(self.hang_seconds)  # hangs past the tool's timeout
            return 200, {"operation_id": f"op-sync-{n:04d}"}
        return 404, {"error": "unknown endpoint"}

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def calls_to(self, path):
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def guard_config(backend, data_dir, extra=""):
    """The stolen-laptop policy: reads for support agents, privileged writes need approval on
    corporate-managed devices, never on the requester's own account."""
    return f"""
data_dir: {data_dir}
actors:
  - {{id: support-agent, tenant: acme, roles: [support_agent]}}
  - {{id: intern-bot, tenant: acme, roles: [viewer]}}
  - {{id: alice, tenant: acme, roles: [security_approver]}}
  - {{id: mallory, tenant: globex, roles: [security_approver]}}
tools:
  - name: lookup_employee
    tier: read
    backend: {{url: "{backend.url('/directory/lookup')}"}}
    timeout: 2s
    resolves: {{argument: name, matches: matches}}
    arguments:
      type: object
      required: [name]
      properties:
        name: {{type: string, minLength: 1, maxLength: 200}}
  - name: lookup_device
    tier: read
    backend: {{url: "{backend.url('/devices/lookup')}"}}
    timeout: 2s
    case_state: {{device.corporate_managed: managed, device.owner_id: owner_id}}
    arguments:
      type: object
      required: [device_id]
      properties:
        device_id: {{type: string, pattern: "^D-[0-9]+$"}}
  - name: disable_managed_device
    tier: privileged_write
    backend: {{url: "{backend.url('/devices/disable')}", method: POST, operation_id: operation_id}}
    timeout: 5s
    reversible: true
    compensating_tool: enable_managed_device
    arguments:
      type: object
      required: [device_id, owner, reason]
      properties:
        device_id: {{type: string, pattern: "^D-[0-9]+$"}}
        owner: {{type: string}}
        reason: {{type: string, maxLength: 500}}
  - name: enable_managed_device
    tier: privileged_write
    backend: {{url: "{backend.url('/devices/enable')}"}}
    arguments:
      type: object
      required: [device_id]
      properties:
        device_id: {{type: string}}
  - name: open_ticket
    tier: low_write
    backend: {{url: "{backend.url('/tickets/open')}", operation_id: ticket.id}}
    arguments:
      type: object
      required: [summary]
      properties:
        summary: {{type: string, maxLength: 2000}}
  - name: sync_inventory
    tier: low_write
    backend: {{url: "{backend.url('/inventory/sync')}"}}
    timeout: 500ms
    arguments:
      type: object
      properties:
        device_id: {{type: string}}
rules:
  - id: support-reads
    effect: allow
    roles: [support_agent]
    tiers: [read]
  - id: support-low-writes
    effect: allow
    roles: [support_agent]
    tiers: [low_write]
  - id: privileged-needs-approval
    effect: require_approval
    tenants: [acme]
    roles: [support_agent]
    tools: [disable_managed_device]
    when:
      - {{case: device.corporate_managed, equals: "true"}}
      - {{argument: owner, not_actor: true}}
approvals:
  approver_roles: [security_approver]
budgets:
  max_steps: 40
  max_duplicate_calls: 0
redaction:
  rules:
    - name: credentials
      keys: ["*password*", "*.secret"]
      action: mask
""" + extra


class Guard:
    """One `flightrec guard serve` process on a free loopback port."""

    def __init__(self, workdir, backend, collector_url, extra=""):
        self.workdir = workdir
        self.port = free_port()
        self.data = os.path.join(workdir, "guard-data")
        self.config = os.path.join(workdir, "guard.yaml")
        with open(self.config, "w") as f:
            f.write(guard_config(backend, self.data, extra))
        self.collector_url = collector_url
        self.log_path = os.path.join(workdir, "guard.log")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [BIN, "guard", "serve", "--config", self.config, "--listen", f"127.0.0.1:{self.port}",
             "--collector", self.collector_url], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"guard exited with {self.proc.returncode}: {self.read_log()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("guard did not become ready: " + self.read_log())

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.log.close()
        return self.proc.returncode

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON answer)."""
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            r.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            r.add_header(k, v)
        try:
            with urllib.request.urlopen(r, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def get(self, path):
        return self.request("GET", path)


def unix_request(path, method, url_path, body=None, headers=None):
    """An HTTP request over a Unix socket: (status, parsed JSON)."""
    import http.client
    import socket as sock

    class Connection(http.client.HTTPConnection):
        def connect(self):
            self.sock = sock.socket(sock.AF_UNIX, sock.SOCK_STREAM)
            self.sock.connect(path)

    c = Connection("localhost", timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, url_path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    status, payload = r.status, json.loads(r.read() or b"{}")
    c.close()
    return status, payload
