"""A real Prometheus server (Debian's `prometheus` package) scraping the daemon, queried
through its own HTTP API."""

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

from conftest import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, workdir, target_port, token=None, interval="1s"):
        self.dir = os.path.join(workdir, "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.config = os.path.join(self.dir, "prometheus.yml")
        auth = f"    authorization:\n      credentials: {token}\n" if token else ""
        with open(self.config, "w") as f:
            f.write(
                "global:\n"
                f"  scrape_interval: {interval}\n"
                f"  scrape_timeout: {interval}\n"
                "scrape_configs:\n"
                "  - job_name: flightrec\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n" + auth)
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--enable-feature=exemplar-storage"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: " + open(self.log_path).read()[-3000:])
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("prometheus did not become ready: " + open(self.log_path).read()[-3000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        """An instant query: {labels-tuple: value} over the result vector."""
        return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in self.api("query", query=expr)["result"]}

    def target_health(self):
        targets = self.api("targets")["activeTargets"]
        return [(t["health"], t.get("lastError", "")) for t in targets]

    def wait_for(self, expr, expected, timeout=30):
        """Waits until `expr` (a scalar-valued query, summed) equals `expected`; returns it."""
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            value = sum(self.query(expr).values())
            if value == expected:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{expr} = {value}, expected {expected}; targets {self.target_health()}")
