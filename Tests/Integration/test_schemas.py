"""The schemas say what the daemon accepts and serves. Schemas/config/flightrec.schema.json:
the shipped example and a config that sets every key validate against it and start the real
daemon, and configs the daemon refuses at start-up (exit 78, naming the key) fail the schema
too. Schemas/api/query-api.yaml: every route the query API registers is described."""

import copy
import json
import os
import re
import subprocess
import time
import urllib.request

import jsonschema
import yaml
from referencing import Registry, Resource

from conftest import BIN, ROOT, free_port

SCHEMA = json.load(open(os.path.join(ROOT, "Schemas", "config", "flightrec.schema.json")))
GUARD_SCHEMA = json.load(open(os.path.join(ROOT, "Schemas", "config", "guard.schema.json")))
QUERY_API = yaml.safe_load(open(os.path.join(ROOT, "Schemas", "api", "query-api.yaml")))
DIGEST = "ab" * 32


def every_key(workdir):
    """A config naming every key the daemon reads (JSON, which is YAML too)."""
    return {
        "data_dir": os.path.join(workdir, "data"),
        "listeners": {
            "otlp_grpc": f"127.0.0.1:{free_port()}", "otlp_http": f"127.0.0.1:{free_port()}",
            "api": f"127.0.0.1:{free_port()}", "otlp_http_socket": os.path.join(workdir, "http.sock"),
            "otlp_grpc_socket": os.path.join(workdir, "grpc.sock"), "socket_mode": "0660", "shutdown_grace": 0,
        },
        "storage": {"durability": "fsync", "compression": "lz4", "segment_size": "16MiB", "block_size": "128KiB",
                    "queue_limit": "32MiB"},
        "limits": {"max_request_body": "8MiB", "max_spans_per_request": 5000, "max_attributes_per_span": 64,
                   "max_attribute_value_length": "32KiB", "rate_limit": {"spans_per_second": 1000, "burst": 2000}},
        "runs": {"id_keys": ["agent.run.id", "session.id"]},
        "index": {"external_id_keys": ["operation.id"], "attribute_keys": ["gen_ai.tool.name"]},
        "auth": {"tokens": [
            {"name": "agents", "sha256": DIGEST, "tenant": "acme", "roles": ["ingest"]},
            {"name": "prometheus", "sha256": "cd" * 32, "tenants": ["*"], "roles": ["metrics"]},
        ]},
        "metrics": {"enabled": True, "agent_version_keys": ["gen_ai.agent.version"], "task_type_keys": ["task"],
                    "max_series_per_family": 500, "series_ttl": "30m", "run_settle": "10s",
                    "prices": {"claude-sonnet-4": {"input": 3, "output": 15}}},
        "evidence": {"enabled": True, "checkpoint_interval": "30s"},
        "retention": {"max_age": "200d", "max_bytes": "10GiB", "tenants": {"acme": {"max_age": "400d"}},
                      "floor": "180d", "seal_after": "20m", "check_interval": "1m"},
        "findings": {"loop_repeats": 4, "step_budget": 100},
        "log": {"level": "notice"},
    }


def serve(workdir, config):
    """Starts the daemon on `config`: ("served" once it answered /healthz, or its exit code, or
    "silent" when it neither served nor exited within 30 s; and its stderr)."""
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        json.dump(config, f)
    p = subprocess.Popen([BIN, "serve", "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    api = config.get("listeners", {}).get("api")
    deadline = time.monotonic() + 30
    served = False
    while time.monotonic() < deadline and p.poll() is None:
        try:
            urllib.request.urlopen(f"http://{api}/healthz", timeout=1)
            served = True
            break
        except OSError:
            time.sleep(0.1)
    if p.poll() is None:
        p.terminate()
        p.wait(timeout=30)
        return ("served" if served else "silent"), ""
    return p.returncode, p.stderr.read()


def schema_keys(schema):
    keys = set()

    def walk(node):
        if isinstance(node, dict):
            keys.update(node.get("properties", {}).keys())
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    return keys


def parser_keys(*paths):
    """The keys the Swift parsers switch on (`case "key":`), the argument schemas' JSON type
    names aside."""
    keys = set()
    for path in paths:
        with open(os.path.join(ROOT, path)) as f:
            keys |= set(re.findall(r'case "([a-z_]+)"', f.read()))
    return keys - {"array", "boolean", "integer", "number", "object", "string"}


def test_every_key_the_parsers_read_is_in_the_schemas():
    assert not parser_keys("Sources/FlightRecorderConfig/DaemonConfiguration+YAML.swift") - schema_keys(SCHEMA)
    guard = parser_keys(*[os.path.join("Sources/FlightRecorderGuardPolicy", f)
                          for f in os.listdir(os.path.join(ROOT, "Sources/FlightRecorderGuardPolicy"))
                          if f.startswith("GuardConfiguration")])
    assert "collector_outbox_limit" in guard
    assert not guard - schema_keys(GUARD_SCHEMA)


def test_the_shipped_examples_and_every_key_validate_and_start(workdir):
    with open(os.path.join(ROOT, "Deploy", "flightrec.yaml")) as f:
        jsonschema.validate(yaml.safe_load(f), SCHEMA)
    with open(os.path.join(ROOT, "Deploy", "guard.yaml")) as f:
        guard = yaml.safe_load(f)
    guard["collector_outbox_limit"] = "2GiB"
    registry = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))
    jsonschema.Draft202012Validator(GUARD_SCHEMA, registry=registry).validate(guard)
    config = every_key(workdir)
    jsonschema.validate(config, SCHEMA)
    code, err = serve(workdir, config)
    assert code == "served", (code, err)


def test_what_the_daemon_refuses_the_schema_refuses(workdir):
    base = every_key(workdir)
    cases = [
        (("metrics", "sample_rate"), 1, "metrics.sample_rate"),
        (("metrics", "max_series_per_family"), 0, "metrics.max_series_per_family"),
        (("metrics", "prices"), {"m": {"input": 1}}, "metrics.prices.m"),
        (("evidence", "checkpoint_every"), "1m", "evidence.checkpoint_every"),
        (("retention", "max_age"), "180", "retention.max_age"),
        (("retention", "tenants"), {"acme": {"max_age": 400}}, "retention.tenants.acme.max_age"),
        (("retention", "max_bytes"), "10XB", "retention.max_bytes"),
        (("auth", "tokens"), [{"sha256": DIGEST, "tenant": "acme", "roles": ["root"]}], "auth.tokens[0].roles"),
    ]
    for (section, key), value, named in cases:
        config = copy.deepcopy(base)
        config[section][key] = value
        try:
            jsonschema.validate(config, SCHEMA)
            raise AssertionError(f"the schema accepts {named}: {value!r}")
        except jsonschema.ValidationError:
            pass
        code, err = serve(workdir, config)
        assert code == 78 and named in err, (named, code, err)


def test_every_query_api_route_is_in_the_openapi_description():
    described = set(QUERY_API["paths"])
    routes = set()
    base = os.path.join(ROOT, "Sources", "FlightRecorderCollector")
    for folder, _, files in os.walk(base):
        for name in files:
            if not name.endswith(".swift"):
                continue
            with open(os.path.join(folder, name)) as f:
                text = f.read()
            for path in re.findall(r'router\.(?:get|post|put|delete)\("([^"]+)"', text):
                if path == "/v1/traces":  # the OTLP/HTTP receiver's, on its own listener
                    continue
                path = re.sub(r":(\w+)", r"{\1}", path)
                if "\\(view)" in path:  # one route per run view
                    views = re.search(r'for view in \[([^\]]+)\]', text).group(1)
                    routes |= {path.replace("\\(view)", v.strip().strip('"')) for v in views.split(",")}
                else:
                    routes.add(path)
    assert "/api/v1/stats" in routes and "/metrics" in routes
    missing = {r for r in routes if r not in described and not r.startswith("/ui/")}
    assert not missing, sorted(missing)
