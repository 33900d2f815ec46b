#!/usr/bin/env python3
"""Issue 13's figures: the time to rebuild the index of a store of N unique spans
(`flightrec reindex`, the daemon stopped), and ingest throughput while sealed indexes are
rebuilt online, as a ratio against the same daemon with none, in alternating rounds.

    Bench/fault_bench.py --bin .build/release/flightrec --loadgen .build/release/flightrec-loadgen \\
        --spans 5000000 --dir /tmp/fault-bench [--reuse] [--rounds 3] [--duration 15]

The store is loaded by `flightrec-loadgen --query-bench --load-spans N` (unique agent spans,
fsync, default redaction). Online, a helper damages one sealed segment index after another
(every page but the first overwritten, as a failing disk would) and asks for a trace of that
segment: the daemon answers 503, moves the index aside and rebuilds it from the segment while
the load generator (on the same two cores) keeps sending. Rebuild rounds and quiet rounds
alternate; medians are reported. The helper's own cost (a query every 50 ms) is in the
rebuilding rounds."""

import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ports(config):
    text = open(config).read()
    http = re.search(r"otlp_http:\s*127\.0\.0\.1:(\d+)", text).group(1)
    api = re.search(r"api:\s*127\.0\.0\.1:(\d+)", text).group(1)
    return int(http), int(api)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_ready(api):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if get(f"http://127.0.0.1:{api}/healthz") == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("daemon did not start")


def sealed_segments(data):
    seg = os.path.join(data, "segments")
    ids = sorted(int(n[8:20]) for n in os.listdir(seg) if n.endswith(".frs"))
    return seg, ids[:-2]


def trace_of(index):
    db = sqlite3.connect(f"file:{index}?immutable=1", uri=True)
    row = db.execute("SELECT hex(trace_id) FROM traces LIMIT 1").fetchone()
    db.close()
    return row[0].lower()


class Rebuilder(threading.Thread):
    """Damages sealed indexes one after another and waits for each online rebuild."""

    def __init__(self, data, api, stop, single, first=0):
        super().__init__(daemon=True)
        self.seg, self.ids = sealed_segments(data)
        self.api, self.stop, self.times, self.single, self.first = api, stop, [], single, first

    def run(self):
        i = self.first
        time.sleep(2)  # past the load generator's warm-up
        while not self.stop.is_set() and not (self.single and self.times):
            sid = self.ids[i % len(self.ids)]
            i += 1
            index = os.path.join(self.seg, f"segment-{sid:012d}.idx")
            trace = trace_of(index)
            size = os.path.getsize(index)
            with open(index, "r+b") as f:
                f.seek(4096)
                f.write(b"\x41" * (size - 4096))
            started = time.time()
            url = f"http://127.0.0.1:{self.api}/api/v1/traces/{trace}"
            while not self.stop.is_set():
                if get(url) == 200:
                    self.times.append(time.time() - started)
                    break
                time.sleep(0.05)


def load(args, http, label):
    r = sh([args.loadgen, "--url", f"http://127.0.0.1:{http}/v1/traces", "--duration", str(args.duration),
            "--warmup", "2"], timeout=args.duration + 120)
    m = re.search(r"throughput: (\d+) spans/s", r.stdout)
    if not m:
        raise SystemExit(f"loadgen failed: {r.stdout} {r.stderr}")
    rate = int(m.group(1))
    print(f"  {label}: {rate:,} spans/s", flush=True)
    return rate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--loadgen", required=True)
    p.add_argument("--spans", type=int, default=5_000_000)
    p.add_argument("--dir", required=True)
    p.add_argument("--reuse", action="store_true", help="the store in --dir was loaded by an earlier run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--reindex-runs", type=int, default=3)
    p.add_argument("--single", action="store_true",
                   help="one online rebuild per rebuilding round (default: one after another all round)")
    args = p.parse_args()
    config = os.path.join(args.dir, "flightrec.yaml")
    if not args.reuse:
        print(f"loading {args.spans:,} unique spans ...", flush=True)
        r = sh([args.loadgen, "--daemon", args.bin, "--query-bench", "--load-spans", str(args.spans),
                "--queries", "10", "--bench-directory", args.dir])
        if r.returncode != 0:
            raise SystemExit(r.stdout + r.stderr)
    data = re.search(r"data_dir:\s*(\S+)", open(config).read()).group(1)

    seconds = []
    for _ in range(args.reindex_runs):
        if not seconds:
            print("rebuild (flightrec reindex, daemon stopped):", flush=True)
        started = time.time()
        r = sh([args.bin, "reindex", "--config", config])
        seconds.append(time.time() - started)
        print(f"  {seconds[-1]:.1f} s: {r.stdout.strip()}", flush=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
    if seconds:
        print(f"rebuild of the index for {args.spans:,} spans: median {statistics.median(seconds):.1f} s", flush=True)

    http, api = ports(config)
    log = open(os.path.join(args.dir, "daemon.log"), "a")
    daemon = subprocess.Popen([args.bin, "serve", "--config", config], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(api)
        quiet, busy, rebuilds = [], [], []
        for n in range(args.rounds):
            quiet.append(load(args, http, f"round {n + 1}, quiet"))
            stop = threading.Event()
            helper = Rebuilder(data, api, stop, args.single, first=n)
            helper.start()
            label = "one sealed index rebuilt online" if args.single else "rebuilding sealed indexes online"
            busy.append(load(args, http, f"round {n + 1}, {label}"))
            stop.set()
            helper.join()
            rebuilds += helper.times
            print(f"    {len(helper.times)} online rebuilds in the round", flush=True)
        q, b = statistics.median(quiet), statistics.median(busy)
        print(f"ingest, quiet: median {q:,.0f} spans/s; while rebuilding: median {b:,.0f} spans/s; "
              f"ratio {100 * b / q:.1f}%", flush=True)
        if rebuilds:
            print(f"online rebuild of one sealed index (damage to 200 OK): median {statistics.median(rebuilds):.2f} s "
                  f"over {len(rebuilds)}", flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()


if __name__ == "__main__":
    main()
