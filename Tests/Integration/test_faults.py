"""Faults the store survives and reports, with the real daemon and the real OpenTelemetry SDK:
a disk that fills up (a small tmpfs, mounted by the test), damaged bytes in a segment, a
damaged index, and requests that arrive while the daemon shuts down."""

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from conftest import BIN, Daemon


def agent_batches(runs, prefix, payload=0):
    """Agent runs from the real SDK (10 spans each), one export batch per run. `payload` adds
    that many bytes of incompressible text to each span, so a small disk fills quickly."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "fault-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("faults")
    for run in range(runs):
        with tracer.start_as_current_span("invoke_agent", attributes={"agent.run.id": f"{prefix}-{run}"}):
            for step in range(9):
                attrs = {"gen_ai.tool.name": "lookup", "n": step}
                if payload:
                    attrs["tool.result"] = os.urandom(payload // 2).hex()
                with tracer.start_as_current_span(f"step-{step}", attributes=attrs):
                    pass
    spans = memory.get_finished_spans()
    return [spans[i:i + 10] for i in range(0, len(spans), 10)]


def stored_then_stopped(workdir, storage, runs, prefix, payload):
    """A daemon that stored `runs` agent runs (every export acknowledged), then stopped cleanly;
    returns it and the acknowledged spans."""
    d = Daemon(workdir, storage=storage).start()
    exporter = OTLPSpanExporter(endpoint=d.otlp_url, timeout=5)
    acked = []
    for batch in agent_batches(runs, prefix, payload=payload):
        assert exporter.export(batch) == SpanExportResult.SUCCESS
        acked.extend(batch)
    assert d.stop() == 0
    return d, acked


def span_keys(spans):
    return {(format_trace_id(s.context.trace_id), format_span_id(s.context.span_id)) for s in spans}


def never_unknown(d, acked):
    """While the disk is full each trace answers its spans, or a 503 naming what is not indexed
    yet; never a 404."""
    want = span_keys(acked)
    for trace in {format_trace_id(s.context.trace_id) for s in acked}:
        status, body = d.get(f"/api/v1/traces/{trace}")
        if status == 503:
            assert "not indexed yet" in body["error"], body
        else:
            assert status == 200, (trace, status, body)
            got = {(s["traceId"], s["spanId"]) for s in body["spans"]}
            assert {k for k in want if k[0] == trace} <= got


def stored_spans(d, traces, deadline_s=60):
    """Every stored span of `traces`, asking again while the daemon answers 503 (index behind)."""
    stored = set()
    for trace in traces:
        deadline = time.time() + deadline_s
        while True:
            status, body = d.get(f"/api/v1/traces/{trace}")
            if status != 503 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert status == 200, f"trace {trace} of an acknowledged span: {status} {body}"
        stored |= {(s["traceId"], s["spanId"]) for s in body["spans"]}
    return stored


@pytest.fixture
def small_disk(workdir):
    """A 12 MiB tmpfs: a real ENOSPC for the daemon's segments and indexes."""
    mount = os.path.join(workdir, "disk")
    os.makedirs(mount)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", mount], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root (CI runs as root): {r.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount])


def test_a_full_disk_refuses_with_503_and_hides_no_acknowledged_span(workdir, small_disk):
    # A filler takes part of the disk; removing it later gives the store room again.
    filler = os.path.join(small_disk, "filler")
    with open(filler, "wb") as f:
        f.write(os.urandom(3 << 20))
    d = Daemon(workdir, data=os.path.join(small_disk, "data"), storage="  segment_size: 256KiB\n").start()
    try:
        exporter = OTLPSpanExporter(endpoint=d.otlp_url, timeout=3)
        acked, refused = [], 0
        for batch in agent_batches(600, "full", payload=3000):
            # The SDK retries a 503 on its own until its timeout; the export then fails.
            if exporter.export(batch) == SpanExportResult.SUCCESS:
                acked.extend(batch)
            else:
                refused += 1
                if refused >= 3:
                    break
        assert refused >= 3, "the disk should have filled up"
        assert len(acked) > 100
        never_unknown(d, acked)
        traces = {format_trace_id(s.context.trace_id) for s in acked}
        # Refusals are logged once per reason per interval, not once per request.
        assert d.read_log().count("storage write failed") < 20, d.read_log()[-3000:]
        # A restart on the still-full disk serves, with everything acknowledged.
        assert d.stop() == 0
        d.start()
        never_unknown(d, acked)
        # Space comes back: ingest resumes, and old and new spans are all readable.
        os.unlink(filler)
        more = agent_batches(5, "after")
        for batch in more:
            assert exporter.export(batch) == SpanExportResult.SUCCESS
        assert not span_keys(acked + [s for b in more for s in b]) - stored_spans(
            d, traces | {format_trace_id(s.context.trace_id) for b in more for s in b})
        assert not [n for n in os.listdir(os.path.join(small_disk, "data", "segments"))
                    if n.endswith(".frs") and os.path.getsize(os.path.join(small_disk, "data", "segments", n)) < 16]
    finally:
        d.stop()


def test_requests_during_shutdown_get_503_with_retry_after(workdir):
    d = Daemon(workdir, shutdown_grace=3).start()
    exporter = OTLPSpanExporter(endpoint=d.otlp_url, timeout=5)
    batch = agent_batches(1, "before-stop")[0]
    assert exporter.export(batch) == SpanExportResult.SUCCESS
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # The query API and the OTLP receiver both answer, 503 with Retry-After, not a closed socket.
    try:
        urllib.request.urlopen(d.api_url + "/api/v1/runs", timeout=5)
        raise AssertionError("expected a 503 while shutting down")
    except urllib.error.HTTPError as e:
        assert e.code == 503
        assert e.headers["Retry-After"]
    request = urllib.request.Request(
        d.otlp_url, data=b"", method="POST", headers={"Content-Type": "application/x-protobuf"})
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("expected a 503 while shutting down")
    except urllib.error.HTTPError as e:
        assert e.code == 503
        assert e.headers["Retry-After"]
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    status, body = d.get("/api/v1/runs/before-stop-0")
    assert status == 200 and body["run"]["spanCount"] == 10
    d.stop()


def test_a_flipped_byte_is_reported_and_the_run_answers_its_damage(workdir):
    d, _ = stored_then_stopped(workdir, "  segment_size: 64KiB\n  block_size: 4KiB\n", 60, "dmg", payload=400)
    segments = os.path.join(d.data, "segments")
    first = sorted(n for n in os.listdir(segments) if n.endswith(".frs"))[0]
    with open(os.path.join(segments, first), "r+b") as f:
        f.seek(16 + 100)  # inside the first block
        b = f.read(1)
        f.seek(16 + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    d.start()
    try:
        status, body = d.get("/api/v1/runs/dmg-0")
        assert status == 200, body
        assert body["run"].get("damaged") is True
        assert any("segment 1" in w for w in body["warnings"]), body["warnings"]
        status, runs = d.get("/api/v1/runs?limit=1000")
        assert status == 200
        assert [r["runId"] for r in runs["runs"] if r.get("damaged")] == ["dmg-0"]
        status, stats = d.get("/api/v1/storage/stats")
        assert status == 200 and len(stats["damagedRegions"]) == 1, stats
        assert stats["damagedRegions"][0]["segment"] == 1
        # Reported once in the log, however often it is read.
        for _ in range(3):
            d.get("/api/v1/runs/dmg-0")
        assert d.read_log().count("damaged segment region") == 1
        # The intact runs read whole.
        for n in range(1, 60):
            status, body = d.get(f"/api/v1/runs/dmg-{n}")
            assert status == 200 and len(body["spans"]) == 10 and not body["warnings"], n
        # A running daemon holds the directory: the offline check says so.
        r = subprocess.run([BIN, "check", "--data", d.data], capture_output=True, text=True, timeout=60)
        assert r.returncode == 75, r.stderr
    finally:
        d.stop()
    r = subprocess.run([BIN, "check", "--data", d.data], capture_output=True, text=True, timeout=60)
    assert r.returncode == 65, (r.stdout, r.stderr)
    assert f"segments/{first} at byte 16" in r.stdout, r.stdout


def test_a_damaged_index_is_moved_aside_and_rebuilt(workdir):
    d, _ = stored_then_stopped(workdir, "  segment_size: 64KiB\n", 60, "idx", payload=400)
    segments = os.path.join(d.data, "segments")
    indexes = sorted(n for n in os.listdir(segments) if n.endswith(".idx"))
    assert len(indexes) >= 3
    with open(os.path.join(segments, indexes[0]), "r+b") as f:
        f.write(b"\x41" * 100)  # the header
    with open(os.path.join(segments, indexes[1]), "r+b") as f:
        f.seek(4096)
        f.write(b"\x41" * 8192)  # pages
    d.start()
    try:
        # The API is up at once; a sealed index is rebuilt meanwhile (503 + Retry-After).
        for n in range(60):
            deadline = time.time() + 60
            while True:
                status, body = d.get(f"/api/v1/runs/idx-{n}")
                if status != 503 or time.time() > deadline:
                    break
                assert "rebuilt" in body["error"], body
                time.sleep(0.1)
            assert status == 200 and len(body["spans"]) == 10, (n, status, body)
        aside = [n for n in os.listdir(segments) if ".idx.damaged-" in n]
        assert {n.split(".")[0] for n in aside} == {indexes[0].split(".")[0], indexes[1].split(".")[0]}
        assert "moved aside" in d.read_log() and "rebuilt segment index" in d.read_log()
    finally:
        d.stop()


def test_sigkill_during_an_index_rebuild_loses_nothing(workdir):
    d, acked = stored_then_stopped(workdir, "  segment_size: 64KiB\n  block_size: 4KiB\n", 300, "kill", payload=200)
    segments = os.path.join(d.data, "segments")
    # Every index lost: start-up rebuilds them all from the segments; kill it part way, again
    # and again, at different points.
    for name in os.listdir(segments):
        if ".idx" in name or name.endswith(".attrs") or name.endswith(".attrfilter"):
            os.unlink(os.path.join(segments, name))
    killed_mid_rebuild = 0
    for delay in (0.05, 0.15, 0.3, 0.5, 0.8):
        log_before = len(d.read_log())
        with open(d.log_path, "a") as log:
            proc = subprocess.Popen([BIN, "serve", "--config", d.config], stdout=log, stderr=subprocess.STDOUT)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if "index caught up" not in d.read_log()[log_before:]:
            killed_mid_rebuild += 1
    assert killed_mid_rebuild >= 1, "no kill landed during the rebuild"
    d.start()
    try:
        traces = {format_trace_id(s.context.trace_id) for s in acked}
        assert not span_keys(acked) - stored_spans(d, traces)
        status, body = d.get("/api/v1/runs?limit=1000")
        assert status == 200 and len(body["runs"]) == 300
        assert all(r["spanCount"] == 10 for r in body["runs"])
    finally:
        d.stop()
