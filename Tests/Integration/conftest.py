"""Fixtures that run the real flightrec daemon as a process and export to it with the
real OpenTelemetry Python SDK."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("FLIGHTREC_BIN", os.path.join(ROOT, ".build", "debug", "flightrec"))


_handed_out = set()


def free_port():
    """A loopback port the kernel reports free, never one this test process handed out
    before: the kernel may give a just-closed port again, and one daemon's listeners (or two
    daemons) must not be told to share it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class Daemon:
    """One `flightrec serve` process on free loopback ports and a private data directory."""

    def __init__(self, workdir, extra_config="", socket_path=None, listeners="", tls=None, token=None, storage="",
                 shutdown_grace=0.2, data=None):
        """`listeners` adds lines under `listeners:`; `tls` is (cert, key) paths for every TCP
        listener; `token` is the bearer token `get` and `cli` send."""
        self.workdir = workdir
        self.data = data or os.path.join(workdir, "data")
        self.otlp_port = free_port()
        self.grpc_port = free_port()
        self.api_port = free_port()
        self.tls = tls
        self.token = token
        self.config = os.path.join(workdir, "flightrec.yaml")
        with open(self.config, "w") as f:
            f.write(
                f"data_dir: {self.data}\n"
                f"listeners:\n  otlp_http: 127.0.0.1:{self.otlp_port}\n  api: 127.0.0.1:{self.api_port}\n"
                f"  otlp_grpc: 127.0.0.1:{self.grpc_port}\n"
                + (f"  otlp_http_socket: {socket_path}\n" if socket_path else "")
                + (f"  tls:\n    cert_file: {tls[0]}\n    key_file: {tls[1]}\n" if tls else "")
                + listeners
                + f"  shutdown_grace: {shutdown_grace}\n"
                + "storage:\n"
                + ("" if "segment_size:" in storage else "  segment_size: 1MiB\n")
                + ("" if "block_size:" in storage else "  block_size: 64KiB\n")
                + storage + extra_config
            )
        self.log_path = os.path.join(workdir, "daemon.log")
        self.proc = None

    @property
    def otlp_url(self):
        return f"http://127.0.0.1:{self.otlp_port}/v1/traces"

    @property
    def api_url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.api_port}"

    @property
    def grpc_endpoint(self):
        return f"127.0.0.1:{self.grpc_port}"

    def ssl_context(self):
        if not self.tls:
            return None
        import ssl
        return ssl.create_default_context(cafile=self.tls[0])

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.config], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.read_log()}")
            try:
                urllib.request.urlopen(self.api_url + "/healthz", timeout=1, context=self.ssl_context()).read()
                with socket.create_connection(("127.0.0.1", self.otlp_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not become ready: " + self.read_log())

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        self.log.close()
        return self.proc.returncode

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def get(self, path, token=None):
        """GET from the query API: (status, parsed JSON). Sends `token`, else the daemon's."""
        token = token or self.token
        request = urllib.request.Request(self.api_url + path)
        if token:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.ssl_context()) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def cli(self, *args, token=None):
        env = dict(os.environ)
        env.pop("FLIGHTREC_TOKEN", None)
        if token or self.token:
            env["FLIGHTREC_TOKEN"] = token or self.token
        if self.tls:
            env["FLIGHTREC_CACERT"] = self.tls[0]
        return subprocess.run([BIN, *args, "--api", self.api_url], capture_output=True, text=True, timeout=60, env=env)


def pseudonym(d, value):
    """What the daemon stores for an identity (approval.approver, enduser.id): `flightrec
    pseudonym`, as an auditor holding the key runs it."""
    r = subprocess.run([BIN, "pseudonym", value, "--data", d.data], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="flightrec-it-") as d:
        yield d


@pytest.fixture
def daemon(workdir):
    d = Daemon(workdir).start()
    yield d
    d.stop()
