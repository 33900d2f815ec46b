"""An acknowledged span is never lost: SIGKILL mid-stream, restart, compare with a full reindex."""

import os
import shutil
import signal
import subprocess
import threading
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

from conftest import BIN, Daemon


def make_batches(count, per_batch):
    """Pre-built agent spans from the real SDK, grouped into export batches."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "crash-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("crash")
    for run in range(count * per_batch // 10):
        with tracer.start_as_current_span("invoke_agent", attributes={"agent.run.id": f"run-{run}"}):
            for step in range(9):
                with tracer.start_as_current_span(f"step-{step}", attributes={"gen_ai.tool.name": "t", "n": step}):
                    pass
    spans = memory.get_finished_spans()
    return [spans[i:i + per_batch] for i in range(0, len(spans), per_batch)]


def run_summaries(d):
    status, body = d.get("/api/v1/runs?limit=10000")
    assert status == 200
    return sorted(body["runs"], key=lambda r: r["runId"])


def test_sigkill_loses_no_acknowledged_span_and_the_index_matches_a_reindex(workdir):
    d = Daemon(workdir).start()
    batches = make_batches(count=400, per_batch=50)
    acked = []
    stop = threading.Event()

    def sender():
        exporter = OTLPSpanExporter(endpoint=d.otlp_url, timeout=5)
        for batch in batches:
            if stop.is_set():
                return
            try:
                if exporter.export(batch) == SpanExportResult.SUCCESS:
                    acked.extend(batch)
            except Exception:
                return

    threads = [threading.Thread(target=sender) for _ in range(1)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while len(acked) < 3000 and time.time() < deadline:
        time.sleep(0.01)
    d.proc.send_signal(signal.SIGKILL)  # mid-stream: no drain, no fsync beyond what was acknowledged
    d.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 3000, "the sender should have had batches acknowledged before the kill"
    assert len(acked) < sum(len(b) for b in batches), "the kill should land mid-stream"

    d.start()
    stored = set()
    for trace in {format_trace_id(s.context.trace_id) for s in acked}:
        status, body = d.get(f"/api/v1/traces/{trace}")
        assert status == 200, f"trace {trace} of an acknowledged span is missing"
        stored |= {(s["traceId"], s["spanId"]) for s in body["spans"]}
    missing = {(format_trace_id(s.context.trace_id), format_span_id(s.context.span_id)) for s in acked} - stored
    assert not missing, f"{len(missing)} acknowledged spans lost"
    live = run_summaries(d)
    assert d.stop() == 0

    # The index after recovery equals one rebuilt from the segments alone.
    copy = os.path.join(workdir, "copy")
    shutil.copytree(d.data, os.path.join(copy, "data"))
    r = subprocess.run([BIN, "reindex", "--data", os.path.join(copy, "data")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "reindexed" in r.stdout
    d2 = Daemon(copy)
    d2.data = os.path.join(copy, "data")
    with open(d2.config, "w") as f:
        f.write(
            f"data_dir: {d2.data}\nlisteners:\n  otlp_http: 127.0.0.1:{d2.otlp_port}\n  api: 127.0.0.1:{d2.api_port}\n"
            f"  otlp_grpc: 127.0.0.1:{d2.grpc_port}\n"
        )
    d2.start()
    try:
        assert run_summaries(d2) == live
    finally:
        d2.stop()


def test_sigterm_drains_and_exits_cleanly(workdir):
    d = Daemon(workdir).start()
    exporter = OTLPSpanExporter(endpoint=d.otlp_url, timeout=5)
    batch = make_batches(count=1, per_batch=20)[0]
    assert exporter.export(batch) == SpanExportResult.SUCCESS
    assert d.stop(signal.SIGTERM) == 0
    log = d.read_log()
    assert "store closed cleanly" in log
    # Restart after a clean stop reads nothing again: every segment is already indexed.
    d.start()
    assert "index caught up" not in d.read_log().split("starting")[-1]
    assert len(run_summaries(d)) == 2
    d.stop()
