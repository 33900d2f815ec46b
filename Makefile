# FlightRecorder: the two set-up commands are `make serve` and `make test`.
# Both install the system packages they need when missing (Debian/Ubuntu, via apt-get).

SYSTEM_PACKAGES := liblz4-dev libssl-dev libzstd-dev libprotobuf-c-dev libsqlite3-dev protobuf-c-compiler zlib1g-dev pkg-config
# What only the tests need: a real Prometheus server (and promtool) to scrape the daemon,
# Chromium with its WebDriver for the web run view (driven by Selenium from PyPI), and
# python3-venv for the virtualenv the OpenTelemetry Python SDK is installed into.
TEST_PACKAGES := prometheus chromium chromium-driver python3-venv
VENV := .venv
PYTHON ?= python3
FUZZ_TARGETS := FuzzOTLPProtobuf FuzzOTLPJSON FuzzGRPCFraming FuzzWhere FuzzConfig
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

FORMAT_PATHS := Sources Tests Bench Fuzz Package.swift

.PHONY: format format-check serve test deps test-deps prometheus-rules python-deps build build-release check-generated unit-test fuzz-replay integration-test bench generate fuzz fuzz-smoke

## Build (release) and start the daemon on the default data directory
## ($FLIGHTREC_DATA, else ~/.local/share/flightrec). Ctrl-C drains and exits.
serve: deps build-release
	.build/release/flightrec serve $(ARGS)

## Run every test: generated-code check, Swift unit tests, the fuzz corpora replayed, a short
## libFuzzer pass over every decoder, integration tests with the real OpenTelemetry Python SDK.
test: deps test-deps python-deps check-generated format-check unit-test fuzz-replay fuzz-smoke prometheus-rules integration-test

deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test-deps:
	@$(MAKE) --no-print-directory deps SYSTEM_PACKAGES="$(TEST_PACKAGES)"

python-deps: $(VENV)/.installed

$(VENV)/.installed: Tests/Integration/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r Tests/Integration/requirements.txt
	touch $@

build:
	swift build --build-tests

build-release:
	swift build -c release --product flightrec

## Fails on any difference from swift-format's output or lint rule (.swift-format); `make format` fixes.
format-check:
	swift format lint --strict --recursive $(FORMAT_PATHS)

format:
	swift format format --in-place --recursive $(FORMAT_PATHS)

## The shipped Prometheus rules parse, and their alerts fire (and stay quiet) as their unit tests say.
prometheus-rules: test-deps
	promtool check rules Deploy/prometheus/flightrec-rules.yaml
	cd Deploy/prometheus && promtool test rules flightrec-rules.test.yaml

check-generated:
	Schemas/generate.sh --check
	Sources/FlightRecorderCollector/WebUI/embed-assets.py --check

unit-test: build
	swift test --skip-build

## Every committed fuzz input (seeds and past crashes) through its target, in the normal build.
fuzz-replay: build
	@for t in $(FUZZ_TARGETS); do .build/debug/$$t Fuzz/Corpus/$$t || exit 1; done

## A short libFuzzer pass over every target (FUZZ_SECONDS each, default 15) for CI.
fuzz-smoke:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-15} Fuzz/run.sh

## Fuzz every decoder that takes outside bytes (FUZZ_SECONDS each, default 60; or FUZZ_RUNS).
fuzz:
	Fuzz/run.sh $(TARGETS)

integration-test: build python-deps
	FLIGHTREC_BIN=$(CURDIR)/.build/debug/flightrec $(VENV)/bin/python -m pytest -q Tests/Integration

## Regenerate the committed protoc-c code from Schemas/.
generate: deps
	Schemas/generate.sh
	Sources/FlightRecorderCollector/WebUI/embed-assets.py

## The load generator (see Bench/README.md).
bench: deps
	swift build -c release
	.build/release/flightrec-loadgen --daemon .build/release/flightrec $(ARGS)
