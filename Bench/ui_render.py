#!/usr/bin/env python3
"""The web run view's figures (issue 16): how long a run of N spans takes to render and to
respond in headless Chromium, on this machine, against the real daemon.

    .venv/bin/python Bench/ui_render.py --daemon .build/release/flightrec --spans 5000 50000 --rounds 5

For each size it stores one run of unique, agent-shaped spans (a root; model calls, policy
checks, tool executions with arguments, memory reads, approvals every 25 steps; every span
with unique IDs) through the real OpenTelemetry SDK, then, `--rounds` times in a fresh tab:
- render: from navigation start until the page has its header, decision lane and the rows in
  view painted (the app's `flightrec-run-ready` performance mark), with the run's JSON fetched;
- respond: from a click on a write step until its incident card is shown (both API calls);
- the server's share: `Server-Timing` of `GET /api/v1/view/runs/{id}` and its body size.
Medians are printed with the range. The browser, the daemon and this script share the two
cores; the SDK export happens before any timing.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from opentelemetry import trace as api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

MS = 1_000_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(binary, workdir):
    otlp, grpc, port = free_port(), free_port(), free_port()
    config = os.path.join(workdir, "flightrec.yaml")
    with open(config, "w") as f:
        f.write(f"data_dir: {workdir}/data\nlisteners:\n  otlp_http: 127.0.0.1:{otlp}\n  api: 127.0.0.1:{port}\n"
                f"  otlp_grpc: 127.0.0.1:{grpc}\n")
    proc = subprocess.Popen([binary, "serve", "--config", config], stdout=open(os.path.join(workdir, "log"), "w"),
                            stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc, f"http://127.0.0.1:{otlp}/v1/traces", f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    sys.exit("the daemon did not start")


def store_run(otlp_url, run_id, spans):
    """One run of `spans` spans; returns the span ID of a write execution in its middle."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent", "service.version": "4.0.0"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_url, timeout=30),
                                                   max_queue_size=spans + 10, max_export_batch_size=512))
    t = provider.get_tracer("agent.runtime")
    t0 = time.time_ns() - (spans * 3 + 60_000) * MS
    root = t.start_span("invoke_agent support-agent", start_time=t0,
                        attributes={"agent.run.id": run_id, "gen_ai.operation.name": "invoke_agent"})
    ctx = api.set_span_in_context(root)
    clock = t0 + MS
    made = 1
    step = 0
    target = None
    last_check = None
    while made < spans:
        step += 1
        kind = step % 4
        if kind == 0:
            s = t.start_span("chat gpt-4o", context=ctx, start_time=clock, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.prompt.version": "v9",
                "gen_ai.usage.input_tokens": 900 + step % 300, "gen_ai.usage.output_tokens": 40 + step % 90})
            s.end(end_time=clock + 2 * MS)
        elif kind == 1:
            s = t.start_span("memory recall", context=ctx, start_time=clock,
                             attributes={"memory.source": "case-notes", "memory.age_seconds": 3600 + step})
            s.end(end_time=clock + MS)
        elif kind == 2:
            outcome = "approval_required" if step % 25 == 2 else "allowed"
            last_check = t.start_span("policy.check", context=ctx, start_time=clock, attributes={
                "policy.outcome": outcome, "policy.rule": f"rule-{step % 7}", "gen_ai.tool.name": "disable_device",
                "idempotency.key": f"{run_id}-k{step}", "gen_ai.tool.call.arguments": f'{{"device": "D-{step}"}}'})
            last_check.end(end_time=clock + MS // 2)
            if outcome == "approval_required" and made + 1 < spans:
                g = t.start_span("approval.granted", context=ctx, start_time=clock + MS, links=[Link(last_check.get_span_context())],
                                 attributes={"approval.approver": "alice@corp.example", "approval.decision": "granted"})
                g.end(end_time=clock + MS + MS // 2)
                made += 1
        else:
            s = t.start_span("execute_tool disable_device", context=ctx, start_time=clock, kind=api.SpanKind.CLIENT,
                             attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "disable_device",
                                         "tool.risk_tier": "privileged_write", "idempotency.key": f"{run_id}-k{step - 1}",
                                         "operation.id": f"op-{run_id}-{step}",
                                         "gen_ai.tool.call.arguments": f'{{"device": "D-{step - 1}"}}'})
            if step % 40 == 3:
                s.set_status(Status(StatusCode.ERROR, "backend timeout after 5000ms"))
            s.end(end_time=clock + 2 * MS)
            if target is None and made >= spans // 2:
                target = format(s.get_span_context().span_id, "016x")
        made += 1
        clock += 3 * MS
    root.end(end_time=clock + MS)
    provider.shutdown()
    return target


def wait_indexed(api_url, run_id, spans):
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{api_url}/api/v1/runs/{run_id}", timeout=60) as r:
                if json.loads(r.read())["run"]["spanCount"] >= spans:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"run {run_id} never reached {spans} spans")


def browser():
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800", "--disable-gpu"]:
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    b = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")), options=options)
    b.set_window_size(1280, 800)
    return b


RESPOND = """
const [spanId, done] = arguments;
const t0 = performance.now();
performance.clearMarks("flightrec-card-ready");
const row = document.querySelector(`.row[data-span='${spanId}']`);
row.click();
const poll = () => {
  const m = performance.getEntriesByName("flightrec-card-ready");
  if (m.length) done(m[0].startTime - t0); else setTimeout(poll, 2);
};
poll();
"""


def measure(b, api_url, run_id, target, rounds):
    render, respond, server, size = [], [], [], 0
    for _ in range(rounds):
        b.get("about:blank")
        b.get(f"{api_url}/ui/runs/{run_id}")
        WebDriverWait(b, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "body[data-ready=run]"))
        render.append(b.execute_script("return performance.getEntriesByName('flightrec-run-ready')[0].startTime"))
        # Scroll the target into view with the keyboard model the page uses, then click it.
        b.execute_script("window.flightrecView.select(window.flightrecView.byId.get(arguments[0]).row, false)", target)
        time.sleep(0.4)  # the deferred open of select(.., false) fires after 250 ms; let it finish
        respond.append(b.execute_async_script(RESPOND, target))
        with urllib.request.urlopen(f"{api_url}/api/v1/view/runs/{run_id}") as r:
            body = r.read()
            size = len(body)
            timing = r.headers.get("Server-Timing", "")
            server.append(float(timing.split("dur=")[1].split(",")[0]) if "dur=" in timing else float("nan"))
    return render, respond, server, size


def summary(xs):
    return f"median {statistics.median(xs):.0f} ms (range {min(xs):.0f}-{max(xs):.0f})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--daemon", required=True)
    p.add_argument("--spans", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="flightrec-ui-bench-")
    proc, otlp_url, api_url = start_daemon(a.daemon, workdir)
    b = None
    try:
        runs = []
        for n in a.spans:
            run_id = f"ui-bench-{n}-{time.time_ns()}"
            t = time.time()
            target = store_run(otlp_url, run_id, n)
            wait_indexed(api_url, run_id, n)
            print(f"stored run {run_id}: {n} spans in {time.time() - t:.1f} s (SDK export, not timed below)")
            runs.append((n, run_id, target))
        b = browser()
        print(f"chromium {b.capabilities.get('browserVersion')}, window 1280x800, {a.rounds} rounds each")
        for n, run_id, target in runs:
            render, respond, server, size = measure(b, api_url, run_id, target, a.rounds)
            print(f"{n} spans: render {summary(render)}; respond (click a write, card shown) {summary(respond)}; "
                  f"server {summary(server)} for {size / 1e6:.1f} MB of JSON")
    finally:
        if b:
            b.quit()
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
