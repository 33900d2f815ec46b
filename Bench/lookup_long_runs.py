#!/usr/bin/env python3
"""Times GET /api/v1/lookup?key=operation.id for operation IDs of long runs spread over a store.

Usage: lookup_long_runs.py API_URL [--runs 60] [--warmup 300] [--queries 1500]

Picks runs of at least 100 spans at random start times over the whole store (through
/api/v1/runs?until=...), collects their operation IDs, then times lookups of random ones,
server-side (Server-Timing), and prints p50 and p99. Used to compare two binaries on one
store, alternating (Bench/README.md, "fifth session").
"""
import argparse, http.client, json, random, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("api")
ap.add_argument("--runs", type=int, default=60)
ap.add_argument("--warmup", type=int, default=300)
ap.add_argument("--queries", type=int, default=1500)
ap.add_argument("--seed", type=int, default=2)
a = ap.parse_args()
u = urllib.parse.urlparse(a.api)
c = http.client.HTTPConnection(u.hostname, u.port)


def get(path):
    c.request("GET", path)
    r = c.getresponse()
    return r, r.read()


_, body = get("/api/v1/runs?limit=1")
hi = int(json.loads(body)["runs"][0]["startTimeUnixNano"])
lo = 1_764_000_000_000_000_000  # the load generator's first run starts here
rng = random.Random(a.seed)
ops, runs = [], 0
while runs < a.runs:
    _, body = get("/api/v1/runs?limit=100&until=%d" % rng.randint(lo, hi))
    for run in json.loads(body)["runs"]:
        if run["spanCount"] >= 100:
            runs += 1
            _, detail = get("/api/v1/runs/" + urllib.parse.quote(run["runId"]))
            ops += [s["attributes"]["operation.id"] for s in json.loads(detail)["spans"]
                    if "operation.id" in s.get("attributes", {})]
            break
times = []
for i in range(a.warmup + a.queries):
    r, _ = get("/api/v1/lookup?key=operation.id&value=" + urllib.parse.quote(rng.choice(ops)))
    if i >= a.warmup:
        times.append(float(r.getheader("Server-Timing").split("dur=")[1].split(";")[0].split(",")[0]))
times.sort()
print("%d lookups of %d operation IDs from %d long runs: p50 %.2f ms, p99 %.2f ms" % (
    len(times), len(ops), runs, times[len(times) // 2], times[int(len(times) * 0.99)]))
